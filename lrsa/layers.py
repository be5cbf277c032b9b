r"""Modules that realize an approximated layer ``W ~ A + B`` with ``B = U V`` (fast).

Lowered shapes follow :mod:`lrsa.features`: ``A`` and ``B`` are n x d with d = c k_h k_w in
PyTorch's channel-major order (column ``ch * k_h * k_w + i * k_w + j``), ``U`` is n x r and
``V`` is r x d.

:class:`SparseLowRankConv2d` computes ``y = conv(x, A) + conv(x, U V) + bias`` as

* a **low-rank branch**: a k x k conv with r filters (``V`` reshaped to r x c x k_h x k_w, no
  bias, the original stride/padding/dilation) followed by a 1 x 1 conv with ``U`` (n x r);
* a **sparse branch**: the input channels whose k_h k_w columns of ``A`` are all zero are
  dropped (``index_select`` over channels), and a conv with the reduced weight
  (n x c_kept x k_h x k_w) runs on the rest. Zero columns *inside* kept channels stay as
  zeros in that reduced weight (a boolean ``column_mask`` buffer remembers them, see
  :func:`keep_structure_hook`); the alternative, a true gather of individual columns
  (im2col of the kept columns then a GEMM), saves those MACs but loses cuDNN/oneDNN
  convolution kernels, so it is not used.

The bias lives in the last conv of the low-rank branch when there is one (fused), else in
the sparse conv, else in a lone parameter (both branches absent: the output is the bias).
An entirely zero ``A`` gives no sparse branch, ``r = 0`` no low-rank branch.
:class:`SparseLowRankLinear` is the same for ``nn.Linear`` (kept input features gathered +
a Linear; Linear(d -> r, no bias) then Linear(r -> n)).

Saving and loading a compressed model: :meth:`structure` gives a JSON-friendly dict,
:meth:`from_structure` an untrained module of the same shapes, so ``load_state_dict`` works;
:func:`model_structure` / :func:`apply_structure` do it for a whole model.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn

from .features import check_supported

__all__ = ["EntrySparseLowRankLinear", "FACTORED_MODULES", "SparseLowRankConv2d",
           "SparseLowRankLinear", "apply_structure", "estimate_macs", "keep_structure_hook",
           "model_structure"]


def _pair(v):
    if isinstance(v, str):
        return v
    if isinstance(v, (tuple, list)):
        return tuple(int(a) for a in v)
    return (int(v), int(v))


def _as_tensor(T, name, like):
    if T is None:
        return None
    if isinstance(T, np.ndarray):
        T = torch.from_numpy(np.ascontiguousarray(T))
    elif not isinstance(T, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(T).__name__}")
    return T.detach().to(dtype=like.dtype, device=like.device)


def _factors(layer, A, U, V, bias):
    """Check and convert (A, U, V, bias) against ``layer``'s weight (n x d lowered)."""
    w = layer.weight
    n, d = w.shape[0], w[0].numel()
    A, U, V = (_as_tensor(T, nm, w) for T, nm in ((A, "A"), (U, "U"), (V, "V")))
    if A is None:
        A = torch.zeros(n, d, dtype=w.dtype, device=w.device)
    if U is None or V is None:
        U = torch.zeros(n, 0, dtype=w.dtype, device=w.device)
        V = torch.zeros(0, d, dtype=w.dtype, device=w.device)
    if A.shape != (n, d):
        raise ValueError(f"A must be ({n}, {d}) = (outputs, lowered inputs), got {tuple(A.shape)}")
    if U.dim() != 2 or V.dim() != 2 or U.shape[0] != n or V.shape[1] != d \
            or U.shape[1] != V.shape[0]:
        raise ValueError(f"U, V must be ({n}, r) and (r, {d}), got {tuple(U.shape)} and "
                         f"{tuple(V.shape)}")
    if bias is None:
        bias = None if layer.bias is None else layer.bias.detach().clone()
    else:
        bias = _as_tensor(bias, "bias", w).reshape(-1)
        if bias.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    return A, U, V, bias


def _conv_out_hw(h, w, kernel_size, stride, padding, dilation):
    if padding == "same":
        return h, w
    pad = (0, 0) if padding == "valid" else _pair(padding)
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                 zip((h, w), pad, _pair(dilation), _pair(kernel_size), _pair(stride)))


