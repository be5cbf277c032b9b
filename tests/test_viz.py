"""lrsa.viz and lrsa.course.widgets: the plotted data are the inputs, axes are labelled and
scaled."""

import base64
import io
import subprocess
import sys

import numpy as np
import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lrsa import prox_l21, solve_layer, svt  # noqa: E402
from lrsa import viz  # noqa: E402
from lrsa.course import widgets  # noqa: E402
from lrsa.admm import chen_he_ye_yuan_iterates  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture
def V():
    return np.random.default_rng(0).standard_normal((6, 9))


@pytest.fixture(scope="module")
def solution():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((8, 120))
    W = rng.standard_normal((5, 2)) @ rng.standard_normal((2, 8))
    Y = W @ X + 0.1 * rng.standard_normal((5, 120))
    return solve_layer(X, Y, 0.05, 0.1, response="linear", max_iter=200)


def lines(ax):
    return [(line.get_xdata(), line.get_ydata()) for line in ax.get_lines()]


def test_import_lrsa_does_not_import_matplotlib():
    code = "import sys, lrsa, lrsa.viz, lrsa.course.widgets; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_column_norms_are_the_plotted_data(V):
    after = prox_l21(V, 2.0)
    _, ax = plt.subplots()
    assert viz.plot_column_norms(V, after, ax=ax, tau=2.0) is ax
    (xb, yb), (xa, ya), _ = lines(ax)
    np.testing.assert_array_equal(xb, np.arange(9))
    np.testing.assert_allclose(yb, np.linalg.norm(V, axis=0))
    np.testing.assert_allclose(ya, np.linalg.norm(after, axis=0))
    # column shrinkage: every norm drops by exactly tau or to zero
    np.testing.assert_allclose(ya, np.maximum(yb - 2.0, 0), atol=1e-12)
    assert ax.get_lines()[2].get_ydata()[0] == 2.0  # the threshold line
    assert ax.get_xlabel() and ax.get_ylabel()
    assert [t.get_text() for t in ax.get_legend().get_texts()][:2] == ["before", "after"]


def test_column_norms_accept_torch_and_new_figure(V):
    T = torch.from_numpy(V)
    ax = viz.plot_column_norms(T, prox_l21(T, 1.0))
    assert ax.figure is not None
    np.testing.assert_allclose(lines(ax)[0][1], np.linalg.norm(V, axis=0))
    with pytest.raises(ValueError):
        viz.plot_column_norms(V, V[:, :3])


def test_singular_values_log_scale(V):
    after = svt(V, 1.5)
    _, ax = plt.subplots()
    assert viz.plot_singular_values(V, after, ax=ax) is ax
    assert ax.get_yscale() == "log"
    (xb, yb), (_, ya) = lines(ax)
    np.testing.assert_array_equal(xb, np.arange(1, 7))
    s = np.linalg.svd(V, compute_uv=False)
    np.testing.assert_allclose(yb, s)
    kept = s > 1.5
    np.testing.assert_allclose(ya[kept], s[kept] - 1.5)
    assert np.isnan(ya[~kept]).all()  # exact zeros (round-off ~1e-16) are left out
    assert f"rank 6 -> {int(kept.sum())}" in ax.get_title()


def test_convergence_residuals_as_recorded_objective_relative(solution):
    h = solution.history
    _, ax = plt.subplots()
    assert viz.plot_convergence(h, ax=ax) is ax
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "iteration $k$"
    (x0, obj), (x1, pr), (_, du) = lines(ax)
    np.testing.assert_array_equal(x0, np.arange(1, len(h["objective"]) + 1))
    f = np.array(h["objective"])
    np.testing.assert_allclose(obj, np.abs(f - f[-1]) / abs(f[-1]))
    assert obj[-1] == 0
    np.testing.assert_allclose(pr, h["primal_residual"])
    np.testing.assert_allclose(du, h["dual_residual"])
    # a LayerSolution works too, and keys select the lines
    ax2 = viz.plot_convergence(solution, keys=("dual_residual",))
    assert len(ax2.get_lines()) == 1
    np.testing.assert_allclose(lines(ax2)[0][1], h["dual_residual"])


