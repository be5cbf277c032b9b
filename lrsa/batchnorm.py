"""BatchNorm folding: each BatchNorm that directly follows a Conv or Linear layer merged into
that layer, so that the layer owns the whole affine map before it is approximated (see
:mod:`lrsa.features`).
"""

from __future__ import annotations

import copy
import itertools
import warnings

import torch
from torch import nn

from .utils import run_hooked

__all__ = ["fold_batchnorm"]

#: the layers a BatchNorm can be folded into, and the BatchNorm kinds (SyncBatchNorm too)
#: that may follow each
_CONV_BN = {nn.Conv1d: (nn.BatchNorm1d,), nn.Conv2d: (nn.BatchNorm2d,),
            nn.Conv3d: (nn.BatchNorm3d,), nn.Linear: (nn.BatchNorm1d,)}


def _bn_matches(layer, bn):
    if type(layer) not in _CONV_BN:
        return False
    if not isinstance(bn, _CONV_BN[type(layer)] + (nn.SyncBatchNorm,)):
        return False
    out = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    return bn.num_features == out


def _registration_pairs(model):
    """(parent, layer name, layer, bn name, bn) for consecutive children of any module."""
    pairs = []
    for parent in model.modules():
        kids = list(parent.named_children())
        for (ln, layer), (bn_name, bn) in itertools.pairwise(kids):
            if _bn_matches(layer, bn):
                pairs.append((parent, ln, layer, bn_name, bn))
    return pairs


def _traced_pairs(model, example_input):
    """Pairs found on a forward pass: the BN's input is the very tensor the layer returned,
    each is called once and no other module consumes that tensor."""
    parents = {}
    for parent in model.modules():
        for cname, child in parent.named_children():
            parents.setdefault(child, (parent, cname))
    produced, consumed, calls = {}, {}, {}
    alive = []  # every seen tensor stays referenced, so id() values are not reused
    handles = []

    def pre(mod, args, kwargs):
        calls[mod] = calls.get(mod, 0) + 1
        x = args[0] if args else next(iter(kwargs.values()), None)
        if isinstance(x, torch.Tensor):
            alive.append(x)
            consumed.setdefault(id(x), []).append(mod)

    def post(mod, args, out):
        if isinstance(out, torch.Tensor):
            produced[mod] = out

    leaves = [m for m in model.modules() if not list(m.children())]
    for m in leaves:
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
        if type(m) in _CONV_BN:
            handles.append(m.register_forward_hook(post))
    run_hooked(model, example_input, handles)
    pairs = []
    for layer, out in produced.items():
        users = consumed.get(id(out), [])
        if len(users) != 1 or calls.get(layer) != 1:
            continue
        bn = users[0]
        if calls.get(bn) != 1 or not _bn_matches(layer, bn):
            continue
        if layer not in parents or bn not in parents:
            continue
        lp, ln = parents[layer]
        bp, bname = parents[bn]
        pairs.append((lp, ln, layer, bname, bn, bp))
    return pairs


def fold_batchnorm(model, example_input=None):
    r"""Return a deep copy of ``model`` with every BatchNorm that directly follows a
    Conv1d/2d/3d or Linear folded into that layer, and the BatchNorm replaced by
    ``nn.Identity``.

    The fold uses eval-mode semantics (running statistics):
    :math:`s = \gamma / \sqrt{\sigma^2 + \epsilon}`, :math:`W' = s W`,
    :math:`b' = s (b - \mu) + \beta` (computed in float64, stored in the layer's dtype).
    The folded model equals the original in eval mode up to float rounding. The copy keeps
    the original's train/eval flags; BatchNorms without running statistics are left alone.

    How pairs are found
    -------------------
    Without ``example_input`` (registration rule): inside any module, a Conv/Linear child
    immediately followed, in registration order, by a BatchNorm child of the matching kind
    whose ``num_features`` equals the layer's output channels. For ``nn.Sequential`` this is
    exact. For other modules (torchvision's GoogLeNet ``BasicConv2d`` with ``conv``/``bn``,
    ResNet blocks with ``conv1``/``bn1``) it *assumes* that ``forward`` applies the
    BatchNorm to the layer's output and to nothing else; a module that registers ``conv``
    before ``bn`` but computes ``conv(bn(x))`` would be folded wrongly.

    With ``example_input`` (traced rule, exact): a forward pass is run and a pair is folded
    only when the BatchNorm's input is the very tensor the layer returned, each is called
    once, and no other module takes that tensor as input (use outside modules, such as a
    ``torch.cat`` in ``forward``, cannot be seen). Pairs may then sit in different parents.
    """
    folded = copy.deepcopy(model)
    if example_input is None:
        pairs = [(p, ln, layer, bn_name, bn, p)
                 for p, ln, layer, bn_name, bn in _registration_pairs(folded)]
    else:
        pairs = _traced_pairs(folded, example_input)
    for _lp, _ln, layer, bn_name, bn, bp in pairs:
        if bn.running_mean is None or bn.running_var is None:
            warnings.warn(f"BatchNorm '{bn_name}' has no running statistics; not folded",
                          stacklevel=2)
            continue
        _fold_into(layer, bn)
        setattr(bp, bn_name, nn.Identity())
    return folded


@torch.no_grad()
def _fold_into(layer, bn):
    w = layer.weight
    n = w.shape[0]
    mean, var = bn.running_mean.double(), bn.running_var.double()
    gamma = bn.weight.double() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.double() if bn.bias is not None else torch.zeros_like(mean)
    s = gamma / torch.sqrt(var + bn.eps)
    b = layer.bias.double() if layer.bias is not None else torch.zeros_like(mean)
    new_w = (w.double() * s.view(n, *([1] * (w.dim() - 1)))).to(w.dtype)
    new_b = (s * (b - mean) + beta).to(w.dtype)
    layer.weight.copy_(new_w)
    if layer.bias is None:
        layer.bias = nn.Parameter(new_b.to(w.device))
    else:
        layer.bias.copy_(new_b)