def _nonzero_columns(A, tol):
    return torch.linalg.vector_norm(A, dim=0) > tol


class _Base(nn.Module):
    """Shared parts: branch layout, bias placement, parameter counts, state."""

    @classmethod
    def from_structure(cls, structure, *, device=None, dtype=None):
        """An untrained module of the described shapes (from :meth:`structure`), ready for
        ``load_state_dict``."""
        s = {k: v for k, v in structure.items() if k != "type"}
        return cls(**s, device=device, dtype=dtype)

    def _bias_module(self):
        if self.lowrank_u is not None:
            return self.lowrank_u
        if self.sparse is not None:
            return self.sparse
        return None

    @property
    def bias(self):
        m = self._bias_module()
        return m.bias if m is not None else self.bias_only

    @property
    def rank(self):
        return 0 if self.lowrank_v is None else int(self.lowrank_v.weight.shape[0])

    @property
    def has_bias(self):
        return self.bias is not None

    @property
    def num_parameters_stored(self):
        """Parameters actually held (zero columns inside kept channels included)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def num_parameters_dense(self):
        """Parameters of the dense layer it replaces: n d (+ n)."""
        return self._n * self._d + (self._n if self.has_bias else 0)

    @property
    def num_parameters_effective(self):
        """n x (nonzero columns of A) + r (n + d) (+ n for the bias)."""
        return (self._n * self.nonzero_columns + self.rank * (self._n + self._d)
                + (self._n if self.has_bias else 0))

    def _factor_mats(self):
        """U (n x r) and V (r x d) from the low-rank branch."""
        r = self.rank
        if r == 0:
            return None, None
        U = self.lowrank_u.weight.reshape(self._n, r)
        V = self.lowrank_v.weight.reshape(r, self._d)
        return U, V

    def factors(self):
        """(A, U, V, bias) in lowered form (A: n x d; U, V None when r = 0), detached."""
        with torch.no_grad():
            A = self.sparse_matrix()
            U, V = self._factor_mats()
            if U is not None:
                U, V = U.detach().clone(), V.detach().clone()
            b = None if self.bias is None else self.bias.detach().clone()
        return A, U, V, b

    def _ref_weight(self):
        for p in self.parameters():
            return p
        return torch.empty(0, device=self.kept_index.device)

    def _load_low_rank_and_bias(self, U, V, bias):
        """Copy U (n x r), V (r x d) into the low-rank branch and the bias (under no_grad)."""
        if self.rank:
            self.lowrank_v.weight.copy_(V.reshape(self.lowrank_v.weight.shape))
            self.lowrank_u.weight.copy_(U.reshape(self.lowrank_u.weight.shape))
        if bias is not None:
            self.bias.copy_(bias)

    def _linear_low_rank(self, rank, fk):
        """The low-rank branch of a Linear: Linear(d -> r), Linear(r -> n); none at r = 0."""
        rank = int(rank)
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        if rank == 0:
            self.lowrank_v = self.lowrank_u = None
            return
        self.lowrank_v = nn.Linear(self._d, rank, bias=False, **fk)
        self.lowrank_u = nn.Linear(rank, self._n, bias=False, **fk)

    def _place_bias(self, bias, device, dtype):
        self.bias_only = None
        m = self._bias_module()
        if not bias:
            return
        if m is None:
            self.bias_only = nn.Parameter(torch.zeros(self._n, device=device, dtype=dtype))
        else:
            m.bias = nn.Parameter(torch.zeros(self._n, device=device, dtype=dtype))


class SparseLowRankConv2d(_Base):
    """A Conv2d realized as a channel-pruned conv (A) plus a k x k / 1 x 1 conv pair (U V).

    Build with :meth:`from_factors` (or :meth:`from_structure` for loading). See the module
    docstring for the layout. Attributes: ``sparse`` (nn.Conv2d or None), ``lowrank_v``,
    ``lowrank_u`` (nn.Conv2d or None), buffers ``kept_index`` (long, the kept input channels)
    and ``column_mask`` (bool, 1 x c_kept x k_h x k_w: which columns of the reduced weight
    are structurally nonzero).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, padding_mode="zeros", kept_channels=(), rank=0, bias=True,
                 device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride = _pair(kernel_size), _pair(stride)
        self.padding, self.dilation = _pair(padding), _pair(dilation)
        self.padding_mode = padding_mode
        kept = sorted({int(c) for c in kept_channels})
        if kept and (kept[0] < 0 or kept[-1] >= self.in_channels):
            raise ValueError(f"kept_channels must lie in [0, {self.in_channels})")
        rank = int(rank)
        if rank < 0:
            raise ValueError(f"rank must be >= 0, got {rank}")
        self._n, self._d = self.out_channels, self.in_channels * int(np.prod(self.kernel_size))
        self._all_kept = len(kept) == self.in_channels
        geo = {"stride": self.stride, "padding": self.padding, "dilation": self.dilation,
               "padding_mode": padding_mode}
        self.register_buffer("kept_index", torch.tensor(kept, dtype=torch.long, device=device))
        if kept:
            self.sparse = nn.Conv2d(len(kept), self._n, self.kernel_size, bias=False, **geo,
                                    **fk)
            self.register_buffer("column_mask", torch.ones(
                1, len(kept), *self.kernel_size, dtype=torch.bool, device=device))
        else:
            self.sparse = None
            self.column_mask = None
        if rank > 0:
            self.lowrank_v = nn.Conv2d(self.in_channels, rank, self.kernel_size, bias=False,
                                       **geo, **fk)
            self.lowrank_u = nn.Conv2d(rank, self._n, 1, bias=False, **fk)
        else:
            self.lowrank_v = self.lowrank_u = None
        self._place_bias(bias, device, dtype)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_factors(cls, conv, A, U, V, bias=None, *, tol=0.0):
        """Build from the original ``nn.Conv2d`` (for its geometry) and lowered factors.

        A : (n, d) column-sparse; columns with l2 norm <= ``tol`` are treated as zero.
        U, V : (n, r), (r, d) with B = U V (None or r = 0: no low-rank branch).
        bias : (n,); None takes ``conv.bias`` (no bias if the conv has none).
        numpy or torch; converted to the conv's dtype and device.
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"from_factors needs an nn.Conv2d, got {type(conv).__name__}")
        check_supported(type(conv).__name__, conv)
        A, U, V, b = _factors(conv, A, U, V, bias)
        n, c = conv.out_channels, conv.in_channels
        kh, kw = conv.kernel_size
        cols = _nonzero_columns(A, tol).reshape(c, kh, kw)
        kept = torch.nonzero(cols.reshape(c, -1).any(1)).flatten().tolist()
        w = conv.weight
        mod = cls(c, n, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                  conv.padding_mode, kept, U.shape[1], b is not None, device=w.device,
                  dtype=w.dtype)
        with torch.no_grad():
            if kept:
                mask = cols[kept].unsqueeze(0)
                mod.column_mask.copy_(mask)
                mod.sparse.weight.copy_(A.reshape(n, c, kh, kw)[:, kept] * mask)
            mod._load_low_rank_and_bias(U, V, b)
        return mod

    def structure(self):
        """JSON-friendly description of the shapes (enough for :meth:`from_structure`)."""
        return {"type": type(self).__name__, "in_channels": self.in_channels,
                "out_channels": self.out_channels, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride),
                "padding": self.padding if isinstance(self.padding, str)
                else list(self.padding),
                "dilation": list(self.dilation), "padding_mode": self.padding_mode,
                "kept_channels": self.kept_index.tolist(), "rank": self.rank,
                "bias": self.has_bias}

    # ------------------------------------------------------------------ compute
    def forward(self, x):
        out = None
        if self.lowrank_v is not None:
            out = self.lowrank_u(self.lowrank_v(x))
        if self.sparse is not None:
            xs = x if self._all_kept else x.index_select(-3, self.kept_index)
            s = self.sparse(xs)
            out = s if out is None else out + s
        if out is None:
            out = self._bias_output(x)
        return out

    def _out_hw(self, h, w):
        return _conv_out_hw(h, w, self.kernel_size, self.stride, self.padding, self.dilation)

    def _bias_output(self, x):
        ho, wo = self._out_hw(x.shape[-2], x.shape[-1])
        shape = (*x.shape[:-3], self._n, ho, wo)
        out = x.new_zeros(shape)
        if self.bias_only is not None:
            out = out + self.bias_only.view(-1, 1, 1)
        return out

    # ------------------------------------------------------------------ views
    @property
    def nonzero_columns(self):
        return 0 if self.column_mask is None else int(self.column_mask.sum())

    def sparse_matrix(self):
        """A as an (n, d) matrix (zeros in dropped channels), detached."""
        ref = self._ref_weight()
        A = torch.zeros(self._n, self.in_channels, *self.kernel_size, dtype=ref.dtype,
                        device=ref.device)
        if self.sparse is not None:
            A[:, self.kept_index] = self.sparse.weight.detach()
        return A.reshape(self._n, -1)

    def to_dense_weight(self):
        """The equivalent dense (n, c, k_h, k_w) weight A + U V (what forward computes)."""
        with torch.no_grad():
            W = self.sparse_matrix()
            U, V = self._factor_mats()
            if U is not None:
                W += U @ V
        return W.reshape(self._n, self.in_channels, *self.kernel_size)

    def to_dense_module(self):
        """An ``nn.Conv2d`` with the weight A + U V and the bias."""
        W = self.to_dense_weight()
        conv = nn.Conv2d(self.in_channels, self._n, self.kernel_size, self.stride,
                         self.padding, self.dilation, bias=self.has_bias,
                         padding_mode=self.padding_mode, device=W.device, dtype=W.dtype)
        with torch.no_grad():
            conv.weight.copy_(W)
            if self.has_bias:
                conv.bias.copy_(self.bias)
        return conv

    def extra_repr(self):
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}, padding={self.padding}")
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return (s + f", kept_channels={self.kept_index.numel()}/{self.in_channels}, "
                f"nonzero_columns={self.nonzero_columns}/{self._d}, rank={self.rank}, "
                f"bias={self.has_bias}")


class SparseLowRankLinear(_Base):
    """A Linear realized as a feature-gathered Linear (A) plus Linear(d->r), Linear(r->n).

    Every column of A is one input feature, so the kept features are exactly the nonzero
    columns (no zero columns inside the sparse branch). Buffers: ``kept_index``.
    """

    column_mask = None

    def __init__(self, in_features, out_features, kept_features=(), rank=0, bias=True,
                 device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = int(in_features), int(out_features)
        kept = sorted({int(c) for c in kept_features})
        if kept and (kept[0] < 0 or kept[-1] >= self.in_features):
            raise ValueError(f"kept_features must lie in [0, {self.in_features})")
        self._n, self._d = self.out_features, self.in_features
        self._all_kept = len(kept) == self.in_features
        self.register_buffer("kept_index", torch.tensor(kept, dtype=torch.long, device=device))
        self.sparse = nn.Linear(len(kept), self._n, bias=False, **fk) if kept else None
        self._linear_low_rank(rank, fk)
        self._place_bias(bias, device, dtype)

    @classmethod
    def from_factors(cls, linear, A, U, V, bias=None, *, tol=0.0):
        """Build from the original ``nn.Linear`` and lowered factors (as for the conv)."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_factors needs an nn.Linear, got {type(linear).__name__}")
        A, U, V, b = _factors(linear, A, U, V, bias)
        kept = torch.nonzero(_nonzero_columns(A, tol)).flatten().tolist()
        w = linear.weight
        mod = cls(linear.in_features, linear.out_features, kept, U.shape[1], b is not None,
                  device=w.device, dtype=w.dtype)
        with torch.no_grad():
            if kept:
                mod.sparse.weight.copy_(A[:, kept])
            mod._load_low_rank_and_bias(U, V, b)
        return mod

    def structure(self):
        return {"type": type(self).__name__, "in_features": self.in_features,
                "out_features": self.out_features,
                "kept_features": self.kept_index.tolist(), "rank": self.rank,
                "bias": self.has_bias}

    def forward(self, x):
        out = None
        if self.lowrank_v is not None:
            out = self.lowrank_u(self.lowrank_v(x))
        if self.sparse is not None:
            xs = x if self._all_kept else x.index_select(-1, self.kept_index)
            s = self.sparse(xs)
            out = s if out is None else out + s
        if out is None:
            out = x.new_zeros((*x.shape[:-1], self._n))
            if self.bias_only is not None:
                out = out + self.bias_only
        return out

    @property
    def nonzero_columns(self):
        return int(self.kept_index.numel())

    def sparse_matrix(self):
        """A as an (n, d) matrix (zeros in dropped features), detached."""
        ref = self._ref_weight()
        A = torch.zeros(self._n, self._d, dtype=ref.dtype, device=ref.device)
        if self.sparse is not None:
            A[:, self.kept_index] = self.sparse.weight.detach()
        return A

    def to_dense_weight(self):
        """The equivalent dense (n, d) weight A + U V."""
        with torch.no_grad():
            W = self.sparse_matrix()
            U, V = self._factor_mats()
            if U is not None:
                W += U @ V
        return W

    def to_dense_module(self):
        W = self.to_dense_weight()
        lin = nn.Linear(self._d, self._n, bias=self.has_bias, device=W.device, dtype=W.dtype)
        with torch.no_grad():
            lin.weight.copy_(W)
            if self.has_bias:
                lin.bias.copy_(self.bias)
        return lin

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"kept_features={self.nonzero_columns}/{self._d}, rank={self.rank}, "
                f"bias={self.has_bias}")


