"""lrsa.course.experiments (the figure loops) and lrsa.course.explorer on the embedded digits
CNN (fast)."""

import math

import matplotlib
import pytest
import torch

import lrsa.course.experiments as E
from lrsa.batchnorm import fold_batchnorm
from lrsa.course.setups import digits_setup
from lrsa.course import explorer
from lrsa.pipeline import LayerPlan, SolverSettings, compress

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def setup():
    return digits_setup()


def test_single_layer_tradeoff_touches_one_layer_only(setup, monkeypatch):
    captured = []
    real_compress = E.compress

    def spy(*args, **kwargs):
        out = real_compress(*args, **kwargs)
        captured.append(out[0])
        return out

    monkeypatch.setattr(E, "compress", spy)
    layer = "features.7"
    rows = E.single_layer_tradeoff(setup.model, layer, setup.calib, setup.test, [0.03, 0.3],
                                   baseline_top1=setup.baseline_top1, max_samples=1000,
                                   progress=False)
    assert [(r["response"], r["relative_lam1"]) for r in rows] == [
        ("linear", 0.03), ("linear", 0.3), ("relu", 0.03), ("relu", 0.3)]
    for resp in ("linear", "relu"):
        lo, hi = [r for r in rows if r["response"] == resp]
        assert hi["size"] < lo["size"]  # a larger lambda keeps less
        assert hi["drop"] > lo["drop"]  # and costs accuracy
        assert hi["relu_error"] > lo["relu_error"]
    for r in rows:
        assert 0 <= r["relu_error"] <= 1 and 0 <= r["rel_error"] <= 1
        assert math.isclose(r["drop"], setup.baseline_top1 - r["top1"])
        assert math.isclose(r["size"], r["size_a"] + r["size_b"])
        if r["response"] == "relu":  # the pipeline's error and ours measure the same thing
            assert abs(r["relu_error"] - r["rel_error"]) < 1e-5
    # every other layer is exactly the (BN-folded) original
    ref = dict(fold_batchnorm(setup.model).named_modules())
    assert len(captured) == 4
    for comp in captured:
        for name in setup.layers:
            mod = comp.get_submodule(name)
            if name == layer:
                assert hasattr(mod, "factors")
            else:
                assert torch.equal(mod.weight, ref[name].weight)
                assert torch.equal(mod.bias, ref[name].bias)


def test_same_structure_relu_refit_is_not_worse(setup):
    rows = E.single_layer_tradeoff(setup.model, "features.3", setup.calib, setup.test, None,
                                   sizes=[0.3], baseline_top1=setup.baseline_top1,
                                   max_samples=1000, progress=False)
    lin, rel = rows
    assert (lin["response"], rel["response"]) == ("linear", "relu")
    assert lin["size"] == rel["size"] <= 0.3
    assert (lin["rank"], lin["nonzero_columns"]) == (rel["rank"], rel["nonzero_columns"])
    assert rel["relu_error"] <= lin["relu_error"] + 1e-5


def test_strategy_curve_reuses_layers_and_matches_a_fresh_run(setup, tmp_path):
    names = ["features.3", "features.7", "classifier.0"]
    kw = dict(baseline_top1=setup.baseline_top1, max_samples=800, progress=False)
    asym = E.strategy_curve(setup.model, setup.calib, setup.test, "asymmetric", names, 0.1,
                            workdir=tmp_path, **kw)
    assert [r["k"] for r in asym] == [1, 2, 3] and [r["layer"] for r in asym] == names
    # the last point equals one fresh compress of the three layers
    plan = {"features.3": LayerPlan(relative_lam1=0.1), "features.7": LayerPlan(relative_lam1=0.1),
            "classifier.0": LayerPlan(relative_lam1=0.1, ratio=math.inf)}
    comp, rep = compress(setup.model, setup.calib, plan, solver=SolverSettings(max_samples=800),
                         fallback=None, progress=False)
    fresh = {r["name"]: r for r in rep.layers}
    for r in asym:
        assert math.isclose(r["size"], fresh[r["layer"]]["size"])
        assert abs(r["rel_error"] - fresh[r["layer"]]["rel_error"]) < 1e-5
    from lrsa.train import evaluate
    assert abs(asym[-1]["top1"] - evaluate(comp, setup.test)["top1"]) < 0.5
    # a rerun with the same workdir resumes every point and gives the same rows
    assert E.strategy_curve(setup.model, setup.calib, setup.test, "asymmetric", names, 0.1,
                            workdir=tmp_path, **kw) == asym
    # k = 1: both strategies see the original inputs
    sym = E.strategy_curve(setup.model, setup.calib, setup.test, "symmetric", names[:1], 0.1,
                           **kw)
    assert sym[0]["size"] == asym[0]["size"] and sym[0]["top1"] == asym[0]["top1"]


