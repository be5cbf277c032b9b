r"""Proximal operators: the leaves of the solver.

One convention throughout lrsa:

.. math::

    \operatorname{prox}_{\tau f}(V) = \arg\min_X \; \tau f(X) + \tfrac12 \|X - V\|_F^2 .

Every operator accepts a NumPy array or a torch tensor (any device) and returns the same
kind, dtype and device. They are written once, against the Python array API standard
(``array_api_compat`` gives NumPy and torch one namespace), so this module runs where torch
is not installed (JupyterLite, a teaching server with NumPy only).
"""

from __future__ import annotations


from .utils import check_floating, check_number

__all__ = ["hard_threshold", "project_n_m", "prox_l21", "prox_group_l21", "svt", "svt_factors",
           "soft_threshold"]


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
    xp = check_floating(V)
    tau = check_number("tau", tau, allow_inf=True)  # inf: the prox is 0
    return xp.sign(V) * xp.clip(xp.abs(V) - tau, min=0)


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
    xp = check_floating(V)
    _check_matrix(V)
    tau = check_number("tau", tau, allow_inf=True)  # inf: the prox is 0
    group = int(group)
    n, d = V.shape
    if group < 1 or d % group:
        raise ValueError(f"group must be a positive divisor of the {d} columns, got {group}")
    blocks = xp.reshape(V, (n, d // group, group))
    norms = xp.linalg.vector_norm(blocks, axis=(0, 2))
    # a block with norm <= tau becomes 0; dividing only by norms > tau >= 0 keeps zero blocks
    # and tau = inf free of NaN and overflow
    shrunk = norms > tau
    scale = xp.where(shrunk, 1 - tau / xp.where(shrunk, norms, xp.ones_like(norms)),
                     xp.zeros_like(norms))
    return xp.reshape(blocks * scale[None, :, None], (n, d))


def svt_factors(V, tau):
    r"""Singular value thresholding in factored form: ``(U, s, Vh)`` with
    :math:`\operatorname{prox}_{\tau\|\cdot\|_*}(V) = U \operatorname{diag}(s) V_h`,
    ``s`` the thresholded singular values :math:`(\sigma_i - \tau)_+ > 0` (descending).

    For a wide (or tall) matrix the singular pairs come from the eigendecomposition of the
    small Gram matrix :math:`VV^\top` (or :math:`V^\top V`), formed in float64: the cost is
    :math:`O(\min(n,d)^2 \max(n,d))` instead of a full SVD, and only pairs with
    :math:`\sigma_i > \tau` are kept, which are the well-conditioned ones.
    """
    xp = check_floating(V)
    _check_matrix(V)
    tau = check_number("tau", tau, allow_inf=True)  # inf: the prox is 0
    wide = V.shape[0] <= V.shape[1]
    V64 = xp.astype(V, xp.float64)
    S = V64 if wide else V64.T  # S is wide: k x m, k <= m
    evals, Q = xp.linalg.eigh(S @ S.T)
    sigma = xp.flip(xp.sqrt(xp.clip(evals, min=0)), axis=0)  # descending
    kept = int(xp.sum(sigma > tau))  # a leading block, since sigma descends
    sigma, Q = sigma[:kept], xp.flip(Q, axis=1)[:, :kept]
    # right singular vectors of the kept pairs: Q^T S / sigma
    R = (Q.T @ S) / sigma[:, None]
    s = sigma - tau
    U, Vh = (Q, R) if wide else (R.T, Q.T)
    return xp.astype(U, V.dtype), xp.astype(s, V.dtype), xp.astype(Vh, V.dtype)


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
    xp = check_floating(V)
    _check_matrix(V)
    U, s, Vh = svt_factors(V, tau)
    if s.shape[0] == 0:
        return xp.zeros_like(V)
    return (U * s) @ Vh


def hard_threshold(V, k):
    r"""Projection onto the matrices with at most ``k`` nonzero entries (unstructured
    sparsity): keep the ``k`` entries of largest magnitude, zero the rest.

    .. math::

        P_k(V) = \arg\min_{\|X\|_0 \le k} \tfrac12\|X - V\|_F^2 ,

    since for a support S the best X is V on S, at distance :math:`\sum_{ij\notin S}
    V_{ij}^2`, smallest when S holds the largest :math:`|V_{ij}|`. The set is not convex:
    this is a projection (the prox of its indicator), not the prox of a norm; among equal
    magnitudes the earlier entry (row-major order) is kept.

    Parameters
    ----------
    V : (n, d) array or tensor
    k : int, 0 <= k

    Returns
    -------
    (n, d) array or tensor, same kind as ``V``, with at most ``k`` nonzeros.
    """
    xp = check_floating(V)
    _check_matrix(V)
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k must be an integer >= 0, got {k!r}")
    flat = xp.reshape(V, (-1,))
    return xp.reshape(_keep_largest(xp, flat, int(k), axis=0), V.shape)


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
    xp = check_floating(V)
    _check_matrix(V)
    n, m = _check_n_m(n, m)
    rows, d = V.shape
    if d % m:
        raise ValueError(f"N:M sparsity needs the {d} columns to be a multiple of m={m}")
    blocks = xp.reshape(V, (rows, d // m, m))
    return xp.reshape(_keep_largest(xp, blocks, n, axis=2), (rows, d))


def _keep_largest(xp, V, k, axis):
    """V with all but the k largest magnitudes along ``axis`` set to 0; among equal
    magnitudes the earlier entry is kept (a stable sort)."""
    order = xp.argsort(xp.abs(V), axis=axis, descending=True, stable=True)
    rank = xp.argsort(order, axis=axis, stable=True)  # each entry's place in that order
    return xp.where(rank < k, V, xp.zeros_like(V))


def _check_n_m(n, m):
    if any(isinstance(v, bool) or int(v) != v for v in (n, m)) or not 0 <= n <= m or m < 1:
        raise ValueError(f"N:M sparsity needs integers 0 <= n <= m, m >= 1; got {n}:{m}")
    return int(n), int(m)
