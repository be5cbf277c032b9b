r"""One live figure per interactive cell, and a static version where no widget front-end runs.

:func:`interact` turns a drawing function into an :class:`Interactive`: sliders (and choice
sliders) above **one** figure, redrawn in place when a control moves. The figure is an
``ipywidgets.Image`` holding the rendered PNG, so nothing is ever appended below a stale copy,
and no Output widget has to capture anything (JupyterLab, VS Code and the classic notebook
show it alike; headless executors such as nbclient have nothing to race on).

Where no widget front-end runs (nbconvert HTML, the docs site, CI, an untrusted notebook in
JupyterLab) the same display shows a **static small-multiples figure** instead: the drawing
repeated over the range of each control, the others held at their defaults. Both travel in
one MIME bundle; the front-end picks the richest it can render.

ipywidgets and matplotlib are imported lazily; without ipywidgets the static figure is all
there is.
"""

from __future__ import annotations

import base64
import io
import warnings
from dataclasses import dataclass

import numpy as np

__all__ = ["Choice", "Interactive", "Slider", "interact", "plot_prox_effects",
           "prox_explorer"]

STATIC_DPI = 72  # the small multiples stack several full figures: keep saved notebooks small
LIVE_DPI = 90


@dataclass(frozen=True)
class Slider:
    """A float slider from ``low`` to ``high`` starting at ``value``.

    ``log=True`` spaces it geometrically (``ipywidgets.FloatLogSlider``; ``step`` is then in
    decades). ``static`` lists the values the static figure shows (default: low, value,
    high).
    """

    low: float
    high: float
    value: float
    step: float | None = None
    label: str | None = None
    log: bool = False
    static: tuple | None = None

    def __post_init__(self):
        if not self.low <= self.value <= self.high:
            raise ValueError(f"slider value {self.value} lies outside [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log slider needs low > 0, got {self.low}")

    @property
    def start(self):
        return self.value

    def static_values(self):
        return tuple(self.static) if self.static is not None else (self.low, self.value,
                                                                   self.high)

    def widget(self, name):
        import ipywidgets

        common = dict(value=self.value, description=self.label or name,
                      continuous_update=False, readout_format=".3g",
                      style={"description_width": "initial"})
        if self.log:
            lo, hi = np.log10(self.low), np.log10(self.high)
            return ipywidgets.FloatLogSlider(min=lo, max=hi, step=self.step or (hi - lo) / 100,
                                             base=10, **common)
        return ipywidgets.FloatSlider(min=self.low, max=self.high,
                                      step=self.step or (self.high - self.low) / 100, **common)


@dataclass(frozen=True)
class Choice:
    """A selection slider over ``options`` (values, or ``(label, value)`` pairs), starting at
    ``value`` (default: the first). The static figure shows every option unless ``static``
    names some."""

    options: tuple
    value: object = None
    label: str | None = None
    static: tuple | None = None

    def __post_init__(self):
        if not self.options:
            raise ValueError("a Choice needs at least one option")
        values = self.values()
        if self.value is not None and self.value not in values:
            raise ValueError(f"choice value {self.value!r} is not one of {values!r}")

    def pairs(self):
        return [o if isinstance(o, tuple) and len(o) == 2 else (f"{o}", o)
                for o in self.options]

    def values(self):
        return [v for _, v in self.pairs()]

    @property
    def start(self):
        return self.values()[0] if self.value is None else self.value

    def static_values(self):
        return tuple(self.static) if self.static is not None else tuple(self.values())

    def widget(self, name):
        import ipywidgets

        return ipywidgets.SelectionSlider(options=self.pairs(), value=self.start,
                                          description=self.label or name,
                                          continuous_update=False,
                                          style={"description_width": "initial"})


