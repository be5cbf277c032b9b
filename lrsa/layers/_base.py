"""What the factored modules share: their factors checked against the layer they replace, and
their base class :class:`FactoredLayer`."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _as_tensor(T, name, like):
    if T is None:
        return None
    if isinstance(T, np.ndarray):
        T = torch.from_numpy(np.ascontiguousarray(T))
    elif not isinstance(T, torch.Tensor):
        raise TypeError(f"{name} must be a numpy array or torch tensor, got {type(T).__name__}")
    return T.detach().to(dtype=like.dtype, device=like.device)


def checked_factors(layer, A, U, V, bias):
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


def nonzero_column_mask(A, tol):
    """Which columns of A have an l2 norm above ``tol``: a (d,) boolean tensor."""
    return torch.linalg.vector_norm(A, dim=0) > tol


class FactoredLayer(nn.Module):
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

    def _parts(self, x, input_dim):
        """U (V x) plus A on the kept inputs (``input_dim``: the input channels' axis of
        ``x``), or None where the layer stores neither part."""
        out = None
        if self.lowrank_v is not None:
            out = self.lowrank_u(self.lowrank_v(x))
        if self.sparse is not None:
            kept = x if self._all_kept else x.index_select(input_dim, self.kept_index)
            out = self.sparse(kept) if out is None else out + self.sparse(kept)
        return out

    def _dense_matrix(self):
        """A + U V as an (n, d) matrix, detached."""
        with torch.no_grad():
            W = self.sparse_matrix()
            U, V = self._factor_mats()
            return W if U is None else W + U @ V

    def _filled(self, dense):
        """``dense``, a new module of the kind this layer replaces, holding A + U V and the
        bias."""
        with torch.no_grad():
            dense.weight.copy_(self.to_dense_weight())
            if self.has_bias:
                dense.bias.copy_(self.bias)
        return dense

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