class EntrySparseLowRankLinear(_Base):
    """A Linear realized as a masked A (single weights zero: unstructured or N:M sparsity)
    plus Linear(d->r), Linear(r->n).

    A is held as a dense (n, d) weight with a boolean ``mask`` buffer of its nonzeros
    (:func:`keep_structure_hook` re-zeroes the rest during fine-tuning), so it runs at a
    dense layer's cost: the gain is storage (counted with the index cost by
    :func:`lrsa.decompose.entry_storage`), and speed only where a sparse kernel runs it
    (2:4 on GPUs with sparse tensor cores).
    """

    kept_index = None

    def __init__(self, in_features, out_features, rank=0, bias=True, device=None, dtype=None):
        super().__init__()
        fk = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = int(in_features), int(out_features)
        self._n, self._d = self.out_features, self.in_features
        self.sparse = nn.Linear(self._d, self._n, bias=False, **fk)
        self.register_buffer("mask", torch.ones(self._n, self._d, dtype=torch.bool,
                                                device=device))
        self._linear_low_rank(rank, fk)
        self._place_bias(bias, device, dtype)

    @classmethod
    def from_factors(cls, linear, A, U, V, bias=None):
        """Build from the original ``nn.Linear`` and lowered factors; A's zeros are the mask."""
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"from_factors needs an nn.Linear, got {type(linear).__name__}")
        A, U, V, b = _factors(linear, A, U, V, bias)
        w = linear.weight
        mod = cls(linear.in_features, linear.out_features, U.shape[1], b is not None,
                  device=w.device, dtype=w.dtype)
        with torch.no_grad():
            mod.mask.copy_(A != 0)
            mod.sparse.weight.copy_(A)
            mod._load_low_rank_and_bias(U, V, b)
        return mod

    def structure(self):
        return {"type": type(self).__name__, "in_features": self.in_features,
                "out_features": self.out_features, "rank": self.rank, "bias": self.has_bias}

    def forward(self, x):
        out = self.sparse(x)
        return out + self.lowrank_u(self.lowrank_v(x)) if self.lowrank_v is not None else out

    @property
    def nonzeros(self):
        return int(self.mask.sum())

    @property
    def nonzero_columns(self):
        return int(self.mask.any(0).sum())

    @property
    def num_parameters_effective(self):
        """nonzeros of A + r (n + d) (+ n for the bias), without A's index cost."""
        return (self.nonzeros + self.rank * (self._n + self._d)
                + (self._n if self.has_bias else 0))

    def sparse_matrix(self):
        return (self.sparse.weight * self.mask).detach().clone()

    to_dense_weight = SparseLowRankLinear.to_dense_weight
    to_dense_module = SparseLowRankLinear.to_dense_module

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nonzeros={self.nonzeros}/{self._n * self._d}, rank={self.rank}, "
                f"bias={self.has_bias}")