def _render_png(draw, values, dpi):
    """Call ``draw(**values)`` on a fresh figure and return that figure as PNG bytes."""
    import matplotlib.pyplot as plt

    before = set(plt.get_fignums())
    with warnings.catch_warnings():  # tight layouts on tiny panels warn: harmless here
        warnings.simplefilter("ignore", UserWarning)
        draw(**values)
        new = [n for n in plt.get_fignums() if n not in before]
        if not new:
            raise ValueError("the drawing function drew no new matplotlib figure")
        buffer = io.BytesIO()
        plt.figure(new[-1]).savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    for n in new:
        plt.close(n)
    return buffer.getvalue()


def _caption(values, controls):
    """``"label = value, ..."`` with each Choice's own label for its value."""
    def shown(name, v):
        c = controls[name]
        if isinstance(c, Choice):
            return next(label for label, value in c.pairs() if value == v)
        return f"{v:.3g}"

    return ",  ".join(f"{controls[k].label or k} = {shown(k, v)}" for k, v in values.items())


class Interactive:
    """A drawing function with its controls: one live figure, or a static small-multiples
    figure where widgets cannot run. Build it with :func:`interact`.

    Attributes
    ----------
    controls : dict of name -> :class:`Slider` or :class:`Choice`
    values : dict of name -> the current value of each control
    panels : list of dict, the control values the static figure shows, in order
    widgets : dict of name -> ipywidgets control, or None without ipywidgets
    image : ipywidgets.Image holding the live figure (PNG), or None without ipywidgets
    message : ipywidgets.HTML above the figure: empty, or why the last redraw failed (the
        figure then keeps its last good state)
    box : the ipywidgets.VBox (controls, message, figure), or None without ipywidgets
    """

    def __init__(self, draw, controls, max_panels=8):
        if not callable(draw):
            raise TypeError(f"draw must be callable, got {type(draw).__name__}")
        if not controls:
            raise ValueError("interact needs at least one control")
        for name, control in controls.items():
            if not isinstance(control, (Slider, Choice)):
                raise TypeError(f"control {name!r} must be a Slider or a Choice, "
                                f"got {type(control).__name__}")
        self.draw, self.controls = draw, dict(controls)
        self.values = {name: c.start for name, c in self.controls.items()}
        self.panels = self._static_panels(max_panels)
        self.widgets = self.image = self.message = self.box = None
        self._static_png = None
        try:
            import ipywidgets
        except ImportError:
            return
        self.widgets = {name: c.widget(name) for name, c in self.controls.items()}
        self.image = ipywidgets.Image(value=self.render(), format="png",
                                      layout=ipywidgets.Layout(max_width="100%"))
        self.message = ipywidgets.HTML()
        for w in self.widgets.values():
            w.observe(self._on_change, names="value")
        self.box = ipywidgets.VBox([ipywidgets.HBox(list(self.widgets.values())), self.message,
                                    self.image])

    def _static_panels(self, max_panels):
        """The defaults, then each control through its static values with the others at
        their defaults (at most ``max_panels``)."""
        panels = [dict(self.values)]
        for name, control in self.controls.items():
            for v in control.static_values():
                p = {**self.values, name: v}
                if p not in panels:
                    panels.append(p)
        return panels[:max_panels]

    def _on_change(self, _change):
        self.values = {name: w.value for name, w in self.widgets.items()}
        try:
            self.image.value = self.render()
            self.message.value = ""
        except Exception as e:  # noqa: BLE001 -- a callback's error is otherwise invisible
            import html

            self.message.value = (f"<span style='color:#b00'>could not redraw at "
                                  f"{html.escape(repr(self.values))}: "
                                  f"{html.escape(type(e).__name__)}: {html.escape(str(e))}"
                                  "</span>")

    def render(self, **values):
        """The figure at ``values`` (default: the current ones) as PNG bytes."""
        return _render_png(self.draw, {**self.values, **values}, LIVE_DPI)

    def static_png(self):
        """The small-multiples figure as PNG bytes (computed once)."""
        if self._static_png is None:
            import matplotlib.image as mpimg
            import matplotlib.pyplot as plt

            images = [mpimg.imread(io.BytesIO(_render_png(self.draw, p, STATIC_DPI)))
                      for p in self.panels]
            width = max(im.shape[1] for im in images) / STATIC_DPI
            heights = [im.shape[0] / STATIC_DPI + 0.35 for im in images]
            fig, axes = plt.subplots(len(images), 1, figsize=(width, sum(heights)),
                                     gridspec_kw={"height_ratios": heights}, squeeze=False,
                                     layout="constrained")
            for ax, im, p in zip(axes[:, 0], images, self.panels):
                ax.imshow(im)
                ax.set_axis_off()
                ax.set_title(_caption(p, self.controls), loc="left", fontsize=11)
            fig.suptitle("Static version of the interactive figure (no widget front-end): "
                         "one row per setting", fontsize=11, x=0.01, ha="left")
            buffer = io.BytesIO()
            fig.savefig(buffer, format="png", dpi=STATIC_DPI, bbox_inches="tight")
            plt.close(fig)
            self._static_png = buffer.getvalue()
        return self._static_png

    def _repr_mimebundle_(self, include=None, exclude=None):
        labels = ", ".join(c.label or n for n, c in self.controls.items())
        bundle = {"image/png": base64.b64encode(self.static_png()).decode("ascii"),
                  "text/plain": f"<interactive figure: {labels}; {len(self.panels)} "
                                "settings shown statically>"}
        if self.box is not None:
            bundle.update({k: v for k, v in self.box._repr_mimebundle_().items()
                           if k != "text/plain"})
        return bundle

    def __repr__(self):
        return f"Interactive({', '.join(self.controls)}; values {self.values})"


