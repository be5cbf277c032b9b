"""Linear layers realized as a sparse part plus Linear(d -> r), Linear(r -> n): whole input
features kept (:class:`SparseLowRankLinear`) or single weights (:class:`EntrySparseLowRankLinear`).
"""

from __future__ import annotations

import torch
from torch import nn

from ._base import FactoredLayer, checked_factors, nonzero_column_mask


class SparseLowRankLinear(FactoredLayer):
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
        A, U, V, b = checked_factors(linear, A, U, V, bias)
        kept = torch.nonzero(nonzero_column_mask(A, tol)).flatten().tolist()
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
        out = self._parts(x, -1)
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
        return self._dense_matrix()

    def to_dense_module(self):
        ref = self._ref_weight()
        return self._filled(nn.Linear(self._d, self._n, bias=self.has_bias, device=ref.device,
                                      dtype=ref.dtype))

    def extra_repr(self):
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"kept_features={self.nonzero_columns}/{self._d}, rank={self.rank}, "
                f"bias={self.has_bias}")


class EntrySparseLowRankLinear(FactoredLayer):
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
        A, U, V, b = checked_factors(linear, A, U, V, bias)
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
