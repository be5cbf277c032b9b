"""lrsa.course.speed: the computations behind notebook 08, checked against closed forms
(Amdahl's law, multiply-add counts) and small runs."""

import pytest
import torch
from torch import nn

from lrsa.course import speed


def test_amdahl_speedup_and_bound():
    assert speed.amdahl_speedup(0.5, 2.0) == pytest.approx(1 / (0.5 + 0.25))
    assert speed.amdahl_bound(0.25) == pytest.approx(4.0)
    assert speed.amdahl_speedup(1.0, 10.0) == pytest.approx(1.0)  # nothing changed: no gain
    # the bound is approached from below as the changed stages get faster
    assert speed.amdahl_speedup(0.3, 1e6) < speed.amdahl_bound(0.3)
    assert speed.amdahl_speedup(0.3, 1e6) == pytest.approx(speed.amdahl_bound(0.3), rel=1e-5)
    with pytest.raises(ValueError, match="unchanged_share"):
        speed.amdahl_bound(0.0)
    with pytest.raises(ValueError, match="factored_speedup"):
        speed.amdahl_speedup(0.5, 0.0)


def test_time_share_table_from_a_saved_run():
    run = {"factored": ["1"],
           "b4": {"original_ms": {"0": 1.0, "1": 3.0, "2": 1.0},
                  "compressed_ms": {"0": 1.0, "1": 1.0, "2": 1.0}}}
    t = speed.time_share_table(run, 4)
    assert t["stages"] == ["0", "1", "2"]
    assert t["factored"].tolist() == [False, True, False]
    assert t["unchanged_share"] == pytest.approx(0.4)
    assert t["bound"] == pytest.approx(2.5)
    assert t["stage_sum_speedup"] == pytest.approx(5 / 3)
    # the stage-sum speed-up is Amdahl's law with the changed stages' own speed-up (3x)
    assert t["stage_sum_speedup"] == pytest.approx(speed.amdahl_speedup(0.4, 3.0))
    assert speed.time_share_table(run, 4, factored=[])["bound"] == pytest.approx(1.0)


def _net():
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(4, 6, 3), nn.Flatten(), nn.Linear(6 * 2 * 2, 3))


def test_mac_table_by_hand():
    m = speed.mac_table(_net(), (1, 2, 8, 8))
    assert list(m) == ["0", "3", "5"]
    assert m["0"] == {"macs": 64 * 4 * 18, "positions": 64, "n": 4, "d": 18}
    assert m["3"] == {"macs": 4 * 6 * 36, "positions": 4, "n": 6, "d": 36}  # 4x4 -> 2x2
    assert m["5"] == {"macs": 3 * 24, "positions": 1, "n": 3, "d": 24}


def test_factored_conv_is_u_v_and_rank_sweep_reports_each_rank():
    dense, fact = speed.factored_conv(8, 16, 3)
    assert fact.rank == 3 and fact.kept_index.numel() == 0
    x = torch.randn(2, 8, 6, 6)
    assert fact(x).shape == dense(x).shape
    out = speed.rank_sweep(8, 16, 6, [2, 4], batch=1, repeats=1)
    assert out["ranks"] == [2, 4]
    assert all(t > 0 for t in out["dense_ms"] + out["factored_ms"])
    # n c k^2 / (r (c k^2 + n)), the count exercise 3 of notebook 08 asks for
    assert out["mac_speedup"] == pytest.approx([16 * 72 / (r * (72 + 16)) for r in (2, 4)])
    assert out["speedup"][0] == pytest.approx(out["dense_ms"][0] / out["factored_ms"][0])


def test_stage_times_times_every_stage_once():
    net = nn.Sequential(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), nn.Flatten(),
                        nn.Linear(2 * 6 * 6, 3))
    t = speed.stage_times(net.train(), (2, 1, 8, 8), repeats=2)
    assert list(t) == ["0.0", "0.1", "1", "2"]
    assert all(v > 0 for v in t.values())
    assert net.training  # mode restored
    with pytest.raises(ValueError, match="nn.Sequential"):
        speed.stage_times(nn.Linear(2, 2), (1, 2))


def test_plots_return_their_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = {"factored": ["1"], "b1": {"original_ms": {"0": 1.0, "1": 2.0},
                                     "compressed_ms": {"0": 1.0, "1": 1.0}}}
    t = speed.time_share_table(run, 1)
    axes = [speed.plot_macs_vs_time([1e3, 1e4], [0.1, 0.5], ["a", "b"]),
            speed.plot_rank_sweep([8, 16, 17], [2.0, 1.9, 1.2], [3.0, 1.5, 1.4]),
            speed.plot_time_shares(t)]
    assert all(isinstance(ax, plt.Axes) for ax in axes)
    assert axes[2].get_title() == "unchanged share 33 %: at most 3.00x"
    plt.close("all")