def test_structure(solution):
    _, ax = plt.subplots()
    assert viz.plot_structure(solution.history, ax=ax) is ax
    (_, rank), (_, nz) = lines(ax)
    np.testing.assert_array_equal(rank, solution.history["rank"])
    np.testing.assert_array_equal(nz, solution.history["nonzero_columns"])
    assert rank[-1] == solution.rank and nz[-1] == solution.nonzero_columns
    assert ax.get_lines()[0].get_drawstyle() == "steps-post"


def test_iterate_norms():
    norms = {"direct": chen_he_ye_yuan_iterates(50, correction=False),
             "corrected": chen_he_ye_yuan_iterates(50, correction=True)}
    _, ax = plt.subplots()
    assert viz.plot_iterate_norms(norms, ax=ax) is ax
    assert ax.get_yscale() == "log"
    for (x, y), n in zip(lines(ax), norms.values()):
        np.testing.assert_array_equal(x, np.arange(51))
        np.testing.assert_array_equal(y, n)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(norms)


def test_sparsity_pattern_is_the_nonzero_mask():
    A = np.zeros((4, 7))
    A[:, [1, 5]] = np.arange(8).reshape(4, 2) + 1.0
    A[2, 1] = 1e-9
    _, ax = plt.subplots()
    assert viz.plot_sparsity_pattern(A, ax=ax) is ax
    img = np.asarray(ax.get_images()[0].get_array())
    np.testing.assert_array_equal(img, A != 0)
    assert "2 of 7 columns" in ax.get_title()
    ax2 = viz.plot_sparsity_pattern(A, tol=1e-6)
    assert not np.asarray(ax2.get_images()[0].get_array())[2, 1]


def test_factors_two_panels():
    rng = np.random.default_rng(2)
    U, V = rng.standard_normal((5, 2)), rng.standard_normal((2, 8))
    V[:, 3] = 0
    _, axes = plt.subplots(1, 2)
    ax_u, ax_v = viz.plot_factors(U, V, ax=axes)
    assert ax_u is axes[0] and ax_v is axes[1]
    np.testing.assert_array_equal(ax_u.get_images()[0].get_array(), U)
    np.testing.assert_array_equal(ax_v.get_images()[0].get_array(), V)
    assert ax_u.get_title() == "$U$ (5 x 2)" and ax_v.get_title() == "$V$ (2 x 8)"
    lo, hi = ax_u.get_images()[0].get_clim()
    assert lo == -hi == -np.abs(U).max()  # symmetric about 0: the sign reads off the colour
    assert all(a.get_xlabel() and a.get_ylabel() for a in (ax_u, ax_v))
    new = viz.plot_factors(U, V)
    assert len(new) == 2 and new[0].figure is new[1].figure
    with pytest.raises(ValueError):
        viz.plot_factors(U, V.T)


def test_tradeoff():
    curves = {"linear": ([10, 20, 40], [3.0, 1.5, 0.5]), "relu": ([10, 20, 40], [2.0, 1.0, 0.2])}
    _, ax = plt.subplots()
    assert viz.plot_tradeoff(curves, ax=ax, xlabel="CR (%)", ylabel="accuracy drop") is ax
    for (x, y), (cr, err) in zip(lines(ax), curves.values()):
        np.testing.assert_array_equal(x, cr)
        np.testing.assert_array_equal(y, err)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("CR (%)", "accuracy drop")
    with pytest.raises(ValueError):
        viz.plot_tradeoff({"bad": ([1, 2], [1])})


def test_prox_effects_three_panels(V):
    axes = widgets.plot_prox_effects(V, 1.0)
    assert len(axes) == 3
    np.testing.assert_allclose(lines(axes[0])[1][1], np.linalg.norm(prox_l21(V, 1.0), axis=0))
    sorted_after = np.sort(np.abs(np.sign(V) * np.maximum(np.abs(V) - 1, 0)).ravel())[::-1]
    np.testing.assert_allclose(lines(axes[2])[1][1], sorted_after)


