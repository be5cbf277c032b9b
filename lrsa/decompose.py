r"""Sparse + low-rank under a size, with the sparse part on single weights (unstructured or
N:M), fitted to a layer's outputs: the form the 2025 transformer methods use.

For inputs with second moment :math:`G = XX^\top/N` and the layer's best dense map
:math:`W_\star` (its own weight, or the least-squares fit of its targets), the output error
of :math:`A + UV` is

.. math::

    \frac1N\|(W_\star - A - UV)X\|_F^2 = \operatorname{tr}\big((W_\star - A - UV)\,G\,
    (W_\star - A - UV)^\top\big) = \|(W_\star - A - UV)L\|_F^2,\qquad G = LL^\top,

minimized over A in a sparsity set :math:`\mathcal S` (at most k nonzeros, or N:M) and rank
r. Two blocks, each solved as well as it can be:

* **low-rank**: with A fixed the problem is a weighted low-rank approximation with the
  closed form :math:`UV = [\,(W_\star - A)L\,]_r L^{-1}` (truncated SVD in the whitened
  space, reduced-rank regression's solution);
* **sparse**: with UV fixed, a support is chosen and A is the exact least-squares fit on
  it, row by row: :math:`a_S = (t\,G_{:,S})\,G_{SS}^{-1}` for the row t of
  :math:`T = W_\star - UV`. Two supports are tried and the one with the smaller error
  kept: one projected gradient step :math:`P_{\mathcal S}(A + \eta(T - A)G)`,
  :math:`\eta = 1/\lambda_{\max}(G)` (it minimizes a quadratic upper bound that touches
  the objective at A, so it never increases it), and the largest
  :math:`|T_{ij}|\,G_{jj}^{1/2}` (OATS's and Wanda's saliency, the exact choice were G
  diagonal).

So :func:`fit_sparse_low_rank` never increases the error from one round to the next; the
problem is not convex (neither set is), so it finds a local minimum.
:func:`oats` is OATS (Zhang and Papyan, ICLR 2025): the same alternation with G replaced
by its diagonal (W scaled by the inputs' root mean squares) and the sparse step a hard
threshold without the refit.
"""

from __future__ import annotations

import math

import torch

from .prox import hard_threshold, project_n_m
from .objective import parse_n_m

__all__ = ["entry_split", "entry_storage", "fit_sparse_low_rank", "nonzeros_within", "oats",
           "output_error", "project"]

#: bits of a column index in the unstructured (CSR) format: d <= 65,536 inputs per row
INDEX_BITS = 16
WORD_BITS = 32  # the stored weights are float32


def entry_storage(sparsity, nonzeros, n):
    """Stored size, in float32 words, of a sparse A with ``nonzeros`` entries and ``n`` rows.

    ``"unstructured"``: compressed sparse rows, each value with a 16-bit column index
    (1.5 words) and n + 1 row offsets of one word. ``"N:M"``: each kept value with a
    ceil(log2 M)-bit position in its block (2 bits for 2:4, the sparse tensor-core format),
    1 + 2/32 words."""
    if nonzeros == 0:
        return 0.0
    if sparsity == "unstructured":
        return nonzeros * (1 + INDEX_BITS / WORD_BITS) + (n + 1)
    _, m = parse_n_m(sparsity)
    return nonzeros * (1 + math.ceil(math.log2(m)) / WORD_BITS)


def nonzeros_within(sparsity, words, n, d):
    """The most nonzeros of A that ``words`` of storage pay for (:func:`entry_storage`);
    for N:M, all of the pattern's n d N/M entries or none."""
    if sparsity == "unstructured":
        return max(0, min(n * d, int((words - (n + 1)) / (1 + INDEX_BITS / WORD_BITS))))
    k, m = parse_n_m(sparsity)
    full = n * d * k // m
    return full if entry_storage(sparsity, full, n) <= words else 0


