r"""A slider explorer over a precomputed lambda grid (:func:`lrsa.course.grids.lambda_grid`).

Moving a slider only looks a point up in the grid, so it answers instantly even for a
VGG-16 layer whose solves take a minute each. Each point is what :func:`lrsa.pipeline.compress` does
at those lambdas without a size target: the linear ADMM's structure sets the budget, and the
point shows the split chosen on held-out samples and refitted (ReLU: refined), not the ADMM's
minimizer. :func:`grid_explorer` builds the sliders and
their one live figure (:func:`lrsa.course.widgets.interact`), with a static version for renderers
without widgets.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["grid_explorer", "grid_point", "plot_grid_point"]


def _nearest(values, v):
    values = [float(x) for x in values]
    if v is None:
        return values[len(values) // 2]
    finite = [x for x in values if math.isfinite(x)]
    if not math.isfinite(float(v)):
        return float(v) if float(v) in values else max(values)
    return min(finite or values, key=lambda x: abs(math.log(x / v)) if x > 0 and v > 0
               else abs(x - v))


def grid_point(grid, relative_lam1=None, ratio=None):
    """The grid point nearest to (relative_lam1, ratio) (geometrically; None: the middle value)."""
    f, r = _nearest(grid["relative_lam1s"], relative_lam1), _nearest(grid["ratios"], ratio)
    for p in grid["points"]:
        if p["relative_lam1"] == f and p["ratio"] == r:
            return p
    raise KeyError(f"grid has no point ({f}, {r})")


def plot_grid_point(grid, relative_lam1=None, ratio=None, axes=None, label=None):
    """Three panels for one grid point: the CR(A), CR(B), CR(A+B) and error curves against
    relative_lam1 at this ratio with the point marked; the column norms of A (sorted) and the
    singular values of B.

    Parameters
    ----------
    grid : dict from :func:`lrsa.course.grids.lambda_grid`.
    relative_lam1, ratio : float; the nearest grid values are used.
    axes : three matplotlib Axes, or None for a new figure.
    label : str, optional
        The layer's name in the titles (default: its module name, ``grid["layer"]``).

    Returns
    -------
    The three Axes.
    """
    from ..viz import plot_tradeoff

    p = grid_point(grid, relative_lam1, ratio)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 3, figsize=(14, 3.6), constrained_layout=True)
    ax_size, ax_a, ax_b = axes
    row = sorted((q for q in grid["points"] if q["ratio"] == p["ratio"]),
                 key=lambda q: q["relative_lam1"])
    fr = [q["relative_lam1"] for q in row]
    plot_tradeoff({"size(A) %": (fr, [100 * q["size_a"] for q in row]),
                   "size(B) %": (fr, [100 * q["size_b"] for q in row]),
                   "size(A+B) %": (fr, [100 * q["size"] for q in row]),
                   "rel. error %": (fr, [100 * q["rel_error"] for q in row])},
                  ax=ax_size, xlabel=r"$\lambda_1 / s$ ($s$: the layer's gradient scale)",
                  ylabel="%")
    ax_size.set_xscale("log")
    ax_size.minorticks_off()
    ax_size.set_xticks(fr, [f"{v:g}" for v in fr])
    ax_size.axvline(p["relative_lam1"], color="0.3", ls=":", lw=1)
    ax_size.set_title(rf"{label or grid['layer']}: $\lambda_1/s$ = {p['relative_lam1']:g}, "
                    rf"$\lambda_2/\lambda_1$ = {p['ratio']:g}")

    norms = np.sort(np.asarray(p["column_norms"], dtype=float))[::-1]
    if norms.any():
        ax_a.plot(np.arange(norms.size), norms, color="C0", lw=1.2)
    else:  # a flat line at 0 would look like a plotting failure
        ax_a.text(0.5, 0.5, "A = 0: no column kept", ha="center", va="center",
                  transform=ax_a.transAxes, color="0.4")
        ax_a.set_xlim(0, norms.size)
    ax_a.set_xlabel("column of A (sorted)")
    ax_a.set_ylabel(r"$\|A_{:,j}\|_2$")
    ax_a.set_title(f"A: {p['nonzero_columns']} of {grid['d']} columns, "
                   f"size(A) {100 * p['size_a']:.1f}%")

    sv = np.asarray(p["singular_values"], dtype=float)
    sv = sv[sv > 0]
    if sv.size:
        ax_b.semilogy(np.arange(1, sv.size + 1), sv, "o-", ms=3, lw=1, color="C1")
    else:  # an empty log axis would look like a plotting failure
        ax_b.text(0.5, 0.5, "B = 0: no low-rank part\n(rank 0)", ha="center", va="center",
                  transform=ax_b.transAxes, color="0.4")
    ax_b.set_xlim(0, min(grid["n"], grid["d"]) + 1)
    ax_b.set_xlabel("index $i$")
    ax_b.set_ylabel(r"$\sigma_i(B)$")
    ax_b.set_title(f"B: rank {p['rank']}, size(B) {100 * p['size_b']:.1f}%; "
                   f"size(A+B) {100 * p['size']:.1f}%, error {p['rel_error']:.3f}")
    return ax_size, ax_a, ax_b


def grid_explorer(grid, relative_lam1=None, ratio=None, label=None):
    r"""One live :func:`plot_grid_point` figure with two sliders over the grid's values:
    :math:`\lambda_1/s` (``relative_lam1``; :math:`s` is the layer's gradient scale, the mean column
    norm of the data term's gradient at 0; with B = 0, A is empty from
    :math:`\lambda_1/s = \max_j\|C_{:,j}\|/\operatorname{mean}_j\|C_{:,j}\| \ge 1` on, the
    largest column norm over the mean) and :math:`\lambda_2/\lambda_1` (``ratio``; inf: no low-rank
    part). A move only looks a point up: instant even for layers whose solves take minutes.
    ``label`` names the layer in the titles.

    Returns
    -------
    :class:`lrsa.course.widgets.Interactive`; display it. Without a widget front-end it shows the
    grid points along each slider as small multiples.
    """
    from .widgets import Choice, interact

    f0, r0 = _nearest(grid["relative_lam1s"], relative_lam1), _nearest(grid["ratios"], ratio)
    relative_lam1s = [float(v) for v in grid["relative_lam1s"]]
    ends = tuple(dict.fromkeys((relative_lam1s[0], f0, relative_lam1s[-1])))
    return interact(lambda relative_lam1, ratio: plot_grid_point(grid, relative_lam1, ratio,
                                                                 label=label),
                    relative_lam1=Choice(tuple((f"{v:g}", v) for v in relative_lam1s), f0,
                                         label="λ1 / s", static=ends),
                    ratio=Choice(tuple((f"{v:g}", float(v)) for v in grid["ratios"]), r0,
                                 label="λ2 / λ1"))
