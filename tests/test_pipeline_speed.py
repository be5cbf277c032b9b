"""lrsa.pipeline.speed: the fall-back rules (multiply-adds by default, no timing; timings
within the noise left to the multiply-adds), the whole-model check, B alone where A + B is not
faster, and the speed-up budget, all on scripted timings (`latency_script` in conftest.py)."""

import pytest
import torch
from torch import nn

import lrsa.pipeline
from lrsa.batchnorm import fold_batchnorm
from lrsa.layers import SparseLowRankConv2d, SparseLowRankLinear
from lrsa.pipeline import Budget, compress


def test_default_fallback_decides_without_timing(trained, monkeypatch):
    """The default (multiply-adds) never times anything, so a rerun, on a busy machine or
    not, gives the same structure; each row says what decided it."""
    model, calib, _ = trained

    def no_timing(*args, **kwargs):
        raise AssertionError("the default fall-back timed a layer")
    monkeypatch.setattr(lrsa.pipeline.speed, "compare_latency", no_timing)
    _, a = compress(model, calib, Budget(size=0.3), progress=False)
    _, b = compress(model, calib, Budget(size=0.3), progress=False)
    assert [dict(r) | {"seconds": 0} for r in a.layers] == \
        [dict(r) | {"seconds": 0} for r in b.layers]
    solved = [r for r in a.layers if r["kind"] != "original"]
    assert solved and all("multiply-adds" in r["decision"] for r in solved)
    assert a.speed is None


def test_time_fallback_leaves_timings_inside_the_noise_to_the_multiply_adds(trained,
                                                                            latency_script):
    """fallback="time" keeps a layer dense only where it is slower by both the median and
    the minimum times; where they disagree the multiply-adds decide (factored here), and
    the row records the timings."""
    model, calib, _ = trained

    def per_layer(dense, factored, shape, repeats):  # median slower, minimum faster
        return {"original_median_s": 0.9, "compressed_median_s": 1.0, "speedup": 0.9,
                "original_min_s": 0.8, "compressed_min_s": 0.7}

    def whole(original, compressed, shape, repeats):
        return {"original_median_s": 1.3, "compressed_median_s": 1.0, "speedup": 1.3,
                "original_min_s": 1.3, "compressed_min_s": 1.0}

    latency_script(per_layer, whole)
    _, rep = compress(model, calib, Budget(layer_size=0.4), fallback="time", progress=False)
    solved = [r for r in rep.layers if r["kind"] != "original"]
    assert solved and all(r["kind"] == "factored" for r in solved)
    for r in solved:
        assert "within the timing noise" in r["decision"] and "0.90x" in r["decision"]
        assert r["layer_speedups"] == {1: 0.9, 128: 0.9}


def test_revert_until_faster_reverts_the_least_gaining_layers(trained, latency_script):
    """Whole-model check: while the compressed model is measured slower than the original,
    the factored layer that gained least in place goes back to its original weights; the
    report records the measured speed-ups and the reverted layers."""
    model, calib, _ = trained
    gain = {(32, 32): 1.5, (64, 32): 1.1, (64, 64): 2.0, (128, 64): 1.3, (10, 128): 1.2}

    def per_layer(dense, factored, shape, repeats):  # every layer faster in place
        s = gain[tuple(dense.weight.shape[:2])]
        return {"original_median_s": s, "compressed_median_s": 1.0, "speedup": s,
                "original_min_s": s, "compressed_min_s": 1.0}

    def whole(original, compressed, shape, repeats):  # slower until two layers went back
        n_factored = sum(isinstance(m, (SparseLowRankConv2d, SparseLowRankLinear))
                         for m in compressed.modules())
        s = 1.2 if n_factored <= 3 else 0.9
        return {"original_median_s": s, "compressed_median_s": 1.0, "speedup": s,
                "original_min_s": s, "compressed_min_s": 1.0}

    latency_script(per_layer, whole)
    comp, rep = compress(model, calib, Budget(layer_size=0.4), fallback="time", progress=False)
    assert rep.speed["faster"] and rep.speed["reverted"] == ["features.7", "classifier.2"]
    assert all(v == 1.2 for v in rep.speed["speedups"].values())
    original = fold_batchnorm(model)
    for name in rep.speed["reverted"]:
        row = next(r for r in rep.layers if r["name"] == name)
        assert row["kind"] == "dense" and row["params_compressed"] == row["params_original"]
        assert torch.equal(comp.get_submodule(name).weight, original.get_submodule(name).weight)