def entry_split(sparsity, words, share, n, d):
    """(nonzeros of A, rank of B) spending ``words`` of storage on an n x d layer with the
    share ``share`` of it offered to A (:func:`nonzeros_within`) and what A leaves to the
    rank (at most min(n, d))."""
    k = nonzeros_within(sparsity, share * words, n, d) if share else 0
    return k, max(0, min(n, d, int((words - entry_storage(sparsity, k, n)) // (n + d))))


def project(sparsity, V, nonzeros):
    """The projection of V onto the sparsity set: the ``nonzeros`` largest entries
    (unstructured) or the N:M pattern (``nonzeros`` then only says whether A is empty)."""
    if nonzeros == 0:
        return torch.zeros_like(V)
    if sparsity == "unstructured":
        return hard_threshold(V, nonzeros)
    return project_n_m(V, *parse_n_m(sparsity))


def output_error(W_star, G, A, U, V):
    """:math:`\\operatorname{tr}((W_\\star - A - UV) G (W_\\star - A - UV)^\\top)`."""
    return _metric_error(W_star - A - U @ V, G)


def _metric_error(R, G):
    """tr(R G R^T), in float64."""
    R = R.double()
    return float(((R @ G.double()) * R).sum())


def _whitener(G):
    """L with L L^T = G (a small ridge keeps it invertible) and the step 1 / lambda_max(G)."""
    G = G.double()
    d = G.shape[0]
    ridge = 1e-8 * max(float(torch.trace(G)) / d, 1e-30)
    L = torch.linalg.cholesky(G + ridge * torch.eye(d, dtype=G.dtype, device=G.device))
    return L, 1.0 / float(torch.linalg.eigvalsh(G)[-1].clamp_min(1e-30))


def _low_rank(T, L, rank):
    """The rank-``rank`` UV minimizing ||(T - UV) L||_F: truncated SVD of T L, mapped back
    by L^{-1}; balanced factors."""
    n, d = T.shape
    if rank == 0:
        return T.new_zeros(n, 0), T.new_zeros(0, d)
    P, s, Qh = torch.linalg.svd(T @ L, full_matrices=False)
    root = s[:rank].sqrt()
    V = torch.linalg.solve_triangular(L, Qh[:rank], upper=False, left=False)  # V L = Qh_r
    return P[:, :rank] * root, root[:, None] * V


def _refit_support(T, G, A):
    """Row by row, the least-squares fit of T on A's support: a_S = (t G[:, S]) G[S, S]^{-1}
    (rows padded to the longest support with identity rows and zero targets)."""
    n, d = T.shape
    mask = A != 0
    counts = mask.sum(1)
    s = int(counts.max()) if n else 0
    if s == 0:
        return torch.zeros_like(T)
    # each row's support first, then other (distinct) columns as padding, whose
    # coefficients are forced to 0: no column appears twice in a row
    idx = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :s]
    valid = torch.arange(s, device=T.device)[None, :] < counts[:, None]
    rhs = torch.gather(T @ G, 1, idx) * valid
    sub = G[idx[:, :, None], idx[:, None, :]] * (valid[:, :, None] & valid[:, None, :])
    sub = sub + torch.diag_embed((~valid).to(G.dtype))
    sub = sub + 1e-10 * max(float(torch.trace(G)) / d, 1e-30) * torch.eye(
        s, dtype=G.dtype, device=G.device)
    coef = torch.linalg.solve(sub, rhs.unsqueeze(-1)).squeeze(-1) * valid
    out = torch.zeros_like(T)
    return out.scatter_(1, idx, coef)


def _sparse_step(T, G, A, step, root, sparsity, nonzeros):
    """The sparse block with U V fixed: the exact fit on the better of two supports, the
    projected gradient step's (which cannot raise the error) and the largest
    :math:`|T_{ij}| G_{jj}^{1/2}` (the exact choice were G diagonal; it moves the support
    further where G is ill-conditioned and the gradient step is short)."""
    fits = [_refit_support(T, G, project(sparsity, V, nonzeros))
            for V in (A + step * (T - A) @ G, T * root)]
    errors = [_metric_error(T - F, G) for F in fits]
    return fits[errors.index(min(errors))]


def fit_sparse_low_rank(W_star, G, rank, sparsity, nonzeros, *, rounds=20, callback=None):
    """A (in the sparsity set) + U V (rank ``rank``) lowering the output error
    :func:`output_error` by the alternation in the module docstring, started from
    :func:`oats`'s solution (from A = 0 it settles in worse local minima on small
    random layers), so its error is never above OATS's.

    Parameters
    ----------
    W_star : (n, d) tensor, the dense map to approximate.
    G : (d, d) tensor, the inputs' second moment X X^T / N.
    rank : int >= 0.
    sparsity : "unstructured" or "N:M" (e.g. "2:4").
    nonzeros : int, A's budget (unstructured); for N:M, 0 (no A) or anything else (the
        pattern).
    rounds : alternations.
    callback : ``callback(round, error)`` after each round.

    Returns
    -------
    (A, U, V): (n, d), (n, r), (r, d) in W_star's dtype.
    """
    dt = W_star.dtype
    W, G = W_star.double(), G.double()
    L, step = _whitener(G)
    A, U, V = oats(W, G, rank, sparsity, nonzeros, rounds=rounds)
    root = torch.diagonal(G).clamp_min(1e-30).sqrt()
    for k in range(int(rounds)):
        T = W - U @ V
        if nonzeros:
            A = _sparse_step(T, G, A, step, root, sparsity, nonzeros)
        U, V = _low_rank(W - A, L, rank)
        if callback is not None:
            callback(k, output_error(W, G, A, U, V))
        if not nonzeros:
            break
    return A.to(dt), U.to(dt), V.to(dt)


def oats(W_star, G, rank, sparsity, nonzeros, *, rounds=20):
    """OATS (Zhang and Papyan, "OATS: Outlier-Aware Pruning Through Sparse and Low Rank
    Decomposition", ICLR 2025): with :math:`D = \\operatorname{diag}(G)^{1/2}`, alternate
    :math:`L \\leftarrow [W D - S]_r` (truncated SVD) and
    :math:`S \\leftarrow P_{\\mathcal S}(W D - L)` (hard threshold), from S = 0, and return
    :math:`S D^{-1}, L D^{-1}`. The output error it lowers is the diagonal part of G's
    (:func:`fit_sparse_low_rank` uses all of G). Arguments as there; returns (A, U, V)."""
    dt = W_star.dtype
    W = W_star.double()
    D = torch.diagonal(G.double()).clamp_min(1e-30).sqrt()
    S = torch.zeros_like(W)
    U = W.new_zeros(W.shape[0], 0)
    Vd = W.new_zeros(0, W.shape[1])
    for _ in range(int(rounds)):
        P, s, Qh = torch.linalg.svd(W * D - S, full_matrices=False)
        root = s[:rank].sqrt()
        U, Vd = P[:, :rank] * root, root[:, None] * Qh[:rank]
        S = project(sparsity, W * D - U @ Vd, nonzeros)
        if not nonzeros:
            break
    return (S / D).to(dt), U.to(dt), (Vd / D).to(dt)