_TYPES = {"SparseLowRankConv2d": SparseLowRankConv2d,
          "SparseLowRankLinear": SparseLowRankLinear,
          "EntrySparseLowRankLinear": EntrySparseLowRankLinear}
#: the modules that stand for an approximated layer
FACTORED_MODULES = tuple(_TYPES.values())


# ---------------------------------------------------------------------- fine-tuning

class _KeepStructure:
    def __init__(self, pairs):
        self.pairs = pairs

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        for weight, mask in self.pairs:
            weight.mul_(mask)

    def __len__(self):
        return len(self.pairs)


def keep_structure_hook(model):
    """A callable that re-zeroes the structurally zero columns of every sparse branch.

    Call it after each optimizer step, or register it:
    ``optimizer.register_step_post_hook(keep_structure_hook(model))`` (it ignores its
    arguments). Dropped channels/features need nothing (they are not in the weights); the
    zero columns inside kept channels of :class:`SparseLowRankConv2d` are re-zeroed with its
    ``column_mask`` buffer, the zeros of :class:`EntrySparseLowRankLinear` with its
    ``mask``. The modules are found when the hook is made.
    """
    pairs = []
    for m in model.modules():
        if isinstance(m, SparseLowRankConv2d) and m.sparse is not None \
                and not bool(m.column_mask.all()):
            pairs.append((m.sparse.weight, m.column_mask))
        if isinstance(m, EntrySparseLowRankLinear) and not bool(m.mask.all()):
            pairs.append((m.sparse.weight, m.mask))
    return _KeepStructure(pairs)