def _png_size(data):
    import matplotlib.image as mpimg

    return mpimg.imread(io.BytesIO(data)).shape[:2]


def test_interact_one_live_figure_redrawn_in_place():
    calls = []

    def draw(tau, kind):
        calls.append((tau, kind))
        plt.subplots(figsize=(2, 1 + tau))  # the figure's height shows which tau drew it

    n_before = len(plt.get_fignums())
    view = widgets.interact(draw, tau=widgets.Slider(0.0, 2.0, 0.5, static=(0.0, 2.0)),
                            kind=widgets.Choice(("a", "b")))
    assert calls == [(0.5, "a")]  # the live figure, drawn once at the defaults
    assert len(plt.get_fignums()) == n_before  # rendered to PNG and closed: nothing leaks
    # the static figure: the defaults, then each control over its range, others at default
    assert view.panels == [{"tau": 0.5, "kind": "a"}, {"tau": 0.0, "kind": "a"},
                           {"tau": 2.0, "kind": "a"}, {"tau": 0.5, "kind": "b"}]
    if view.box is None:  # no ipywidgets: the static figure is all there is
        return
    slider, choice = view.box.children[0].children
    assert (slider.min, slider.max, slider.value) == (0.0, 2.0, 0.5)
    assert view.box.children[2] is view.image  # one figure, below the controls
    short = _png_size(view.image.value)
    slider.value = 1.5
    assert calls[-1] == (1.5, "a") and view.values == {"tau": 1.5, "kind": "a"}
    assert _png_size(view.image.value)[0] > short[0]  # the same image widget, redrawn
    choice.value = "b"
    assert calls[-1] == (1.5, "b") and view.message.value == ""


def test_interact_shows_a_failed_redraw_and_keeps_the_figure():
    def draw(tau):
        if tau > 1:
            raise ValueError("tau too large for this toy")
        plt.subplots(figsize=(2, 2))

    view = widgets.interact(draw, tau=widgets.Slider(0.0, 2.0, 0.5, static=(0.0,)))
    if view.box is None:
        pytest.skip("ipywidgets is not installed")
    good = view.image.value
    view.widgets["tau"].value = 1.5
    assert "tau too large" in view.message.value and view.image.value == good
    view.widgets["tau"].value = 0.7
    assert view.message.value == ""


def test_interact_bundle_carries_widget_and_static_figure():
    view = widgets.interact(lambda tau: plt.subplots(figsize=(3, 2)),
                            tau=widgets.Slider(1.0, 3.0, 2.0, label="τ"))
    bundle = view._repr_mimebundle_()
    height, _ = _png_size(base64.b64decode(bundle["image/png"]))
    single, _ = _png_size(view.render())
    assert len(view.panels) == 3 and height > 2.5 * single * widgets.STATIC_DPI / widgets.LIVE_DPI
    assert "τ" in bundle["text/plain"]
    if view.box is not None:  # widget front-ends render the live view instead
        model_id = bundle["application/vnd.jupyter.widget-view+json"]["model_id"]
        assert model_id == view.box.model_id


def test_interact_rejects_bad_controls():
    with pytest.raises(ValueError, match="outside"):
        widgets.Slider(0.0, 1.0, 2.0)
    with pytest.raises(ValueError, match="not one of"):
        widgets.Choice((1, 2), 3)
    with pytest.raises(TypeError, match="Slider or a Choice"):
        widgets.interact(lambda tau: None, tau=(0.0, 1.0, 0.1, 0.5))
    with pytest.raises(ValueError, match="no new matplotlib figure"):
        widgets.interact(lambda tau: None, tau=widgets.Slider(0.0, 1.0, 0.5))


def test_prox_explorer_defaults(V):
    view = widgets.prox_explorer(V)
    tau = np.median(np.linalg.norm(V, axis=0)) / 2
    assert view.values["tau"] == pytest.approx(tau)
    assert [p["tau"] for p in view.panels] == pytest.approx(
        [tau, tau / 4, np.linalg.norm(V, 2) / 2])
    if view.box is not None:
        assert view.widgets["tau"].max == pytest.approx(np.linalg.norm(V, 2))
