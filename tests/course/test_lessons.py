"""lrsa.course.lessons: the computations behind notebooks 07, 08 and 09, checked against closed
forms (Amdahl's law, multiply-add counts, the distillation gradient, eq. 15's sizes) and
small runs."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lrsa.course import lessons as L
from lrsa.course import resources
from lrsa.layers import SparseLowRankConv2d, estimate_macs


def test_amdahl_speedup_and_bound():
    assert L.amdahl_speedup(0.5, 2.0) == pytest.approx(1 / (0.5 + 0.25))
    assert L.amdahl_bound(0.25) == pytest.approx(4.0)
    assert L.amdahl_speedup(1.0, 10.0) == pytest.approx(1.0)  # nothing changed: no gain
    # the bound is approached from below as the changed stages get faster
    assert L.amdahl_speedup(0.3, 1e6) < L.amdahl_bound(0.3)
    assert L.amdahl_speedup(0.3, 1e6) == pytest.approx(L.amdahl_bound(0.3), rel=1e-5)
    with pytest.raises(ValueError, match="unchanged_share"):
        L.amdahl_bound(0.0)
    with pytest.raises(ValueError, match="factored_speedup"):
        L.amdahl_speedup(0.5, 0.0)


def test_time_share_table_from_a_saved_run():
    run = {"factored": ["1"],
           "b4": {"original_ms": {"0": 1.0, "1": 3.0, "2": 1.0},
                  "compressed_ms": {"0": 1.0, "1": 1.0, "2": 1.0}}}
    t = L.time_share_table(run, 4)
    assert t["stages"] == ["0", "1", "2"]
    assert t["factored"].tolist() == [False, True, False]
    assert t["unchanged_share"] == pytest.approx(0.4)
    assert t["bound"] == pytest.approx(2.5)
    assert t["stage_sum_speedup"] == pytest.approx(5 / 3)
    # the stage-sum speed-up is Amdahl's law with the changed stages' own speed-up (3x)
    assert t["stage_sum_speedup"] == pytest.approx(L.amdahl_speedup(0.4, 3.0))
    assert L.time_share_table(run, 4, factored=[])["bound"] == pytest.approx(1.0)


def _net():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))


def test_layer_macs_by_hand():
    m = L.layer_macs(_net(), (1, 2, 8, 8))
    assert list(m) == ["0", "3", "5"]
    assert m["0"] == {"macs": 64 * 4 * 18, "positions": 64, "n": 4, "d": 18}
    assert m["3"] == {"macs": 4 * 6 * 36, "positions": 4, "n": 6, "d": 36}  # 4x4 -> 2x2
    assert m["5"] == {"macs": 3 * 24, "positions": 1, "n": 3, "d": 24}


def test_report_macs_dense_and_factored():
    dense = {"kind": "dense", "n": 8, "d": 36, "rank": 5, "nonzero_columns": 9}
    assert L.report_macs(dense, 10) == 10 * 8 * 36
    fact = {**dense, "kind": "factored"}
    assert L.report_macs(fact, 10) == 10 * (8 * 9 + 5 * (36 + 8))
    # the same count as the library's estimate for the module it describes
    conv = nn.Conv2d(4, 8, 3, padding=1)
    A = torch.zeros(8, 36)
    A[:, 9:18] = torch.randn(8, 9)  # channel 1 kept: 9 columns
    mod = SparseLowRankConv2d.from_factors(conv, A, torch.randn(8, 5), torch.randn(5, 36))
    assert L.report_macs(fact, 25) == estimate_macs(mod, (1, 4, 5, 5))


def test_factored_conv_is_u_v_and_rank_sweep_reports_each_rank():
    dense, fact = L.factored_conv(8, 16, 3)
    assert fact.rank == 3 and fact.kept_index.numel() == 0
    x = torch.randn(2, 8, 6, 6)
    assert fact(x).shape == dense(x).shape
    out = L.rank_sweep(8, 16, 6, [2, 4], batch=1, repeats=1)
    assert out["ranks"] == [2, 4]
    assert all(t > 0 for t in out["dense_ms"] + out["factored_ms"])
    # n c k^2 / (r (c k^2 + n)), the count exercise 3 of notebook 08 asks for
    assert out["mac_speedup"] == pytest.approx([16 * 72 / (r * (72 + 16)) for r in (2, 4)])
    assert out["speedup"][0] == pytest.approx(out["dense_ms"][0] / out["factored_ms"][0])


def test_stage_times_times_every_stage_once():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten(),
                        nn.Linear(2 * 6 * 6, 3))
    t = L.stage_times(net.train(), (2, 1, 8, 8), repeats=2)
    assert list(t) == ["0.0", "0.1", "1", "2"]
    assert all(v > 0 for v in t.values())
    assert net.training  # mode restored
    with pytest.raises(ValueError, match="nn.Sequential"):
        L.stage_times(nn.Linear(2, 2), (1, 2))


def test_soft_term_gradient_scales_as_one_over_t_squared_without_the_factor():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 10, generator=g), 3 * torch.randn(6, 10, generator=g)
    temps = [1, 4, 16, 64, 256]
    out = L.soft_term_gradient_norms(s, t, temps)
    w, wo = np.array(out["with_t2"]), np.array(out["without_t2"])
    assert np.allclose(w / wo, np.array(temps, dtype=float) ** 2)
    # log-log slope of the plain term -> -2 at large T
    slope = np.polyfit(np.log(temps[2:]), np.log(wo[2:]), 1)[0]
    assert slope == pytest.approx(-2.0, abs=0.02)
    # with T^2 the norm tends to || centred(s) - centred(t) ||_F / (K B)
    d = (s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))
    assert w[-1] == pytest.approx(float(d.norm()) / (10 * 6), rel=1e-3)
    # T = 1: the closed form (softmax(s) - softmax(t)) / B
    ref = (torch.softmax(s, 1) - torch.softmax(t, 1)) / 6
    assert w[0] == pytest.approx(float(ref.norm()), rel=1e-5)


class _Linear(nn.Module):
    """A one-layer "network" for the gradient-norm traces."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