def interact(draw, /, *, max_panels=8, **controls):
    r"""One live figure of ``draw(**values)`` with a control per keyword.

    Parameters
    ----------
    draw : callable
        Draws a new matplotlib figure (``plt.subplots`` inside) from keyword arguments named
        as the controls. It is called once at creation, once per control move, and once per
        panel of the static figure when the display is rendered.
    max_panels : int
        The most settings the static figure shows.
    **controls : :class:`Slider` or :class:`Choice`

    Returns
    -------
    Interactive
        Display it (the last expression of a cell, or ``IPython.display.display``): a widget
        front-end shows the controls above one live figure; any other renderer shows the
        static small multiples.

    Examples
    --------
    >>> widgets.interact(lambda tau: plot_prox_effects(V, tau),
    ...                  tau=Slider(0.0, 2.0, 0.5))                    # doctest: +SKIP
    """
    return Interactive(draw, controls, max_panels=max_panels)


def plot_prox_effects(V, tau, axes=None):
    r"""What the three proximal operators do to ``V`` at threshold ``tau``, in three panels:
    column norms before/after :func:`lrsa.prox.prox_l21`, singular values before/after
    :func:`lrsa.prox.svt`, sorted absolute entries before/after :func:`lrsa.prox.soft_threshold`.

    Returns the three Axes.
    """
    from ..prox import prox_l21, soft_threshold, svt
    from ..utils import as_numpy
    from ..viz import plot_column_norms, plot_singular_values

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


def prox_explorer(V, tau=None, tau_max=None):
    r""":func:`plot_prox_effects` with a slider for ``tau``.

    Defaults: ``tau_max`` the largest singular value of ``V``, where all three operators
    return 0 (:math:`|V_{ij}| \le \|V_{:,j}\|_2 \le \sigma_1(V)`); ``tau`` half the median
    column norm, where each of the three panels still shows a change. The static figure
    shows a quarter of the default, the default and ``tau_max`` / 2.
    """
    from ..utils import as_numpy

    V = np.asarray(as_numpy(V), dtype=float)
    if tau_max is None:
        tau_max = float(np.linalg.norm(V, 2))
    if tau is None:
        tau = 0.5 * float(np.median(np.linalg.norm(V, axis=0)))
    return interact(lambda tau: plot_prox_effects(V, tau),
                    tau=Slider(0.0, tau_max, tau, label="τ", static=(tau / 4, tau, tau_max / 2)))

