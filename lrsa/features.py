r"""Features of a layer for the solver: lowering, hooks and sampled positions.

Conventions (one place for all of lrsa)
---------------------------------------
* A layer's lowered weight is ``W = weight.reshape(n, -1)``, n x d with d = c k_h k_w in
  PyTorch's channel-major order: column ``ch * k_h * k_w + i * k_w + j`` holds input channel
  ``ch`` at kernel position ``(i, j)``. This is the row order of
  :func:`torch.nn.functional.unfold`.
* Lowered inputs ``X`` are d x N, one column per sampled output position per image, and the
  pre-activation responses ``Z`` are n x N with ``Z = W X + b`` column for column. Columns are
  ordered image by image (batch after batch). For a ``Linear`` layer each input row is one
  column (an input of shape ``(B, ..., d)`` gives ``prod(...)`` positions per image).
* The solver's targets are ``Y = relu(Z)`` for the ReLU response and ``Y = Z`` for the linear
  one (:meth:`LayerFeatures.targets`).
* Models are run in eval mode under ``torch.no_grad()``; BatchNorm should be folded first
  (:func:`lrsa.batchnorm.fold_batchnorm`) so that the approximated layer owns the whole
  affine map.

Strategies (paper Section V-A, Fig. 3)
--------------------------------------
*Symmetric*: X and Z both come from the original network. *Asymmetric* (``inputs_from=``):
X comes from the network whose earlier layers are already approximated, Z from the original
network, on the same images and at the same sampled positions.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .utils import call_model, evaluating, progress_bar, run_hooked

__all__ = ["LayerFeatures", "check_supported", "collect_features", "find_layers",
           "lower_conv_input"]


# --------------------------------------------------------------------------- lowering

def check_supported(name, module):
    """Raise ValueError unless ``module`` is an ``nn.Conv2d`` with groups=1 or ``nn.Linear``."""
    if isinstance(module, nn.Linear):
        return
    if isinstance(module, nn.Conv2d):  # nn.ConvTranspose2d is not a subclass
        if module.groups != 1:
            raise ValueError(f"layer '{name}' ({type(module).__name__}) has groups="
                             f"{module.groups}; only groups=1 convolutions can be lowered")
        return
    raise ValueError(f"layer '{name}' ({type(module).__name__}) is not supported: only "
                     "nn.Conv2d with groups=1 and nn.Linear layers can be approximated")


def _pads(conv):
    """Explicit (top, bottom, left, right) zero/other padding of a Conv2d."""
    if isinstance(conv.padding, str):
        if conv.padding == "valid":
            return (0, 0, 0, 0)
        out = []
        for d, k in zip(conv.dilation, conv.kernel_size):  # same rule as torch's 'same'
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)
    ph, pw = conv.padding
    return (ph, ph, pw, pw)


def _pad_input(x, conv):
    top, bottom, left, right = _pads(conv)
    if top == bottom == left == right == 0:
        return x
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    return F.pad(x, (left, right, top, bottom), mode=mode)


def lower_conv_input(x, conv, name=None):
    """Lower the input ``x`` of ``conv`` into X (d x N), N = batch * output positions.

    For ``nn.Conv2d`` (groups=1): the columns of :func:`torch.nn.functional.unfold` with the
    conv's kernel_size, stride, padding (also ``'same'``/``'valid'`` and non-zero padding
    modes) and dilation, ordered image by image, so that
    ``conv.weight.reshape(n, -1) @ X + b`` equals the conv's output reshaped to
    ``(n, batch * H_out * W_out)``. For ``nn.Linear``: X is the input with its leading
    dimensions flattened, transposed (d x N).
    """
    name = name if name is not None else type(conv).__name__
    check_supported(name, conv)
    if isinstance(conv, nn.Linear):
        return x.reshape(-1, x.shape[-1]).T
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if isinstance(conv.padding, tuple) and conv.padding_mode == "zeros":
        cols = F.unfold(x, conv.kernel_size, dilation=conv.dilation, padding=conv.padding,
                        stride=conv.stride)
    else:
        cols = F.unfold(_pad_input(x, conv), conv.kernel_size, dilation=conv.dilation,
                        padding=0, stride=conv.stride)
    d = cols.shape[1]
    return cols.permute(1, 0, 2).reshape(d, -1)


def _lower_at(x, conv, b_idx, p_idx, w_out):
    """Columns of lower_conv_input(x, conv) at images b_idx and flat output positions p_idx
    (row-major over H_out x W_out), without building the whole unfolded tensor."""
    if isinstance(conv, nn.Linear):
        B = x.shape[0]
        xf = x.reshape(B, -1, x.shape[-1])
        return xf[b_idx, p_idx].T
    xp = _pad_input(x, conv)
    kh, kw = conv.kernel_size
    sh, sw = conv.stride
    dh, dw = conv.dilation
    oh, ow = p_idx // w_out, p_idx % w_out
    dev = x.device
    rows = (oh * sh)[:, None] + torch.arange(kh, device=dev)[None, :] * dh  # (S, kh)
    cols = (ow * sw)[:, None] + torch.arange(kw, device=dev)[None, :] * dw  # (S, kw)
    patches = xp[b_idx[:, None, None], :, rows[:, :, None], cols[:, None, :]]  # (S,kh,kw,c)
    S = b_idx.shape[0]
    return patches.permute(3, 1, 2, 0).reshape(-1, S)


# --------------------------------------------------------------------------- statistics

@dataclass
class LayerFeatures:
    """Sampled features of one layer.

    X : (d, N) float32 lowered inputs; Z : (n, N) float32 pre-activation responses, the
    layer's output (``W X + b`` for the symmetric strategy); num_images : images seen.
    """

    X: torch.Tensor
    Z: torch.Tensor
    num_images: int

    @property
    def N(self):
        return int(self.X.shape[1])

    def targets(self, response="relu"):
        """Y for the solver: ``relu(Z)`` or ``Z``."""
        if response == "relu":
            return torch.clamp(self.Z, min=0)
        if response == "linear":
            return self.Z
        raise ValueError(f"response must be 'relu' or 'linear', got {response!r}")


# --------------------------------------------------------------------------- helpers

def batch_input(batch):
    """The model input of a batch: a tensor, or the first element of (inputs, labels, ...)."""
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("input", "inputs", "x", "image", "images"):
            if key in batch:
                return batch[key]
    raise ValueError("each batch must be a tensor or a (inputs, labels, ...) tuple/list, got "
                     f"{type(batch).__name__}")


def _first_arg(args, kwargs):
    if args:
        return args[0]
    if kwargs:
        return next(iter(kwargs.values()))
    raise ValueError("layer called without an input")


def _resolve_layers(model, layers):
    """Normalize ``layers`` to an ordered dict name -> module of ``model``."""
    named = dict(model.named_modules())
    if isinstance(layers, str):
        layers = [layers]
    out = {}
    if isinstance(layers, dict):
        items = list(layers.items())
    else:
        items = []
        for item in layers:
            if isinstance(item, str):
                items.append((item, None))
            elif isinstance(item, (tuple, list)) and len(item) == 2:
                items.append((item[0], item[1]))
            else:
                raise ValueError("layers must be names, (name, module) pairs or a dict "
                                 f"name -> module; got an item of type {type(item).__name__}")
    owned = {id(m) for m in named.values()}
    for name, mod in items:
        if mod is None:
            if name not in named:
                raise ValueError(f"no module named '{name}' in the model (see "
                                 "model.named_modules() or find_layers)")
            mod = named[name]
        elif id(mod) not in owned:
            raise ValueError(f"layer '{name}' is not a submodule of the model")
        check_supported(name, mod)
        out[name] = mod
    if not out:
        raise ValueError("no layers requested")
    return out


class _StopForward(Exception):
    pass


# --------------------------------------------------------------------------- collection

class _Site:
    """Per-layer state of collect_features."""

    def __init__(self, name, module, seed, cap, spi):
        self.name, self.module = name, module
        self.is_linear = isinstance(module, nn.Linear)
        self.gen = torch.Generator().manual_seed(
            (int(seed) * 1_000_003 + zlib.crc32(name.encode())) % (2 ** 63))
        self.cap, self.spi = cap, spi
        self.count, self.images = 0, 0
        self.Xs, self.Zs = [], []
        self.reset_batch()

    def reset_batch(self):
        self.sel = None  # (b_idx, p_idx, w_out, input shape) for this batch
        self.Z = None
        self.X = None
        self.calls_model = 0
        self.calls_inputs = 0

    @property
    def full(self):
        return self.cap is not None and self.count >= self.cap

    def sample(self, B, L, device):
        m = L if self.spi is None else min(int(self.spi), L)
        if m == L:
            p = torch.arange(L).repeat(B)
        else:
            p = torch.rand(B, L, generator=self.gen).argsort(dim=1)[:, :m].reshape(-1)
        b = torch.arange(B).repeat_interleave(m)
        if self.cap is not None:
            rest = self.cap - self.count
            b, p = b[:rest], p[:rest]
        return b.to(device), p.to(device)

    def responses(self, z):
        if self.is_linear:
            B = z.shape[0]
            return z.reshape(B, -1, z.shape[-1])
        B, n = z.shape[:2]
        return z.reshape(B, n, -1).transpose(1, 2)  # (B, L, n)

    def on_output(self, x, z, also_inputs):
        """Model hook: sample positions, take Z (and X in the symmetric strategy)."""
        self.calls_model += 1
        if self.calls_model > 1:
            raise ValueError(f"layer '{self.name}' is called more than once in one forward "
                             "pass; its features are ambiguous")
        if self.full:
            return
        if not self.is_linear and x.dim() == 3:
            x, z = x.unsqueeze(0), z.unsqueeze(0)
        zr = self.responses(z)
        B, L = zr.shape[:2]
        b, p = self.sample(B, L, z.device)
        w_out = 1 if self.is_linear else z.shape[-1]
        self.sel = (b, p, w_out, tuple(x.shape))
        self.Z = zr[b, p].T
        if also_inputs:
            self.X = _lower_at(x, self.module, b, p, w_out)

    def on_input(self, x):
        """inputs_from hook: X at the positions the model hook sampled."""
        self.calls_inputs += 1
        if self.calls_inputs > 1:
            raise ValueError(f"layer '{self.name}' of inputs_from is called more than once "
                             "in one forward pass")
        if self.sel is None:
            return
        if not self.is_linear and x.dim() == 3:
            x = x.unsqueeze(0)
        b, p, w_out, shape = self.sel
        if tuple(x.shape) != shape:
            raise ValueError(f"layer '{self.name}': input shape {tuple(x.shape)} in inputs_from"
                             f" differs from {shape} in the model")
        self.X = _lower_at(x, self.module, b.to(x.device), p.to(x.device), w_out)

    def commit(self):
        if self.sel is None:
            return
        if self.X is None:
            raise ValueError(f"layer '{self.name}' was not called in the forward pass of "
                             "inputs_from")
        X = self.X.float()
        Z = self.Z.float().to(X.device)
        b = self.sel[0]
        self.images += int(torch.unique(b).numel())
        self.count += int(X.shape[1])
        self.Xs.append(X.contiguous())
        self.Zs.append(Z.contiguous())


def collect_features(model, layers, batches, *, samples_per_image=10, max_samples=None,
                     seed=0, inputs_from=None, progress=False,
                     stop_early=True):
    r"""Sample lowered inputs X and pre-activation responses Z of some layers.

    Parameters
    ----------
    model : nn.Module, the (original) network; Z is its layers' output. Run in eval mode
        under no_grad (train/eval flags restored afterwards). Fold BatchNorm first.
    layers : names from ``model.named_modules()``, (name, module) pairs (as
        :func:`find_layers` returns), or a dict name -> module. Each must be an
        ``nn.Conv2d`` with groups=1 or an ``nn.Linear`` (ValueError naming it otherwise).
    batches : iterable of input tensors or (inputs, labels, ...) tuples (a DataLoader).
    samples_per_image : random output positions per image and layer (None: all). The same
        positions give X and Z. For a Linear layer on (B, d) inputs there is one position.
    max_samples : cap on the number of columns per layer (None: no cap). Batches stop being
        read once every layer is full; the last batch is truncated.
    seed : positions come from a generator per layer seeded from (seed, layer name), so a
        layer's positions do not depend on which other layers are collected.
    inputs_from : optional second network with the same layer names (the already
        approximated one) for the asymmetric strategy: X is the lowered input of its layer of
        that name, Z comes from ``model``; both forwards see the same batch and use the
        positions sampled once per batch. Its layer of that name may be of any type (say a
        :class:`lrsa.layers.SparseLowRankConv2d`): only its input is used, lowered with the
        geometry of ``model``'s layer.
    stop_early : stop each forward once every requested layer has been seen.
    progress : tqdm bar over batches.

    Returns
    -------
    dict name -> :class:`LayerFeatures` (X: d x N, Z: n x N, float32, on the model's
    device).
    """
    sites = _resolve_layers(model, layers)
    if samples_per_image is not None and int(samples_per_image) < 1:
        raise ValueError(f"samples_per_image must be >= 1 or None, got {samples_per_image}")
    if max_samples is not None and int(max_samples) < 1:
        raise ValueError(f"max_samples must be >= 1 or None, got {max_samples}")
    state = {name: _Site(name, mod, seed, None if max_samples is None else int(max_samples),
                         samples_per_image) for name, mod in sites.items()}
    asym = inputs_from is not None
    in_mods = {}
    if asym:
        named_in = dict(inputs_from.named_modules())
        for name in sites:
            if name not in named_in:
                raise ValueError(f"inputs_from has no module named '{name}'")
            in_mods[name] = named_in[name]

    pending = {"model": set(), "inputs": set()}  # layers the current forward still needs
    handles = _register_hooks(state, in_mods, pending, stop_early)
    try:
        with evaluating(model, inputs_from), progress_bar(
                progress, len(batches) if hasattr(batches, "__len__") else None,
                "collect_features", leave=False) as bar:
            for batch in batches:
                _collect_batch(model, inputs_from, batch_input(batch), state, pending)
                bar.update(1)
                if all(s.full for s in state.values()):
                    break
    finally:
        for h in handles:
            h.remove()

    out = {}
    for name, s in state.items():
        if s.count == 0:
            raise ValueError(f"no samples collected for layer '{name}' (empty batches?)")
        out[name] = LayerFeatures(torch.cat(s.Xs, 1), torch.cat(s.Zs, 1), s.images)
        s.Xs, s.Zs = [], []
    return out


def _register_hooks(state, in_mods, pending, stop_early):
    """Forward hooks on the model's layers (outputs, and inputs unless ``in_mods`` gives the
    approximated network's layers, whose pre-hooks then take the inputs). A hook stops the
    forward once every layer ``pending`` names has been seen."""
    asym = bool(in_mods)

    def model_hook(site):
        def hook(mod, args, kwargs, out):
            site.on_output(_first_arg(args, kwargs), out, also_inputs=not asym)
            pending["model"].discard(site.name)
            if stop_early and not pending["model"]:
                raise _StopForward
        return hook

    def input_hook(site):
        def hook(mod, args, kwargs):
            site.on_input(_first_arg(args, kwargs))
            pending["inputs"].discard(site.name)
            if stop_early and not pending["inputs"]:
                raise _StopForward
        return hook

    handles = []
    for name, site in state.items():
        handles.append(site.module.register_forward_hook(model_hook(site), with_kwargs=True))
        if asym:
            handles.append(in_mods[name].register_forward_pre_hook(input_hook(site),
                                                                   with_kwargs=True))
    return handles


def _collect_batch(model, inputs_from, x, state, pending):
    """One batch: sample positions, run the model (and the approximated network for the
    asymmetric strategy) as far as the hooks need, store the columns."""
    for s in state.values():
        s.reset_batch()
    active = {n for n, s in state.items() if not s.full}
    pending["model"] = set(active)
    try:
        call_model(model, x)
    except _StopForward:
        pass
    if inputs_from is not None:
        pending["inputs"] = {n for n in active if state[n].sel is not None}
        if pending["inputs"]:
            try:
                call_model(inputs_from, x)
            except _StopForward:
                pass
    for name in active:
        if state[name].calls_model == 0:
            raise ValueError(f"layer '{name}' was not called in the forward pass")
    for s in state.values():
        s.commit()


def find_layers(model, example_input):
    """Conv2d and Linear layers of ``model`` as an ordered list of (name, module), in the
    order a forward pass on ``example_input`` calls them (so branching models such as
    inception blocks are listed in execution order). Layers not called (say auxiliary heads
    in eval mode) are omitted; grouped convolutions are listed too (collect_features rejects
    them). A layer called more than once in the pass raises ValueError.
    """
    order, calls = [], {}
    names = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            names.setdefault(m, name)

    def hook(mod, args):
        calls[mod] = calls.get(mod, 0) + 1
        if calls[mod] == 1:
            order.append(mod)

    run_hooked(model, example_input, [m.register_forward_pre_hook(hook) for m in names])
    twice = [names[m] for m, c in calls.items() if c > 1]
    if twice:
        raise ValueError(f"layers called more than once in one forward pass: {twice}; "
                         "they cannot be approximated layer by layer")
    return [(names[m], m) for m in order]

