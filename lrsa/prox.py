r"""Proximal operators: the leaves of the solver.

One convention throughout lrsa:

.. math::

    \operatorname{prox}_{\tau f}(V) = \arg\min_X \; \tau f(X) + \tfrac12 \|X - V\|_F^2 .

Every operator accepts a NumPy array or a torch tensor (any device) and returns the same
kind, dtype and device.
"""

from __future__ import annotations

import numpy as np
import torch

from .utils import as_float_tensor

__all__ = ["hard_threshold", "project_n_m", "prox_l21", "prox_group_l21", "svt", "svt_factors",
           "soft_threshold"]


def _check_tau(tau):
    tau = float(tau)
    if np.isnan(tau) or tau < 0:  # tau = inf is allowed: the prox is then 0
        raise ValueError(f"tau must be a number >= 0, got {tau}")
    return tau


def _back(T, was_numpy):
    return T.numpy() if was_numpy else T


def _check_matrix(T, name="V"):
    if T.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(T.shape)}")


def soft_threshold(V, tau):
    r"""Elementwise soft thresholding, the prox of the :math:`\ell_1` norm.

    .. math::

        \operatorname{prox}_{\tau\|\cdot\|_1}(V)_{ij} = \operatorname{sign}(V_{ij})
        \max(|V_{ij}| - \tau, 0).

    Parameters
    ----------
    V : array or tensor of any shape
    tau : float >= 0

    Returns
    -------
    Same kind, shape, dtype and device as ``V``.
    """
    T, was_numpy = as_float_tensor(V)
    tau = _check_tau(tau)
    return _back(torch.sign(T) * torch.clamp(T.abs() - tau, min=0), was_numpy)


def prox_l21(V, tau):
    r"""Column shrinkage, the prox of the :math:`\ell_{2,1}` norm (paper eq. 10).

    :math:`\|X\|_{2,1} = \sum_j \|X_{:,j}\|_2` sums the Euclidean norms of the *columns*,
    so whole columns (one input channel at one kernel position) become zero:

    .. math::

        \operatorname{prox}_{\tau\|\cdot\|_{2,1}}(V)_{:,j} =
        \max\!\Big(1 - \frac{\tau}{\|V_{:,j}\|_2},\, 0\Big)\, V_{:,j},

    with the zero column mapped to zero (no division by zero).

    Parameters
    ----------
    V : (n, d) array or tensor
    tau : float >= 0

    Returns
    -------
    (n, d) array or tensor, same kind as ``V``.
    """
    return prox_group_l21(V, tau, 1)  # a column is a block of one


