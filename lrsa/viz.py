r"""Plots for the solver and the proximal operators.

Every function draws on ``ax`` (a matplotlib Axes) when given, otherwise on a new figure,
and returns the Axes it drew on (:func:`plot_factors`: the pair of Axes). Inputs may be
NumPy arrays or torch tensors. matplotlib is imported inside the functions, so
``import lrsa`` does not pull it in.

Conventions as in the rest of lrsa: matrices are ``n x d`` (outputs x lowered inputs), the
:math:`\ell_{2,1}` norm runs over *columns*, iterations are numbered from 1.
"""

from __future__ import annotations

import numpy as np

from .utils import as_numpy

__all__ = ["column_norms", "plot_column_norms", "plot_singular_values", "plot_convergence",
           "plot_structure", "plot_iterate_norms", "plot_sparsity_pattern", "plot_factors",
           "plot_tradeoff"]

#: what plot_convergence calls each history key
_LABELS = {
    "objective": r"$|F_k - F_{\mathrm{final}}| \,/\, |F_{\mathrm{final}}|$",
    "primal_residual": r"primal residual $\|A+B-M\|/\max(\|A+B\|,\|M\|)$",
    "dual_residual": r"dual residual $\|M_{k+1}-M_k\|/\|M_{k+1}\|$",
}


