"""lrsa.course.fine_tuning: the computations behind notebook 09, checked against closed
forms (the distillation gradient) and small runs."""

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from lrsa.course import fine_tuning, resources


def test_soft_term_gradient_scales_as_one_over_t_squared_without_the_factor():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 10, generator=g), 3 * torch.randn(6, 10, generator=g)
    temps = [1, 4, 16, 64, 256]
    out = fine_tuning.soft_term_gradient_norms(s, t, temps)
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
    assert torch.allclose(fine_tuning.soft_gradient(s, t, 1), ref.double(), atol=1e-6)


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
    before = copy.deepcopy(student.state_dict())
    tr = fine_tuning.grad_norm_trace(student, teacher, _batches(), lr=0.1, max_grad_norm=0.5)
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())  # a copy
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
    tr = fine_tuning.grad_norm_trace(student, teacher, _batches() * 4, lr=100.0)
    assert tr["diverged_at"] is not None
    assert not math.isfinite(tr["loss"][tr["diverged_at"]])
    assert all(math.isfinite(v) for v in tr["loss"][:tr["diverged_at"]])
    assert len(tr["grad_norm"]) == tr["diverged_at"]  # one norm per step taken
    assert max(tr["grad_norm"]) > 1e6 * tr["grad_norm"][0]
    # the cap stops it: same start, same steps
    torch.manual_seed(0)
    student, teacher = _TwoLayers(), _TwoLayers()
    capped = fine_tuning.grad_norm_trace(student, teacher, _batches() * 4, lr=100.0,
                                         max_grad_norm=0.01)
    assert capped["grad_norm"][0] == pytest.approx(tr["grad_norm"][0])
    assert capped["diverged_at"] is None and len(capped["grad_norm"]) == 20


def test_recovery_curves():
    torch.manual_seed(0)
    teacher = _Linear()
    models = {"a": _Linear(), "b": _Linear()}
    before = copy.deepcopy(models["a"].state_dict())
    curves = fine_tuning.recovery_curves(models, _batches(), _batches(), teacher=teacher,
                                         epochs=2, lr=0.01)
    assert set(curves) == {"a", "b"} and all(len(c) == 3 for c in curves.values())
    assert all(0 <= v <= 100 for c in curves.values() for v in c)
    assert all(torch.equal(before[k], v) for k, v in models["a"].state_dict().items())


def test_plots_return_their_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lrsa.evaluation import bootstrap_interval
    correct = (np.random.default_rng(0).random((3, 13)) < 0.7).astype(np.uint8)
    intervals = {"B alone": bootstrap_interval([correct]),
                 "as a dict": {"mean": 50.0, "low": 40.0, "high": 60.0}}
    axes = [fine_tuning.plot_recovery({"a": [50.0, 60.0]}, x=[0, 5]),
            fine_tuning.plot_grad_norms({"x": {"grad_norm": [1.0, 10.0], "diverged_at": 2}},
                                        cap=5),
            fine_tuning.plot_intervals(intervals, reference=0)]
    assert all(isinstance(ax, plt.Axes) for ax in axes)
    assert list(axes[0].lines[0].get_xdata()) == [0, 5]
    assert [t.get_text() for t in axes[2].get_yticklabels()] == ["B alone", "as a dict"]
    plt.close("all")


def test_the_saved_digits_study_has_what_notebook_09_reads():
    """benchmarks/results/fine_tuning_digits.json, written by digits_fine_tuning_study: three
    curves of epochs + 1 points from one start size, and the two traces of section 3."""
    study = resources.saved_results("fine_tuning_digits")
    assert set(study["curves"]) == {"lrsa", "truncated SVD", "reduced-rank regression"}
    assert all(len(c) == study["epochs"] + 1 for c in study["curves"].values())
    assert all(0 <= v <= 100 for c in study["curves"].values() for v in c)
    assert len(study["traces"]) == 2
    uncapped = next(v for k, v in study["traces"].items() if "no cap" in k)
    capped = next(v for k, v in study["traces"].items() if "no cap" not in k)
    assert uncapped["diverged_at"] is not None and capped["diverged_at"] is None
    assert len(uncapped["grad_norm"]) == uncapped["diverged_at"]
    assert capped["grad_norm"][0] == pytest.approx(uncapped["grad_norm"][0], rel=1e-5)


def test_ablation_intervals_against_direct_means():
    """The winner is the split with the highest validation mean; each top-1 and drop is
    centred on the direct mean over the report images; a split that wins on validation but
    not on report is still the winner (report decides nothing)."""
    rng = np.random.default_rng(0)
    n_seeds, n = 3, 400
    validation, report = np.arange(200), np.arange(200, 400)
    rates = {"b_alone": 0.80, "a_plus_b": 0.70, "a_alone": 0.60, "svd": 0.75, "rrr": 0.76,
             "control": 0.90}
    correct = {(k, "after"): (rng.random((n_seeds, n)) < p).astype(np.uint8)
               for k, p in rates.items()}
    correct["a_plus_b", "after"][:, validation] = 1  # best on validation only
    winner, top1, drops = fine_tuning.ablation_intervals(correct, validation, report)
    assert winner == "a_plus_b"
    labels = fine_tuning.ABLATION_METHODS
    for key, label in labels.items():
        direct = 100 * correct[key, "after"][:, report].mean()
        assert top1[label].mean == pytest.approx(direct)
        assert top1[label].low <= direct <= top1[label].high
        if key != "control":
            control = 100 * correct["control", "after"][:, report].mean()
            assert drops[label].mean == pytest.approx(control - direct)
    assert labels["control"] not in drops
    axes = fine_tuning.plot_ablation(top1, drops, network="toy:")
    assert axes[0].get_title() == "toy: top-1, 95 % interval"
    assert len(axes[1].get_yticklabels()) == len(labels) - 1


def test_ablation_recovery_reads_the_saved_intervals_in_order():
    result = {"report_top1": {k: {stage: {"mean": m + d, "low": m + d - 1, "high": m + d + 1,
                                          "level": 0.95, "replicates": 10}
                                  for stage, d in (("before", 0.0), ("after", 0.5))}
                              for k, m in (("b_alone", 80.0), ("svd", 70.0), ("rrr", 75.0))}}
    got = fine_tuning.ablation_recovery(result, methods=("svd", "b_alone"))
    assert list(got) == ["truncated SVD", "B alone (low rank)"]
    before, after = got["truncated SVD"]
    assert (before.mean, before.low, before.high) == (70.0, 69.0, 71.0)
    assert after.mean == 70.5 and after.level == 0.95 and after.replicates == 10
    with pytest.raises(ValueError, match="no \\['control'\\]"):
        fine_tuning.ablation_recovery(result)  # no control in this result
