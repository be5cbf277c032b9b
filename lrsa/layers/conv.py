"""A Conv2d realized as a channel-pruned conv plus a k x k / 1 x 1 conv pair (the layout is
described in :mod:`lrsa.layers`)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..features import check_supported
from ._base import FactoredLayer, checked_factors, nonzero_column_mask


def _pair(v):
    if isinstance(v, str):
        return v
    if isinstance(v, (tuple, list)):
        return tuple(int(a) for a in v)
    return (int(v), int(v))



def conv_output_hw(h, w, kernel_size, stride, padding, dilation):
    if padding == "same":
        return h, w
    pad = (0, 0) if padding == "valid" else _pair(padding)
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                 zip((h, w), pad, _pair(dilation), _pair(kernel_size), _pair(stride)))


class SparseLowRankConv2d(FactoredLayer):
    """A Conv2d realized as a channel-pruned conv (A) plus a k x k / 1 x 1 conv pair (U V).

    Build with :meth:`from_factors` (or ``from_structure`` for loading); the layout is
    described in :mod:`lrsa.layers`. Attributes: ``sparse`` (nn.Conv2d or None),
    ``lowrank_v``, ``lowrank_u`` (nn.Conv2d or None), buffers ``kept_index`` (long, the kept
    input channels) and ``column_mask`` (bool, 1 x c_kept x k_h x k_w: which columns of the
    reduced weight are structurally nonzero).
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
        A, U, V, b = checked_factors(conv, A, U, V, bias)
        n, c = conv.out_channels, conv.in_channels
        kh, kw = conv.kernel_size
        cols = nonzero_column_mask(A, tol).reshape(c, kh, kw)
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
        """JSON-friendly description of the shapes (enough for ``from_structure``)."""
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
        out = self._parts(x, -3)
        return self._bias_output(x) if out is None else out

    def _out_hw(self, h, w):
        return conv_output_hw(h, w, self.kernel_size, self.stride, self.padding, self.dilation)

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
        return self._dense_matrix().reshape(self._n, self.in_channels, *self.kernel_size)

    def to_dense_module(self):
        """An ``nn.Conv2d`` with the weight A + U V and the bias."""
        ref = self._ref_weight()
        return self._filled(nn.Conv2d(self.in_channels, self._n, self.kernel_size, self.stride,
                                      self.padding, self.dilation, bias=self.has_bias,
                                      padding_mode=self.padding_mode, device=ref.device,
                                      dtype=ref.dtype))

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