def test_time_fallback_tries_b_alone_before_the_dense_layer(trained, monkeypatch,
                                                           latency_script):
    """Where the chosen A + B runs no faster than the dense layer but B alone at the same
    stored size does, B alone is kept (and the report says why); where neither is faster
    the dense layer stays."""
    model, calib, _ = trained
    choose = lrsa.pipeline.layer._choose

    def a_plus_b(X, Z, b, splits, *args):  # make every layer choose A + B where it can
        return choose(X, Z, b, [s for s in splits if s[0] and s[1]] or splits, *args)

    def per_layer(dense, factored, shape, repeats):
        slow = factored.sparse is not None or tuple(dense.weight.shape[:2]) == (64, 64)
        s = 0.8 if slow else 1.5
        return {"original_median_s": s, "compressed_median_s": 1.0, "speedup": s,
                "original_min_s": s, "compressed_min_s": 1.0}

    def whole(original, compressed, shape, repeats):
        return {"original_median_s": 1.2, "compressed_median_s": 1.0, "speedup": 1.2,
                "original_min_s": 1.2, "compressed_min_s": 1.0}

    monkeypatch.setattr(lrsa.pipeline.layer, "_choose", a_plus_b)
    latency_script(per_layer, whole)
    comp, rep = compress(model, calib, Budget(layer_size=0.4), fallback="time", progress=False)
    rows = {r["name"]: r for r in rep.layers}
    switched = [n for n, r in rows.items() if r["choice"] == "B only (A+B not faster)"]
    assert switched, "no layer went from A + B to B alone"
    for name in switched:
        assert rows[name]["kind"] == "factored" and rows[name]["kept_channels"] == 0
        assert comp.get_submodule(name).sparse is None
        assert rows[name]["params_compressed"] <= int(0.4 * rows[name]["params_original"])
    dense = [n for n, r in rows.items() if (r["n"], r["d"] // 9) == (64, 64)]
    assert dense and all(rows[n]["kind"] == "dense" for n in dense)


def _scripted_latency(monkeypatch, dense_seconds, factored_seconds, total, whole=10.0):
    """Timing as a script: a Conv2d/Linear takes ``dense_seconds[(out, in)]``, its factored
    form ``factored_seconds[(out, in)](stored fraction of U V)`` (at every batch size),
    anything else (the whole model) ``total``; compared with the original, the compressed
    model is ``whole`` times faster."""
    def seconds(module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            return dense_seconds[tuple(module.weight.shape[:2])]
        if isinstance(module, (SparseLowRankConv2d, SparseLowRankLinear)):
            W = module.to_dense_weight()
            stored = module.num_parameters_stored / module.num_parameters_dense
            return factored_seconds[tuple(W.shape[:2])](stored)
        return total

    def latency(module, shape, repeats):
        return {"median_s": seconds(module)}

    def compare(original, compressed, shape, repeats):
        a, b = (seconds(original), seconds(compressed)) if isinstance(
            compressed, (SparseLowRankConv2d, SparseLowRankLinear)) else (whole, 1.0)
        return {"original_median_s": a, "compressed_median_s": b, "speedup": a / b,
                "original_min_s": a, "compressed_min_s": b}

    monkeypatch.setattr(lrsa.pipeline.speed, "measure_latency", latency)
    monkeypatch.setattr(lrsa.pipeline.speed, "compare_latency", compare)
    monkeypatch.setattr(lrsa.pipeline.speed, "compare_latency", compare)


def _stored(rep, name):
    return next(r["params_compressed"] / r["params_original"] for r in rep.layers
                if r["name"] == name)


def test_speedup_budget_meets_the_measured_times(trained, monkeypatch):
    """target_speedup steps the layers down until the measured times meet it: with every
    layer's factored time scripted as (0.1 + stored fraction) of its dense time, the plan's
    time is within the goal; a layer whose factored form is never faster (scripted at twice
    its dense time) is left as it is, not solved."""
    model, calib, _ = trained
    layers = {tuple(m.weight.shape[:2]): n for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))}
    dense = {k: 1.0 for k in layers}
    never = (64, 32)  # features.7
    factored = {k: (lambda cr: 2.0) if k == never else (lambda cr: 0.1 + cr) for k in layers}
    total = len(layers) + 1.0  # the layers and 1 s of other work
    _scripted_latency(monkeypatch, dense, factored, total)
    comp, rep = compress(model, calib, Budget(speedup=1.6), fallback=None, progress=False)
    row = next(r for r in rep.layers if r["name"] == layers[never])
    assert row["kind"] == "original"
    planned = 1.0 + sum(min(1.0, 0.1 + _stored(rep, n)) if _stored(rep, n) < 1 else 1.0
                        for n in layers.values())
    assert planned <= total / 1.6 * 1.02
    assert rep.params_compressed < rep.params_original


def test_speedup_budget_cuts_where_the_time_is(trained, monkeypatch):
    """A layer scripted to hold most of the time is cut further than every other, which
    would lose weight energy for little time saved."""
    model, calib, _ = trained
    layers = {tuple(m.weight.shape[:2]): n for n, m in model.named_modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))}
    slow = (64, 64)
    dense = {k: 5.0 if k == slow else 0.2 for k in layers}
    factored = {k: (lambda cr, t=dense[k]: t * (0.1 + cr)) for k in layers}
    total = sum(dense.values()) + 0.5
    _scripted_latency(monkeypatch, dense, factored, total)
    _, rep = compress(model, calib, Budget(speedup=1.8), fallback=None, progress=False)
    others = [_stored(rep, n) for k, n in layers.items() if k != slow]
    assert _stored(rep, layers[slow]) < min(others)


