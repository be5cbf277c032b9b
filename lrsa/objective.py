r"""One layer's objective: the data term and the penalties of the sparse and low-rank blocks.

.. math::

    F(A,B) = \frac{1}{2N}\|Y - r((A+B)X + b\mathbf 1^\top)\|_F^2
    + \lambda_1 g(A) + \lambda_2\|B\|_*

with the notation of :mod:`lrsa.solver`, which minimizes it (Algorithm 1). The sparse block's
penalty g is named by ``sparsity``: :math:`\|A\|_{2,1}` (``"column"``, the paper: whole
columns zero), :math:`\|A\|_1` (``"unstructured"``: single weights zero) or the indicator of
N:M sparsity (``"N:M"``, e.g. ``"2:4"``). ``sparse_penalty`` gives the proximal operator
and the norm of each; :func:`layer_objective` evaluates F directly.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from .arrays import like, same_kind
from .prox import project_n_m, prox_l21, soft_threshold
from .utils import check_floating

__all__ = ["layer_objective"]


def layer_objective(X, Y, A, B, lam1, lam2, *, response="relu", bias=None, sparsity="column"):
    r"""Evaluate :math:`F(A,B)` directly (no solver state): the reference for tests.
    ``sparsity`` names A's penalty (see :class:`lrsa.solver.ADMMOptions`)."""
    X, Y, bias = check_layer_data(X, Y, bias)
    xp = array_namespace(X)
    check_floating(A, "A")
    check_floating(B, "B")
    A, B = like(A, X), like(B, X)
    Z = (A + B) @ X + bias[:, None]
    out = xp.clip(Z, min=0) if response == "relu" else Z
    data = 0.5 * float(xp.sum(xp.astype(Y - out, xp.float64) ** 2)) / X.shape[1]
    return data + weighted_penalty(lam1, sparse_penalty(sparsity)[1](A)) + lam2 * _nuclear(B)


def check_layer_data(X, Y, bias):
    """(X, Y, bias): X (d, N) and Y (n, N) of one floating dtype (at least float32) in X's
    array kind (NumPy or torch) and on its device, the bias (n,) (zeros when None); a
    ValueError naming what is wrong."""
    xp = check_floating(X, "X")
    check_floating(Y, "Y")
    if X.ndim != 2 or Y.ndim != 2:
        raise ValueError(f"X and Y must be 2-D (d x N and n x N); got shapes {tuple(X.shape)} "
                         f"and {tuple(Y.shape)}")
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"X has {X.shape[1]} samples (columns) but Y has {Y.shape[1]}")
    if X.shape[1] == 0:
        raise ValueError("empty data: N = 0 samples")
    Y = same_kind(Y, X)
    X = xp.astype(X, xp.result_type(X.dtype, Y.dtype, xp.float32), copy=False)
    Y, n = like(Y, X), Y.shape[0]
    if bias is None:
        bias = xp.zeros(n, dtype=X.dtype, device=device(X))
    else:
        check_floating(bias, "bias")
        bias = like(bias, X)
        if tuple(bias.shape) != (n,):
            raise ValueError(f"bias must have shape ({n},), got {tuple(bias.shape)}")
    return X, Y, bias


def weighted_penalty(lam, norm):
    """``lam * norm``, and 0 where the norm is 0 (lam may be inf: "this part must be zero")."""
    return lam * norm if norm > 0 else 0.0


def _l21(A):
    xp = array_namespace(A)
    return float(xp.sum(xp.linalg.vector_norm(xp.astype(A, xp.float64), axis=0)))


def _l1(A):
    xp = array_namespace(A)
    return float(xp.sum(xp.abs(xp.astype(A, xp.float64))))


def sparse_penalty(sparsity):
    """(prox, norm) of the sparse block for ``sparsity`` (see :class:`lrsa.solver.ADMMOptions`):
    the prox ``(V, tau) -> A`` used in the A-step and the penalty's norm (0 on the N:M set,
    where the penalty is its indicator). A ValueError names a wrong value."""
    if sparsity == "column":
        return prox_l21, _l21
    if sparsity == "unstructured":
        return soft_threshold, _l1
    n, m = parse_n_m(sparsity)
    return (lambda V, tau: project_n_m(V, n, m)), n_m_indicator


def n_m_indicator(A):
    """The N:M indicator's value on the set (the A-step keeps A there)."""
    return 0.0


def parse_n_m(sparsity):
    """(n, m) of an ``"N:M"`` string such as ``"2:4"``; a ValueError naming anything else."""
    try:
        n, m = (int(v) for v in str(sparsity).split(":"))
        if not 0 < n < m:
            raise ValueError
    except ValueError:
        raise ValueError(f"sparsity must be 'column', 'unstructured' or 'N:M' with integers "
                         f"0 < N < M (e.g. '2:4'), got {sparsity!r}") from None
    return n, m


def _nuclear(B):
    xp = array_namespace(B)
    return float(xp.sum(xp.linalg.svdvals(xp.astype(B, xp.float64))))