# ---------------------------------------------------------------------- whole models

def model_structure(model):
    """``{name: structure()}`` of every SparseLowRank module of ``model`` (JSON-friendly)."""
    return {name: m.structure() for name, m in model.named_modules()
            if isinstance(m, FACTORED_MODULES)}


def apply_structure(model, structures, *, device=None, dtype=None):
    """Replace, in place, the submodules named in ``structures`` (from
    :func:`model_structure`) by untrained SparseLowRank modules of those shapes, so that the
    compressed model's ``state_dict`` loads into ``model``. Returns ``model``."""
    for name, s in structures.items():
        if s.get("type") not in _TYPES:
            raise ValueError(f"unknown structure type {s.get('type')!r} for '{name}'")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child, None)
        ref = next(old.parameters(), None) if isinstance(old, nn.Module) else None
        dev = device if device is not None else (ref.device if ref is not None else None)
        dt = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        setattr(parent, child, _TYPES[s["type"]].from_structure(s, device=dev, dtype=dt))
    return model


# ---------------------------------------------------------------------- dense or factored

def estimate_macs(module, x_shape):
    """Multiply-accumulates of one forward of ``module`` on an input of shape ``x_shape``
    ((B, c, H, W) for convolutions, (..., d) for linear layers). Supports nn.Conv2d
    (any groups), nn.Linear and the SparseLowRank modules; for
    :class:`EntrySparseLowRankLinear` it counts A's nonzeros, the multiply-adds a sparse
    kernel performs (the module itself runs A densely)."""
    if isinstance(module, SparseLowRankConv2d):
        B, (ho, wo) = int(np.prod(x_shape[:-3])), module._out_hw(x_shape[-2], x_shape[-1])
        L, kk = B * ho * wo, int(np.prod(module.kernel_size))
        macs = module._n * module.kept_index.numel() * kk * L
        return macs + module.rank * (module._d + module._n) * L
    if isinstance(module, EntrySparseLowRankLinear):
        L = int(np.prod(x_shape[:-1]))
        return (module.nonzeros + module.rank * (module._d + module._n)) * L
    if isinstance(module, SparseLowRankLinear):
        L = int(np.prod(x_shape[:-1]))
        return (module._n * module.nonzero_columns + module.rank * (module._d + module._n)) * L
    if isinstance(module, nn.Conv2d):
        B = int(np.prod(x_shape[:-3]))
        ho, wo = _conv_out_hw(x_shape[-2], x_shape[-1], module.kernel_size, module.stride,
                              module.padding, module.dilation)
        return module.weight.numel() * B * ho * wo
    if isinstance(module, nn.Linear):
        return module.weight.numel() * int(np.prod(x_shape[:-1]))
    raise ValueError(f"estimate_macs: unsupported module {type(module).__name__}")