def _batches():
    g = torch.Generator().manual_seed(0)
    return [(torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g))
            for _ in range(5)]


def test_grad_norm_trace_matches_finetune_with_the_cap():
    from lrsa import finetune

    torch.manual_seed(0)
    student, teacher = _Linear(), _Linear()
    tr = L.grad_norm_trace(copy.deepcopy(student), teacher, _batches(), lr=0.1,
                           max_grad_norm=0.5)
    hist = finetune(copy.deepcopy(student), _batches(), epochs=1, lr=0.1, teacher=teacher,
                    max_grad_norm=0.5)
    assert tr["grad_norm"] == pytest.approx(hist.grad_norm)
    assert tr["diverged_at"] is None and len(tr["loss"]) == 5
    # what was applied is the capped norm
    assert tr["applied_norm"] == pytest.approx([min(n, 0.5) for n in tr["grad_norm"]],
                                               rel=1e-5)
    assert tr["capped"] == [i for i, n in enumerate(tr["grad_norm"]) if n > 0.5]


class _TwoLayers(nn.Module):
    """Two layers without normalization: at a large step each update feeds the next."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 16), nn.Linear(16, 3)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_grad_norm_trace_records_a_divergence():
    torch.manual_seed(0)
    student, teacher = _TwoLayers(), _TwoLayers()
    tr = L.grad_norm_trace(student, teacher, _batches() * 4, lr=100.0)
    assert tr["diverged_at"] is not None
    assert not math.isfinite(tr["loss"][tr["diverged_at"]])
    assert all(math.isfinite(v) for v in tr["loss"][:tr["diverged_at"]])
    assert len(tr["grad_norm"]) == tr["diverged_at"]  # one norm per step taken
    assert max(tr["grad_norm"]) > 1e6 * tr["grad_norm"][0]
    # the cap stops it: same start, same steps
    torch.manual_seed(0)
    student, teacher = _TwoLayers(), _TwoLayers()
    capped = L.grad_norm_trace(student, teacher, _batches() * 4, lr=100.0, max_grad_norm=0.01)
    assert capped["grad_norm"][0] == pytest.approx(tr["grad_norm"][0])
    assert capped["diverged_at"] is None and len(capped["grad_norm"]) == 20


def test_recovery_curves_and_benchmark_recovery():
    torch.manual_seed(0)
    teacher = _Linear()
    models = {"a": _Linear(), "b": _Linear()}
    before = copy.deepcopy(models["a"].state_dict())
    curves = L.recovery_curves(models, _batches(), _batches(), teacher=teacher, epochs=2,
                               lr=0.01)
    assert set(curves) == {"a", "b"} and all(len(c) == 3 for c in curves.values())
    assert all(0 <= v <= 100 for c in curves.values() for v in c)
    assert all(torch.equal(before[k], v) for k, v in models["a"].state_dict().items())
    result = {"top1_compressed": 1, "top1_finetuned": 2, "top1_svd": 3,
              "top1_svd_finetuned": 4, "top1_rrr": 5, "top1_rrr_finetuned": 6,
              "top1_baseline": 7, "top1_baseline_finetuned": 8}
    r = L.benchmark_recovery(result)
    assert r["lrsa"] == [1.0, 2.0] and r["truncated SVD"] == [3.0, 4.0]
    assert r["reduced-rank regression"] == [5.0, 6.0]
    assert r["uncompressed (control)"] == [7.0, 8.0]
    # a run that recorded every epoch: the curve, in epoch order, after the start
    result["curve_svd_finetuned"] = [{"epoch": 1, "top1": 3.5}, {"epoch": 2, "top1": 4}]
    assert L.benchmark_recovery(result)["truncated SVD"] == [3.0, 3.5, 4.0]
    # a run without baselines: only the methods it ran
    del result["top1_rrr"], result["top1_rrr_finetuned"]
    assert "reduced-rank regression" not in L.benchmark_recovery(result)


def test_plots_return_their_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = L.time_share_table({"factored": ["1"], "b1": {"original_ms": {"0": 1.0, "1": 2.0},
                                                      "compressed_ms": {"0": 1.0, "1": 1.0}}},
                           1)
    axes = [L.plot_macs_vs_time([1e3, 1e4], [0.1, 0.5], ["a", "b"]),
            L.plot_rank_sweep([8, 16, 17], [2.0, 1.9, 1.2], [3.0, 1.5, 1.4]),
            L.plot_time_shares(t),
            L.plot_recovery({"a": [50.0, 60.0]}, x=[0, 5]),
            L.plot_grad_norms({"x": {"grad_norm": [1.0, 10.0], "diverged_at": 2}}, cap=5),
            L.plot_heldout_splits(L.heldout_splits(_HELDOUT_ROWS)),
            L.plot_equal_size_top1(_GRID, 0.2, "energy", original=88.0),
            L.plot_frontier(_GRID), L.plot_frontier(_GRID, x="speedup_b128")]
    assert all(isinstance(ax, plt.Axes) for ax in axes)
    assert axes[2].get_title() == "unchanged share 33 %: at most 3.00x"
    assert list(axes[3].lines[0].get_xdata()) == [0, 5]
    plt.close("all")


def test_the_saved_digits_study_has_what_notebook_09_reads():
    """benchmarks/results/fine_tuning_digits.json, written by digits_fine_tuning_study: three
    curves of epochs + 1 points from one start size, and the two traces of section 3."""
    study = L.saved_results("fine_tuning_digits")
    assert set(study["curves"]) == {"lrsa", "truncated SVD", "reduced-rank regression"}
    assert all(len(c) == study["epochs"] + 1 for c in study["curves"].values())
    assert all(0 <= v <= 100 for c in study["curves"].values() for v in c)
    assert len(study["traces"]) == 2
    uncapped = next(v for k, v in study["traces"].items() if "no cap" in k)
    capped = next(v for k, v in study["traces"].items() if "no cap" not in k)
    assert uncapped["diverged_at"] is not None and capped["diverged_at"] is None
    assert len(uncapped["grad_norm"]) == uncapped["diverged_at"]
    assert capped["grad_norm"][0] == pytest.approx(uncapped["grad_norm"][0], rel=1e-5)


_HELDOUT_ROWS = [{"name": "a", "heldout": [[0, 10, 0.30], [2, 8, 0.20], [4, 6, 0.25]]},
                 {"name": "b", "heldout": [[0, 5, 0.10], [1, 4, 0.12]]},
                 {"name": "c", "heldout": [[0, 3, 0.05]]},
                 {"name": "kept dense", "heldout": None}]
_GRID = [{"size": sz, "spread": sp, "method": m, "top1": 87.0 - i, "ratio": 1 / sz,
          "speedup_b128": 1.5 + sz if sp == "energy" else None}
         for sz in (0.33, 0.2) for sp in ("energy", "sqrt")
         for i, m in enumerate(("lrsa", "svd", "rrr"))]


def test_heldout_splits_pairs_b_alone_with_the_best_split_keeping_channels():
    got = L.heldout_splits(_HELDOUT_ROWS)
    assert [g["name"] for g in got] == ["a", "b", "c"]  # a layer kept dense tried nothing
    assert got[0] == {"name": "a", "b_only": 0.30, "with_a": 0.20, "kept": 2}
    assert got[1] == {"name": "b", "b_only": 0.10, "with_a": 0.12, "kept": 0}
    assert got[2] == {"name": "c", "b_only": 0.05, "with_a": None, "kept": 0}


def test_equal_size_runs_give_the_baselines_lrsa_sizes_layer_by_layer(trained):
    """Each baseline stores what lrsa stores at every layer, less at most one rank's
    rounding (n + d - 1 weights), and reports its own top-1."""
    from lrsa import Budget

    model, calib, test = trained
    runs = L.equal_size_runs(model, calib[:1], test, Budget(size=0.3))
    assert set(runs) == {"lrsa", "svd", "rrr"}
    for method in ("svd", "rrr"):
        for a, b in zip(runs["lrsa"]["layers"], runs[method]["layers"]):
            assert a["name"] == b["name"] and a["kind"] == b["kind"]
            assert 0 <= a["params_compressed"] - b["params_compressed"] < a["n"] + a["d"]
        assert runs[method]["params"] == sum(r["params_compressed"]
                                             for r in runs[method]["layers"])
    assert all(0 <= r["top1"] <= 100 for r in runs.values())
    assert runs["lrsa"]["model"] is not runs["svd"]["model"]


def test_saved_correctness_unpacks_what_the_ablation_packs(monkeypatch, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lrsa.evaluation import bootstrap_interval
    rng = np.random.default_rng(0)
    correct = (rng.random((3, 13)) < 0.7).astype(np.uint8)  # 13 images: packbits pads to 16
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    np.savez_compressed(results / "abl.npz", seeds__after=np.array([0, 1, 2]),
                        validation=np.arange(5), report=np.arange(5, 13),
                        **{"b_alone__after": np.packbits(correct, axis=1)})
    monkeypatch.setattr(resources, "ROOTS", (tmp_path,))
    seeds, val, report, got = L.saved_correctness("abl")
    assert seeds == {"after": [0, 1, 2]} and len(val) + len(report) == 13
    assert list(got) == [("b_alone", "after")]
    assert np.array_equal(got["b_alone", "after"], correct)
    with pytest.raises(FileNotFoundError, match="no saved correctness"):
        L.saved_correctness("nothing")
    ax = L.plot_intervals({"B alone": bootstrap_interval([correct]),
                           "as a dict": {"mean": 50.0, "low": 40.0, "high": 60.0}}, reference=0)
    assert [t.get_text() for t in ax.get_yticklabels()] == ["B alone", "as a dict"]
    plt.close("all")