def _matrix(x, name):
    x = as_numpy(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix, got shape {x.shape}")
    return x


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _integer_ticks(ax, axis="x"):
    """Index axes (columns, iterations, singular value number) get integer ticks only."""
    from matplotlib.ticker import MaxNLocator

    for a in axis:
        getattr(ax, f"{a}axis").set_major_locator(MaxNLocator(integer=True))


def _history(history):
    """Accept a LayerSolution (anything with ``.history``) or the history dict itself."""
    return getattr(history, "history", history)


def column_norms(M):
    """Euclidean norms of the columns of an ``n x d`` matrix (the terms of its l2,1 norm)."""
    return np.linalg.norm(_matrix(M, "M"), axis=0)


def _before_after(ax, x, before, after, tau, marker_after="o"):
    ax.plot(x, before, "o-", ms=3, lw=1, color="0.6", label="before")
    ax.plot(x, after, marker_after + "-", ms=3, lw=1, color="C0", label="after")
    if tau is not None:
        ax.axhline(tau, color="C3", ls="--", lw=1, label=rf"$\tau = {tau:.3g}$")
    ax.legend()


def plot_column_norms(before, after, ax=None, *, tau=None):
    r"""Column norms :math:`\|V_{:,j}\|_2` of ``before`` and ``after`` (two ``n x d`` matrices,
    e.g. ``V`` and ``prox_l21(V, tau)``), against the column index. ``tau`` draws the
    threshold. The lines' data are exactly the column norms."""
    b, a = column_norms(before), column_norms(after)
    if b.shape != a.shape:
        raise ValueError(f"before and after have {b.size} and {a.size} columns")
    ax = _axes(ax)
    _before_after(ax, np.arange(b.size), b, a, tau)
    ax.set_xlabel("column $j$")
    _integer_ticks(ax)
    ax.set_ylabel(r"column norm $\|V_{:,j}\|_2$")
    ax.set_title(f"column norms: {int((b > 0).sum())} -> {int((a > 0).sum())} nonzero")
    return ax


def plot_singular_values(before, after, ax=None, *, tau=None, rtol=1e-10):
    r"""Singular values (descending) of ``before`` and ``after``, log scale.

    Singular values at or below ``rtol`` times the largest one of ``before`` are round-off
    of exact zeros (an SVD of a rank-r matrix returns ~1e-16 for the rest): they are drawn
    as NaN (absent; zero cannot sit on a log axis) and not counted in the title's ranks."""
    b = np.linalg.svd(_matrix(before, "before"), compute_uv=False)
    a = np.linalg.svd(_matrix(after, "after"), compute_uv=False)
    eps = rtol * (b[0] if b.size else 0.0)
    rank_b, rank_a = int((b > eps).sum()), int((a > eps).sum())
    b, a = np.where(b > eps, b, np.nan), np.where(a > eps, a, np.nan)
    ax = _axes(ax)
    _before_after(ax, np.arange(1, b.size + 1), b, a, tau)
    ax.set_yscale("log")
    ax.set_xlabel("index $i$")
    _integer_ticks(ax)
    ax.set_ylabel(r"$\sigma_i$")
    ax.set_title(f"singular values: rank {rank_b} -> {rank_a}")
    return ax


def plot_convergence(history, keys=("objective", "primal_residual", "dual_residual"),
                     ax=None):
    r"""Semilogy of :func:`lrsa.solver.solve_layer`'s history per iteration.

    ``history`` is ``LayerSolution.history`` (or the LayerSolution). The residuals are drawn
    as recorded; the objective relative to its final value,
    :math:`|F_k - F_K| / |F_K|` (its last point is 0 and is masked on the log axis).
    """
    hist = _history(history)
    ax = _axes(ax)
    for key in keys:
        y = as_numpy(hist[key])
        if key == "objective":
            final = y[-1]
            y = np.abs(y - final) / max(abs(final), np.finfo(float).tiny)
        ax.plot(np.arange(1, y.size + 1), y, lw=1.2, label=_LABELS.get(key, key))
    ax.set_yscale("log", nonpositive="mask")
    ax.set_xlabel("iteration $k$")
    _integer_ticks(ax)
    ax.set_ylabel("relative value")
    ax.legend(fontsize="small")
    return ax


def plot_structure(history, ax=None):
    """Rank of B and number of nonzero columns of A per iteration (from the history of
    :func:`lrsa.solver.solve_layer`, or the LayerSolution)."""
    hist = _history(history)
    ax = _axes(ax)
    for key, label in (("rank", "rank of $B$"), ("nonzero_columns", "nonzero columns of $A$")):
        y = as_numpy(hist[key])
        ax.plot(np.arange(1, y.size + 1), y, drawstyle="steps-post", lw=1.2, label=label)
    ax.set_xlabel("iteration $k$")
    ax.set_ylabel("count")
    _integer_ticks(ax, "xy")
    ax.legend()
    return ax


def plot_iterate_norms(norms, ax=None):
    """Semilogy of iterate norms, one line per entry of ``{label: norms}`` (e.g. the output
    of :func:`lrsa.admm.chen_he_ye_yuan_iterates`), against the iteration 0, 1, ..."""
    ax = _axes(ax)
    for label, y in norms.items():
        y = as_numpy(y)
        ax.plot(np.arange(y.size), y, lw=1.2, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration $k$")
    ax.set_ylabel("norm of the iterate")
    _integer_ticks(ax)
    ax.legend()
    return ax


def _spy(M, ax, title, tol):
    from matplotlib.colors import ListedColormap

    mask = np.abs(M) > tol
    ax.imshow(mask, cmap=ListedColormap(["white", "tab:blue"]), vmin=0, vmax=1,
              interpolation="nearest", aspect="auto")
    ax.set_title(title)
    _integer_ticks(ax, "xy")
    return mask


def plot_sparsity_pattern(A, ax=None, *, tol=0.0, title=None):
    """Spy image of the entries of ``A`` with ``|A_ij| > tol``: blue nonzero, white zero
    (as the paper's Fig. 5c). The image array is the boolean mask."""
    A = _matrix(A, "A")
    ax = _axes(ax)
    if title is None:
        nz = int((np.abs(A) > tol).any(axis=0).sum())
        title = f"$A$: {nz} of {A.shape[1]} columns nonzero"
    _spy(A, ax, title, tol)
    ax.set_xlabel("column (input channel, kernel position)")
    ax.set_ylabel("row (filter)")
    return ax


def plot_factors(U, V, ax=None):
    """Heatmaps of the factors of ``B = U @ V`` (paper Fig. 5a, 5b): ``U`` is ``n x r``,
    ``V`` is ``r x d``, each on a diverging colour scale symmetric about 0 with a colorbar
    (the factors are dense: a spy image of them would be one solid block). ``ax`` is a pair
    of Axes (or None: a new figure with two panels); returns the pair ``(ax_U, ax_V)``. The
    image arrays are the factors themselves."""
    U, V = _matrix(U, "U"), _matrix(V, "V")
    if U.shape[1] != V.shape[0]:
        raise ValueError(f"U is {U.shape} and V is {V.shape}: inner dimensions differ")
    if ax is None:
        import matplotlib.pyplot as plt

        ratio = [max(U.shape[1], 1), max(V.shape[1], 1)]
        _, ax = plt.subplots(1, 2, gridspec_kw={"width_ratios": ratio},
                             figsize=(8, 3), constrained_layout=True)
    ax_u, ax_v = ax
    r = U.shape[1]
    for M, a, title, xlabel, ylabel in (
            (U, ax_u, f"$U$ ({U.shape[0]} x {r})", "factor $k$", "row (filter)"),
            (V, ax_v, f"$V$ ({r} x {V.shape[1]})", "column (input channel, kernel position)",
             "factor $k$")):
        lim = float(np.abs(M).max()) if M.size else 1.0
        im = a.imshow(M, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest",
                      aspect="auto")
        a.figure.colorbar(im, ax=a, label="value")
        a.set(title=title, xlabel=xlabel, ylabel=ylabel)
        _integer_ticks(a, "xy")
    return ax_u, ax_v


def plot_tradeoff(curves, ax=None, xlabel="compression rate (%)", ylabel="error"):
    """One marked line per entry of ``{label: (cr_list, err_list)}``, e.g. accuracy drop or
    reconstruction error against compression rate (paper Fig. 3, 4)."""
    ax = _axes(ax)
    for label, (x, y) in curves.items():
        x, y = as_numpy(x), as_numpy(y)
        if x.shape != y.shape:
            raise ValueError(f"{label!r}: {x.size} x values but {y.size} y values")
        ax.plot(x, y, "o-", ms=4, lw=1.2, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    return ax
