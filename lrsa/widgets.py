"""Small interactive explorers for notebooks (ipywidgets), that also render without one.

Every explorer first draws once, directly, at the default values, so a notebook executed
headless (nbclient, CI, a static viewer) still shows a figure; then, when ipywidgets is
installed, it displays sliders that redraw. ipywidgets and matplotlib are imported lazily.
"""

from __future__ import annotations

import warnings

import numpy as np

__all__ = ["explore", "plot_prox_effects", "prox_explorer"]


def _show():
    import matplotlib.pyplot as plt

    with warnings.catch_warnings():  # the Agg backend (tests, scripts) cannot show: fine
        warnings.simplefilter("ignore", UserWarning)
        plt.show()


def explore(fn, /, **sliders):
    """Draw ``fn(**defaults)`` once, then offer one slider per keyword.

    The first figure is drawn directly into the cell's output, so it shows in any render.
    Below it come the sliders and an output area that is filled only when a slider moves:
    nothing is written into a widget during headless execution, which keeps executors
    such as nbclient away from their Output-widget races.

    Parameters
    ----------
    fn : callable drawing a matplotlib figure from keyword arguments.
    **sliders : ``name=(min, max, step, value)`` for a float slider.

    Returns
    -------
    An ``ipywidgets.VBox`` (already displayed) whose children are the sliders, in the order
    given, and then the output area; or None when ipywidgets is not installed (the static
    figure is then all there is).
    """
    for name, spec in sliders.items():
        if len(spec) != 4:
            raise ValueError(f"slider {name!r} must be (min, max, step, value), got {spec!r}")

    def draw(**kw):
        fn(**kw)
        _show()

    draw(**{name: spec[3] for name, spec in sliders.items()})
    try:
        import ipywidgets
        from IPython.display import display
    except ImportError:
        return None
    controls = {name: ipywidgets.FloatSlider(min=lo, max=hi, step=step, value=value,
                                             continuous_update=False, description=name)
                for name, (lo, hi, step, value) in sliders.items()}
    out = ipywidgets.Output()

    def redraw(_change):
        with out:
            out.clear_output(wait=True)
            draw(**{name: w.value for name, w in controls.items()})

    for w in controls.values():
        w.observe(redraw, names="value")
    box = ipywidgets.VBox([*controls.values(), out])
    display(box)
    return box


def plot_prox_effects(V, tau, axes=None):
    r"""What the three proximal operators do to ``V`` at threshold ``tau``, in three panels:
    column norms before/after :func:`lrsa.prox_l21`, singular values before/after
    :func:`lrsa.svt`, sorted absolute entries before/after :func:`lrsa.soft_threshold`.

    Returns the three Axes.
    """
    from .prox import prox_l21, soft_threshold, svt
    from .utils import as_numpy
    from .viz import plot_column_norms, plot_singular_values

    V = as_numpy(V)
    if axes is None:
        import matplotlib.pyplot as plt

        _, axes = plt.subplots(1, 3, figsize=(13, 3.4), constrained_layout=True)
    ax_c, ax_s, ax_e = axes
    plot_column_norms(V, prox_l21(V, tau), ax=ax_c, tau=tau)
    ax_c.set_title(r"$\mathrm{prox}_{\tau\|\cdot\|_{2,1}}$: " + ax_c.get_title())
    plot_singular_values(V, svt(V, tau), ax=ax_s, tau=tau)
    ax_s.set_title(r"$\mathrm{prox}_{\tau\|\cdot\|_*}$: " + ax_s.get_title())
    before = np.sort(np.abs(V).ravel())[::-1]
    after = np.sort(np.abs(soft_threshold(V, tau)).ravel())[::-1]
    ax_e.plot(before, color="0.6", lw=1.2, label="before")
    ax_e.plot(after, color="C0", lw=1.2, label="after")
    ax_e.axhline(tau, color="C3", ls="--", lw=1, label=rf"$\tau = {tau:.3g}$")
    ax_e.set_xlabel("entry (sorted)")
    ax_e.set_ylabel(r"$|V_{ij}|$")
    ax_e.set_title(r"$\mathrm{prox}_{\tau\|\cdot\|_1}$: "
                   f"{int((before > 0).sum())} -> {int((after > 0).sum())} nonzero entries")
    ax_e.legend()
    return ax_c, ax_s, ax_e


def prox_explorer(V, tau=None, tau_max=None, step=None):
    r""":func:`plot_prox_effects` with a slider for ``tau``.

    Defaults: ``tau_max`` the largest singular value of ``V``, where all three operators
    return 0 (:math:`|V_{ij}| \le \|V_{:,j}\|_2 \le \sigma_1(V)`); ``tau`` half the median
    column norm, where each of the three panels still shows a change; 100 steps.
    """
    V = np.asarray(V.detach().cpu() if hasattr(V, "detach") else V, dtype=float)
    if tau_max is None:
        tau_max = float(np.linalg.norm(V, 2))
    if tau is None:
        tau = 0.5 * float(np.median(np.linalg.norm(V, axis=0)))
    if step is None:
        step = tau_max / 100
    return explore(lambda tau: plot_prox_effects(V, tau), tau=(0.0, tau_max, step, tau))