def test_explorer_draws_and_finds_points():
    pts = [{"relative_lam1": f, "ratio": r, "size_a": 0.1 / f, "size_b": 0.05 / f, "size": 0.15 / f,
            "rel_error": f, "rank": 2, "nonzero_columns": 1, "column_norms": [1.0, 0.0, 0.0],
            "singular_values": [2.0, 1.0]} for r in (1.0, 3.0) for f in (0.1, 0.2, 0.4)]
    grid = {"layer": "x", "n": 4, "d": 3, "relative_lam1s": [0.1, 0.2, 0.4], "ratios": [1.0, 3.0],
            "points": pts}
    assert explorer.grid_point(grid, 0.21, 2.9) is pts[4]
    assert explorer.grid_point(grid)["relative_lam1"] == 0.2
    axes = explorer.plot_grid_point(grid, 0.4, 1.0)
    assert len(axes) == 3 and "rank 2" in axes[2].get_title()
    import matplotlib.pyplot as plt
    plt.close("all")
    view = explorer.grid_explorer(grid, relative_lam1=0.1, ratio=3.0)
    assert view.values == {"relative_lam1": 0.1, "ratio": 3.0}
    # static: the defaults, then both ends of the lambda_1 axis, then every ratio
    assert [(p["relative_lam1"], p["ratio"]) for p in view.panels] == [(0.1, 3.0), (0.4, 3.0),
                                                              (0.1, 1.0)]
    if view.box is not None:
        before = view.image.value
        view.widgets["relative_lam1"].value = 0.4
        assert view.values["relative_lam1"] == 0.4 and view.image.value != before


def test_objective_along_segment_relu_is_not_convex():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(6, 200, generator=g)  # nonnegative inputs, as after a ReLU
    W = torch.randn(4, 6, generator=g)
    b = torch.zeros(4)
    Z = W @ X
    seg = E.objective_along_segment(X, Z, b, -torch.ones_like(W), W, steps=21)
    assert seg["relu"][-1] == pytest.approx(0, abs=1e-12)
    assert seg["max_gap_linear"] <= 1e-9 and seg["max_gap_relu"] > 0.01


def test_benchmark_comparison_reads_the_winner_and_its_timing():
    from lrsa.course.resources import saved_results
    ablation, timing = saved_results("ablation_vgg16"), saved_results("timing_vgg16")
    winner = ablation["selection"]["winner"]
    timing = dict(timing, compressed=f"runs/x/seed0/{winner}.pt")
    md, nums = E.benchmark_comparison(ablation, timing)
    assert nums["params_ratio"] == pytest.approx(ablation["params"]["control"]
                                                 / ablation["params"][winner])
    drop = ablation["report_top1"]["control"]["after"]["mean"] \
        - ablation["report_top1"][winner]["after"]["mean"]
    assert nums["drop"]["mean"] == pytest.approx(drop)
    assert f"{nums['params_ratio']:.2f}x" in md and "4.44x" in md and "0.40 pt" in md
    other = "a_alone" if winner != "a_alone" else "b_alone"
    with pytest.raises(ValueError, match="not of the ablation's winner"):
        E.benchmark_comparison(ablation, dict(timing, compressed=f"runs/x/{other}.pt"))


def test_dead_weight_terminates_on_an_all_zero_input_with_a_positive_bias():
    """The old search (double a negative constant weight until every unit is off) never ends
    when a lowered input column is all zero and some bias is positive: no weight switches
    that unit off there. The closed form returns, and says which samples stay on."""
    from lrsa.course.experiments import dead_weight
    g = torch.Generator().manual_seed(0)
    X = torch.rand(9, 30, generator=g)
    X[:, [4, 17]] = 0
    b = torch.tensor([0.5, -1.0, 2.0])
    W, off = dead_weight(X, b, scale=0.01)
    assert off.tolist() == [i not in (4, 17) for i in range(30)]
    assert bool(((W @ X + b[:, None])[:, off] <= 0).all())
    # with no positive bias every sample is off, zero columns included
    W, off = dead_weight(X, -b.abs(), scale=0.01)
    assert bool(off.all()) and bool(((W @ X - b.abs()[:, None]) <= 0).all())
    with pytest.raises(ValueError, match=">= 0"):
        dead_weight(-X, b)


def test_executed_macs_counts_a_dropped_channel():
    """A dropped input channel saves n k^2 multiply-adds per output position (n per column);
    a zero column inside a kept channel saves none (it is stored and multiplied)."""
    from torch import nn
    from lrsa.course.experiments import executed_macs
    from lrsa.layers import SparseLowRankConv2d
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1)
    A = conv.weight.detach().reshape(6, -1).clone()
    U, V = torch.randn(6, 2), torch.randn(2, 36)
    base = executed_macs(SparseLowRankConv2d.from_factors(conv, A, U, V), (1, 4, 8, 8))
    assert base == 64 * (6 * 36 + 2 * (36 + 6))
    dropped = A.clone()
    dropped[:, 9:18] = 0  # input channel 1: its 9 columns
    one_col = A.clone()
    one_col[:, 9] = 0  # one column of channel 1
    assert base - executed_macs(SparseLowRankConv2d.from_factors(conv, dropped, U, V),
                                (1, 4, 8, 8)) == 64 * 6 * 9
    assert executed_macs(SparseLowRankConv2d.from_factors(conv, one_col, U, V),
                         (1, 4, 8, 8)) == base
