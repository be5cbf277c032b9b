r"""A slider explorer over a precomputed lambda grid (:func:`lrsa.experiments.lambda_grid`).

Moving a slider only looks a point up in the grid, so it answers instantly even for a
VGG-16 layer whose solves take a minute each. Headless use (nbclient, CI, a static viewer):
call :func:`plot_grid_point` once directly, then :func:`grid_sliders`; the sliders are
created only when ipywidgets is installed and draw into their own output area when moved.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["grid_point", "grid_sliders", "plot_grid_point"]


def _nearest(values, v):
    values = [float(x) for x in values]
    if v is None:
        return values[len(values) // 2]
    finite = [x for x in values if math.isfinite(x)]
    if not math.isfinite(float(v)):
        return float(v) if float(v) in values else max(values)
    return min(finite or values, key=lambda x: abs(math.log(x / v)) if x > 0 and v > 0
               else abs(x - v))


def grid_point(grid, frac=None, ratio=None):
    """The grid point nearest to (frac, ratio) (geometrically; None: the middle value)."""
    f, r = _nearest(grid["fracs"], frac), _nearest(grid["ratios"], ratio)
    for p in grid["points"]:
        if p["frac"] == f and p["ratio"] == r:
            return p
    raise KeyError(f"grid has no point ({f}, {r})")


def plot_grid_point(grid, frac=None, ratio=None, axes=None):
    """Three panels for one grid point: the CR(A), CR(B), CR(A+B) and error curves against
    frac at this ratio with the point marked; the column norms of A (sorted) and the
    singular values of B.

    Parameters
    ----------
    grid : dict from :func:`lrsa.experiments.lambda_grid`.
    frac, ratio : float; the nearest grid values are used.
    axes : three matplotlib Axes, or None for a new figure.

    Returns
    -------
    The three Axes.
    """
    from .viz import plot_tradeoff

    p = grid_point(grid, frac, ratio)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 3, figsize=(14, 3.6), constrained_layout=True)
    ax_cr, ax_a, ax_b = axes
    row = sorted((q for q in grid["points"] if q["ratio"] == p["ratio"]),
                 key=lambda q: q["frac"])
    fr = [q["frac"] for q in row]
    plot_tradeoff({"CR(A) %": (fr, [100 * q["cr_a"] for q in row]),
                   "CR(B) %": (fr, [100 * q["cr_b"] for q in row]),
                   "CR(A+B) %": (fr, [100 * q["cr"] for q in row]),
                   "rel. error %": (fr, [100 * q["rel_error"] for q in row])},
                  ax=ax_cr, xlabel=r"frac ($\lambda_1$ / gradient scale)", ylabel="%")
    ax_cr.set_xscale("log")
    ax_cr.minorticks_off()
    ax_cr.set_xticks(fr, [f"{v:g}" for v in fr])
    ax_cr.axvline(p["frac"], color="0.3", ls=":", lw=1)
    ax_cr.set_title(rf"{grid['layer']}: frac={p['frac']:g}, $\lambda_2/\lambda_1$={p['ratio']:g}")

    norms = np.sort(np.asarray(p["column_norms"], dtype=float))[::-1]
    ax_a.plot(np.arange(norms.size), norms, color="C0", lw=1.2)
    ax_a.set_xlabel("column of A (sorted)")
    ax_a.set_ylabel(r"$\|A_{:,j}\|_2$")
    ax_a.set_title(f"A: {p['nonzero_columns']} of {grid['d']} columns, "
                   f"CR(A) {100 * p['cr_a']:.1f}%")

    sv = np.asarray(p["singular_values"], dtype=float)
    if sv.size:
        ax_b.semilogy(np.arange(1, sv.size + 1), sv, "o-", ms=3, lw=1, color="C1")
    ax_b.set_xlim(0, min(grid["n"], grid["d"]) + 1)
    ax_b.set_xlabel("index $i$")
    ax_b.set_ylabel(r"$\sigma_i(B)$")
    ax_b.set_title(f"B: rank {p['rank']}, CR(B) {100 * p['cr_b']:.1f}%; "
                   f"CR(A+B) {100 * p['cr']:.1f}%, error {p['rel_error']:.3f}")
    return ax_cr, ax_a, ax_b


def grid_sliders(grid, update, frac=None, ratio=None):
    """Two selection sliders (frac, ratio) over the grid's values calling ``update(frac,
    ratio)`` into an output area when moved. Does not draw at creation: call ``update`` once
    yourself first, so headless runs show a figure.

    Returns
    -------
    The displayed ``ipywidgets.VBox``, or None when ipywidgets is not installed.
    """
    try:
        import ipywidgets
        from IPython.display import display
    except ImportError:
        return None
    f0, r0 = _nearest(grid["fracs"], frac), _nearest(grid["ratios"], ratio)
    s_frac = ipywidgets.SelectionSlider(options=[(f"{v:g}", v) for v in grid["fracs"]],
                                        value=f0, description="frac",
                                        continuous_update=False)
    s_ratio = ipywidgets.SelectionSlider(options=[(f"{v:g}", v) for v in grid["ratios"]],
                                         value=r0, description="lam2/lam1",
                                         continuous_update=False)
    out = ipywidgets.Output()

    def on_change(_change):
        with out:
            out.clear_output(wait=True)
            update(s_frac.value, s_ratio.value)

    s_frac.observe(on_change, names="value")
    s_ratio.observe(on_change, names="value")
    box = ipywidgets.VBox([ipywidgets.HBox([s_frac, s_ratio]), out])
    display(box)
    return box