def prox_group_l21(V, tau, group):
    r"""Group shrinkage over blocks of ``group`` adjacent columns: the prox of
    :math:`\sum_g \|X_{:,g}\|_F`, where :math:`g` runs over the column blocks
    :math:`\{g\,k, \dots, g\,k + k - 1\}` (k = ``group``).

    With PyTorch's channel-major lowering (``weight.reshape(n, -1)``) the k_h k_w columns of
    one input channel are adjacent, so ``group = k_h k_w`` makes a block one input channel:
    the penalty that zeroes whole channels, which a convolution can skip. The same two-case
    argument as for one column gives

    .. math::

        \operatorname{prox}(V)_{:,g} = \max\!\Big(1 - \frac{\tau}{\|V_{:,g}\|_F},\, 0\Big)\,
        V_{:,g} ,

    and ``group = 1`` is :func:`prox_l21`.

    Parameters
    ----------
    V : (n, d) array or tensor, d a multiple of ``group``
    tau : float >= 0
    group : int >= 1, columns per block

    Returns
    -------
    (n, d) array or tensor, same kind as ``V``.
    """
    T, was_numpy = as_float_tensor(V)
    _check_matrix(T)
    tau = _check_tau(tau)
    group = int(group)
    n, d = T.shape
    if group < 1 or d % group:
        raise ValueError(f"group must be a positive divisor of the {d} columns, got {group}")
    blocks = T.reshape(n, d // group, group)
    norms = torch.linalg.vector_norm(blocks, dim=(0, 2))
    # clamp the denominator: a zero block has scale 0 anyway, so no NaN appears
    scale = torch.clamp(1 - tau / torch.clamp(norms, min=torch.finfo(T.dtype).tiny), min=0)
    return _back((blocks * scale[None, :, None]).reshape(n, d), was_numpy)


def svt_factors(V, tau):
    r"""Singular value thresholding in factored form: ``(U, s, Vh)`` with
    :math:`\operatorname{prox}_{\tau\|\cdot\|_*}(V) = U \operatorname{diag}(s) V_h`,
    ``s`` the thresholded singular values :math:`(\sigma_i - \tau)_+ > 0` (descending).

    For a wide (or tall) matrix the singular pairs come from the eigendecomposition of the
    small Gram matrix :math:`VV^\top` (or :math:`V^\top V`), formed in float64: the cost is
    :math:`O(\min(n,d)^2 \max(n,d))` instead of a full SVD, and only pairs with
    :math:`\sigma_i > \tau` are kept, which are the well-conditioned ones.
    """
    T, _ = as_float_tensor(V)
    _check_matrix(T)
    tau = _check_tau(tau)
    wide = T.shape[0] <= T.shape[1]
    T64 = T.to(torch.float64)
    S = T64 if wide else T64.T  # S is wide: k x m, k <= m
    evals, Q = torch.linalg.eigh(S @ S.T)
    sigma = torch.sqrt(torch.clamp(evals, min=0)).flip(0)
    Q = Q.flip(1)
    keep = sigma > tau
    sigma, Q = sigma[keep], Q[:, keep]
    # right singular vectors of the kept pairs: Q^T S / sigma
    R = (Q.T @ S) / sigma[:, None]
    s = sigma - tau
    U, Vh = (Q, R) if wide else (R.T, Q.T)
    dt = T.dtype
    return U.to(dt), s.to(dt), Vh.to(dt)


def svt(V, tau):
    r"""Singular value thresholding, the prox of the nuclear norm (paper eq. 12).

    .. math::

        \operatorname{prox}_{\tau\|\cdot\|_*}(V) = U \operatorname{diag}\big((\sigma_i -
        \tau)_+\big) V_h, \qquad V = U \operatorname{diag}(\sigma) V_h .

    Parameters
    ----------
    V : (n, d) array or tensor
    tau : float >= 0

    Returns
    -------
    (n, d) array or tensor of rank at most the number of singular values above ``tau``.
    """
    T, was_numpy = as_float_tensor(V)
    _check_matrix(T)
    tau = _check_tau(tau)
    U, s, Vh = svt_factors(T, tau)
    if s.numel() == 0:
        return _back(torch.zeros_like(T), was_numpy)
    return _back((U * s) @ Vh, was_numpy)


def hard_threshold(V, k):
    r"""Projection onto the matrices with at most ``k`` nonzero entries (unstructured
    sparsity): keep the ``k`` entries of largest magnitude, zero the rest.

    .. math::

        P_k(V) = \arg\min_{\|X\|_0 \le k} \tfrac12\|X - V\|_F^2 ,

    since for a support S the best X is V on S, at distance :math:`\sum_{ij\notin S}
    V_{ij}^2`, smallest when S holds the largest :math:`|V_{ij}|`. The set is not convex:
    this is a projection (the prox of its indicator), not the prox of a norm; ties are broken
    by position.

    Parameters
    ----------
    V : (n, d) array or tensor
    k : int, 0 <= k

    Returns
    -------
    (n, d) array or tensor, same kind as ``V``, with at most ``k`` nonzeros.
    """
    T, was_numpy = as_float_tensor(V)
    _check_matrix(T)
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    k = min(int(k), T.numel())
    flat = T.reshape(-1)
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.topk(flat.abs(), k, sorted=False).indices] = True
    return _back((flat * keep).reshape(T.shape), was_numpy)


def project_n_m(V, n, m):
    r"""Projection onto N:M sparsity along the rows: in every block of ``m`` consecutive
    entries of a row (``m`` input features of one output), at most ``n`` are nonzero
    (``n, m = 2, 4``: the 2:4 pattern of sparse tensor cores).

    The blocks are disjoint and the distance is a sum over blocks, so each block keeps its
    ``n`` entries of largest magnitude (:func:`hard_threshold` block by block).

    Parameters
    ----------
    V : (rows, d) array or tensor, d a multiple of ``m``
    n, m : int, 0 <= n <= m

    Returns
    -------
    (rows, d) array or tensor, same kind as ``V``.
    """
    T, was_numpy = as_float_tensor(V)
    _check_matrix(T)
    n, m = _check_n_m(n, m)
    rows, d = T.shape
    if d % m:
        raise ValueError(f"N:M sparsity needs the {d} columns to be a multiple of m={m}")
    blocks = T.reshape(rows, d // m, m)
    keep = torch.zeros_like(blocks, dtype=torch.bool)
    keep.scatter_(2, torch.topk(blocks.abs(), n, dim=2, sorted=False).indices, True)
    return _back((blocks * keep).reshape(rows, d), was_numpy)


def _check_n_m(n, m):
    if any(isinstance(v, bool) or int(v) != v for v in (n, m)) or not 0 <= n <= m or m < 1:
        raise ValueError(f"N:M sparsity needs integers 0 <= n <= m, m >= 1; got {n}:{m}")
    return int(n), int(m)