def test_speedup_budget_warns_when_the_whole_model_falls_short(trained, monkeypatch):
    model, calib, _ = trained
    layers = [tuple(m.weight.shape[:2]) for m in model.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    _scripted_latency(monkeypatch, {k: 1.0 for k in layers},
                      {k: (lambda cr: 0.1 + cr) for k in layers}, total=len(layers) + 1.0,
                      whole=1.2)  # faster, but not 1.6x
    with pytest.warns(UserWarning, match=r"Budget\(speedup=1.6\): .* 1\.20x at batch 128"):
        _, rep = compress(model, calib, Budget(speedup=1.6), fallback="time", progress=False)
    assert rep.speed["target_speedup"] == 1.6 and rep.speed["predicted_speedup"] >= 1.6


def test_speedup_budget_out_of_reach_says_why(trained, monkeypatch):
    model, calib, _ = trained
    layers = [tuple(m.weight.shape[:2]) for m in model.modules()
              if isinstance(m, (nn.Conv2d, nn.Linear))]
    # the layers take 1 s of a 10 s model, and factored they still take half of it:
    # about 1.05x at most, whatever lrsa does
    _scripted_latency(monkeypatch, {k: 1.0 / len(layers) for k in layers},
                      {k: (lambda cr: 0.5 / len(layers)) for k in layers}, total=10.0)
    with pytest.raises(ValueError, match=r"out of reach.*take \d+% .* at most 1\.0\dx"):
        compress(model, calib, Budget(speedup=2.0), progress=False)
    with pytest.raises(ValueError, match="must be > 1"):
        compress(model, calib, Budget(speedup=0.5), progress=False)


def _conv_factors(rank, kept_channels, seed=0):
    """A 32 x 16 x 3 x 3 conv and factors: A on ``kept_channels`` input channels, U V of
    ``rank``."""
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(16, 32, 3, padding=1)
    A = torch.zeros(32, 144)
    A[:, :9 * kept_channels] = torch.randn(32, 9 * kept_channels, generator=g)
    return conv, A, torch.randn(32, rank, generator=g), torch.randn(rank, 144, generator=g)


def test_realize_by_multiply_adds_keeps_the_original_weights_where_dense():
    """fallback="macs": factored where it needs fewer multiply-adds (the decision gives the
    ratio), else the original layer itself (a dense A + U V would only add its error)."""
    from lrsa.pipeline.speed import realize
    conv, A, U, V = _conv_factors(rank=2, kept_channels=1)
    small = realize(conv, A, U, V, conv.bias.detach(), (1, 16, 8, 8), "macs", [1])
    assert small.kind == "factored" and isinstance(small.module, SparseLowRankConv2d)
    ratio = (32 * 9 + 2 * (32 + 144)) / (32 * 144)  # stored weights per position, eq. 15
    assert f"{ratio:.2f} of the dense layer's multiply-adds" in small.decision
    conv, A, U, V = _conv_factors(rank=30, kept_channels=0)  # 30 x 176 > 32 x 144
    big = realize(conv, A, U, V, conv.bias.detach(), (1, 16, 8, 8), "macs", [1])
    assert big.kind == "dense" and big.decision.startswith("dense: 1.15")
    assert torch.equal(big.module.weight, conv.weight) and big.module is not conv
    lin = nn.Linear(8, 8)
    one = realize(lin, torch.zeros(8, 8), torch.randn(8, 1), torch.randn(1, 8),
                  lin.bias.detach(), (4, 8), "macs", [4])
    assert one.kind == "factored" and isinstance(one.module, SparseLowRankLinear)


@pytest.mark.parametrize("speedups,kind", [({1: 1.5, 64: 1.2}, "factored"),
                                           ({1: 0.8, 64: 1.6}, "dense"),
                                           ({1: 1.3, 64: 0.9}, "dense")])
def test_realize_by_time_is_factored_only_where_faster_at_every_batch(monkeypatch, speedups,
                                                                      kind):
    """fallback="time": the layer against its factored form in place at each batch size;
    slower at one (median and minimum alike) is dense; the speed-ups are returned."""
    from lrsa.pipeline import speed
    seen = []

    def fake(dense, factored, shape, repeats):
        seen.append((type(dense).__name__, type(factored).__name__, shape[0]))
        s = speedups[shape[0]]
        return {"original_median_s": s, "compressed_median_s": 1.0, "speedup": s,
                "original_min_s": s, "compressed_min_s": 1.0}

    monkeypatch.setattr(speed, "compare_latency", fake)
    conv, A, U, V = _conv_factors(rank=4, kept_channels=4)
    got = speed.realize(conv, A, U, V, conv.bias.detach(), (1, 16, 8, 8), "time", [1, 64])
    assert got.kind == kind and got.speedups == speedups
    assert seen == [("Conv2d", "SparseLowRankConv2d", 1), ("Conv2d", "SparseLowRankConv2d", 64)]
