"""lrsa.timing: two models timed interleaved, medians and minima as recorded."""

import torch
from torch import nn

from lrsa import timing


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
                         nn.Linear(8 * 8 * 8, 10))


def test_compare_latency_interleaves_and_takes_medians(monkeypatch):
    net = _tiny()
    small = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 10))
    calls, clock = [], {net: iter([9.0, 3.0, 3.0, 4.0, 100.0]),
                        small: iter([1.0, 1.0, 2.0, 0.5, 1.0])}

    def fake_timed(model, x, dev):  # a scripted clock: the original 4x slower at the median
        calls.append("o" if model is net else "c")
        return next(clock[model])
    monkeypatch.setattr(timing, "_timed", fake_timed)
    res = timing.compare_latency(net, small, (2, 3, 8, 8), repeats=5, warmup=1)
    assert "".join(calls) == "occooccooc"  # warm-up untimed; then A B, B A, A B, ...
    assert res["original_median_s"] == 4.0 and res["compressed_median_s"] == 1.0
    assert res["original_min_s"] == 3.0 and res["compressed_min_s"] == 0.5
    assert res["speedup"] == 4.0
    assert net.training and small.training
    monkeypatch.undo()  # a real clock again
    lat = timing.measure_latency(net, (1, 3, 8, 8), repeats=3, threads=1)
    assert lat["repeats"] == 3 and 0 < lat["min_s"] <= lat["median_s"]
