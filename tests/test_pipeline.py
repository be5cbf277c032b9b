"""End to end on the embedded default (scikit-learn's digits): compress, agree with A + B,
resume after a crash, save/load, fine-tuning."""


import dataclasses
import itertools
import math

import pytest
import torch
from torch import nn

import lrsa.pipeline
from lrsa.data import load_digits_images, make_loader
from lrsa.layers import SparseLowRankConv2d, SparseLowRankLinear
from lrsa.models import small_cnn
from lrsa.features import fold_batchnorm
from lrsa.pipeline import (Budget, LayerPlan, compress, load_compressed,
                           save_compressed)
from lrsa.pipeline.budget import spread_network_target
from lrsa.report import count_parameters
from lrsa.train import evaluate, train


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    d = load_digits_images()
    model = small_cnn()
    loader = make_loader(d.x_train, d.y_train, 64, train=True, mean=None, std=None, pad=1)
    train(model, loader, epochs=4, lr=0.05)
    test = make_loader(d.x_test, d.y_test, 256, mean=None, std=None)
    calib = [d.x_train[i:i + 128] for i in range(0, 384, 128)]
    return model.eval(), calib, test


def test_compressed_is_smaller_and_matches_dense_a_plus_b(trained, tmp_path):
    model, calib, test = trained
    comp, rep = compress(model, calib, Budget(size=0.5), workdir=tmp_path, progress=False,
                         fallback=None)
    assert count_parameters(comp) < 0.75 * count_parameters(model)
    assert rep.params_compressed <= 0.55 * rep.params_original
    x = torch.cat(calib)[:64]
    # replace each factored module by a dense layer with the solver's A + U V
    dense = fold_batchnorm(model)
    files = sorted(tmp_path.glob("layer_*.pt"))
    names = [r["name"] for r in rep.layers]
    assert files, "each finished layer is written to the workdir"
    for f in files:
        saved = torch.load(f, weights_only=True)
        name = saved["row"]["name"]
        assert name in names
        mod = dense.get_submodule(name)
        W = saved["A"] + saved["U"] @ saved["V"]
        with torch.no_grad():
            mod.weight.copy_(W.reshape(mod.weight.shape))
            mod.bias.copy_(saved["bias"])
        assert isinstance(comp.get_submodule(name), (SparseLowRankConv2d, SparseLowRankLinear))
    with torch.no_grad():
        torch.testing.assert_close(comp(x), dense(x), rtol=1e-4, atol=1e-4)
    # the logits layer has no ReLU after it: it is fitted on the linear response
    _, rep = compress(model, calib, Budget(layer_size=0.5), progress=False, fallback=None)
    responses = {r["name"]: r.get("response") for r in rep.layers}
    assert responses["classifier.2"] == "linear" and responses["features.3"] == "relu"
    base, ours = evaluate(model, test)["top1"], evaluate(comp, test)["top1"]
    assert ours >= base - 10, (base, ours)


def test_resume_after_crash_gives_the_same_model(trained, tmp_path, monkeypatch):
    model, calib, _ = trained
    budget = Budget(frac=0.05)
    ref, ref_rep = compress(model, calib, budget, workdir=tmp_path / "ref", progress=False,
                            fallback=None)
    calls = {"n": 0}
    original = lrsa.pipeline.network.approximate_layer

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash")
        return original(*args, **kwargs)

    monkeypatch.setattr(lrsa.pipeline.network, "approximate_layer", crashing)
    with pytest.raises(KeyboardInterrupt):
        compress(model, calib, budget, workdir=tmp_path / "run", progress=False, fallback=None)
    assert len(list((tmp_path / "run").glob("layer_*.pt"))) == 2
    monkeypatch.setattr(lrsa.pipeline.network, "approximate_layer", original)
    calls["n"] = 0
    resumed, rep = compress(model, calib, budget, workdir=tmp_path / "run", progress=False,
                            fallback=None)
    x = torch.cat(calib)[:32]
    with torch.no_grad():
        torch.testing.assert_close(resumed(x), ref(x), rtol=1e-5, atol=1e-5)
    assert [r["cr"] for r in rep.layers] == pytest.approx([r["cr"] for r in ref_rep.layers])
    # other settings in the same folder are refused, not mixed in
    with pytest.raises(ValueError, match="other settings"):
        compress(model, calib, Budget(frac=0.2), workdir=tmp_path / "run", progress=False)


def test_save_load_round_trip(trained, tmp_path):
    model, calib, _ = trained
    comp, rep = compress(model, calib, Budget(frac=0.05), progress=False)
    save_compressed(comp, tmp_path / "c.pt", arch="small_cnn", report=rep)
    loaded, report = load_compressed(tmp_path / "c.pt")
    x = torch.cat(calib)[:16]
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), comp(x))
    assert report["layers"][1]["name"] == rep.layers[1]["name"]
    torch.save({"state_dict": model.state_dict()}, tmp_path / "plain.pt")
    with pytest.raises(ValueError, match="not a compressed model"):
        load_compressed(tmp_path / "plain.pt")


def test_a_model_of_ones_own_reloads_through_its_constructor(tmp_path):
    def build():  # not a registered architecture
        return nn.Sequential(nn.Conv2d(2, 16, 3, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(16 * 25, 4))
    torch.manual_seed(0)
    calib = [torch.randn(64, 2, 5, 5)]
    comp, _ = compress(build(), calib, Budget(layer_size=0.5), progress=False, fallback=None)
    save_compressed(comp, tmp_path / "own.pt")
    with pytest.raises(ValueError, match="build="):
        load_compressed(tmp_path / "own.pt")
    with pytest.raises(ValueError, match="not a torch.nn.Module"):
        load_compressed(tmp_path / "own.pt", build=lambda: "vgg")
    loaded, _ = load_compressed(tmp_path / "own.pt", build=build)
    with torch.no_grad():
        torch.testing.assert_close(loaded(calib[0]), comp(calib[0]))
    assert any(type(m).__name__.startswith("SparseLowRank") for m in loaded.modules())


def test_symmetric_and_asymmetric_agree_on_the_first_approximated_layer_only(trained):
    # the first approximated layer sees the original inputs under both strategies; later
    # ones see the approximated network's inputs only under the asymmetric one
    model, calib, _ = trained
    kw = dict(response="linear", progress=False, fallback=None)
    nets = [compress(model, calib, Budget(frac=0.05), strategy=s, **kw)[0]
            for s in ("symmetric", "asymmetric")]

    def weights(net):
        return {n: m.to_dense_weight().flatten(1) for n, m in net.named_modules()
                if isinstance(m, (SparseLowRankConv2d, SparseLowRankLinear))}
    sym, asym = map(weights, nets)
    names = list(sym)
    assert len(names) >= 2 and list(asym) == names
    torch.testing.assert_close(sym[names[0]], asym[names[0]])
    assert any(not torch.allclose(sym[n], asym[n], atol=1e-4) for n in names[1:])


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 4, 3, padding=1)
        self.g = nn.Conv2d(4, 4, 3, padding=1, groups=2)

    def forward(self, x):
        return self.g(self.a(x)).mean((2, 3))


@pytest.mark.parametrize("kwargs,match", [
    ({"strategy": "sideways"}, "strategy"),
    ({"response": "tanh"}, "response"),
    ({"budget": {"nope": LayerPlan()}}, "nope"),
    ({"budget": 0.2}, r"Budget\(size=0.2\)"),
    ({"solver": {"max_samples": 10}}, "SolverSettings"),
    ({"fallback": "always"}, "fallback"),
])
def test_bad_arguments(trained, kwargs, match):
    model, calib, _ = trained
    with pytest.raises(ValueError, match=match):
        compress(model, calib, progress=False, **kwargs)


def test_unsupported_layer_is_named():
    with pytest.raises(ValueError, match="g"):
        compress(Grouped(), [torch.randn(4, 1, 8, 8)], progress=False)


def test_empty_calibration_data(trained):
    with pytest.raises(ValueError, match="empty"):
        compress(trained[0], [], progress=False)


def test_finetune_switches_dropout_off_and_restores_it():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.5),
                          nn.Linear(16, 10))
    seen = []
    model[3].register_forward_pre_hook(lambda m, args: seen.append(m.p))
    loader = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))]
    lrsa.pipeline.finetune(model, loader, epochs=1, lr=1e-3)
    assert seen == [0.0] and model[3].p == 0.5
    lrsa.pipeline.finetune(model, loader, epochs=1, lr=1e-3, dropout=True)
    assert seen[-1] == 0.5


def test_finetune_passes_warmup_and_epoch_callback_to_train():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    loader = [(torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,)))] * 4
    ends = []
    hist = lrsa.pipeline.finetune(model, loader, epochs=2, lr=0.1, warmup_epochs=1,
                                  on_epoch_end=lambda e, stats: ends.append(e))
    assert hist.lr[:4] == pytest.approx([0.025, 0.05, 0.075, 0.1])  # linear, then cosine
    assert ends == [0, 1]


def test_per_layer_target_is_met_to_within_one_rank(trained):
    """The stored size (kept channels k^2 n + rank (n + d)) never exceeds the target and
    leaves less than one rank-1 term of it unused."""
    model, calib, _ = trained
    t = 0.25
    comp, rep = compress(model, calib, Budget(layer_size=t), progress=False, fallback=None)
    rows = [r for r in rep.layers if r["kind"] != "original"]
    assert len(rows) == 5
    for r in rows:
        n, d = r["n"], r["d"]
        assert t * n * d - (n + d) < r["params_compressed"] <= t * n * d, r
        mod = comp.get_submodule(r["name"])  # what the module really holds, bias aside
        assert mod.num_parameters_stored - n == r["params_compressed"]


class FunctionalRelu(nn.Module):
    """ReLUs applied as functions, in every spelling a model may use."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.c4 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        x = torch.nn.functional.relu(self.c1(x))
        x = torch.relu(self.c2(x))
        x = self.c3(x).relu_()
        x = self.c4(x).relu()
        return self.fc(x.mean((2, 3)))


def test_relu_response_reaches_functional_relus():
    torch.manual_seed(0)
    model = FunctionalRelu().eval()
    calib = torch.randn(64, 1, 8, 8)  # one tensor of images is calibration data too
    _, rep = compress(model, calib, {n: LayerPlan(target_cr=0.6) for n in
                                     ("c2", "c3", "c4", "fc")}, progress=False, fallback=None)
    responses = {r["name"]: r.get("response") for r in rep.layers}
    assert responses == {"c1": None, "c2": "relu", "c3": "relu", "c4": "relu",
                         "fc": "linear"}


def test_tensor_calibration_equals_its_batches(trained):
    model, calib, _ = trained
    images = torch.cat(calib)
    budget = Budget(layer_size=0.4)
    a, rep_a = compress(model, images, budget, progress=False, fallback=None)
    b, rep_b = compress(model, list(images.split(128)), budget, progress=False, fallback=None)
    x = images[:8]
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
    with pytest.raises(ValueError, match="batch of inputs"):
        compress(model, torch.randn(10), progress=False)


def test_resume_refuses_layers_of_other_code_or_weights(trained, tmp_path, monkeypatch):
    model, calib, _ = trained
    compress(model, calib, Budget(layer_size=0.4), workdir=tmp_path, progress=False)
    other = small_cnn()
    other.load_state_dict(model.state_dict())
    with torch.no_grad():  # one value deep inside a tensor, past any prefix a hash might read
        other.classifier[2].weight.view(-1)[-1] += 1e-3
    with pytest.raises(ValueError, match="other model weights"):
        compress(other.eval(), calib, Budget(layer_size=0.4), workdir=tmp_path, progress=False)
    monkeypatch.setattr(lrsa.pipeline.network, "code_version", lambda: "another")
    with pytest.raises(ValueError, match="another version of lrsa's code"):
        compress(model, calib, Budget(layer_size=0.4), workdir=tmp_path, progress=False)


def test_baselines_at_matching_sizes_and_lrsa_never_fits_worse(trained):
    """Symmetric inputs, linear response: every layer sees the same data in both runs, and
    lrsa's candidates include reduced-rank regression at its size, so its error is never
    larger; the baselines get lrsa's stored size to within one rank-1 term."""
    model, calib, _ = trained
    kw = dict(strategy="symmetric", response="linear", progress=False, fallback=None)
    _, ours = compress(model, calib, Budget(layer_size=0.3), **kw)
    plan = lrsa.pipeline.matching_plan(ours)
    for method in ("rrr", "svd"):
        _, base = compress(model, calib, plan, method=method, **kw)
        for r, q in zip(ours.layers, base.layers):
            assert r["name"] == q["name"] and r["kind"] in ("factored", "original")
            if r["kind"] == "original":
                assert q["kind"] == "original"
                continue
            assert q["choice"] == "B only" and q["kept_channels"] == 0
            assert r["params_compressed"] - (r["n"] + r["d"]) < q["params_compressed"] \
                <= r["params_compressed"]
            if method == "rrr":
                assert r["rel_error"] <= q["rel_error"] + 1e-6
    with pytest.raises(ValueError, match="needs a size to match"):
        compress(model, calib, Budget(frac=0.1), method="rrr", progress=False)
    with pytest.raises(ValueError, match="method"):
        compress(model, calib, method="pca", progress=False)


def _latency_script(monkeypatch, per_layer, whole):
    """compare_latency scripted: ``per_layer`` for a layer against its factored form,
    ``whole`` for the whole model against the original."""
    def compare(original, compressed, shape, repeats):
        one = isinstance(compressed, (SparseLowRankConv2d, SparseLowRankLinear))
        return (per_layer if one else whole)(original, compressed, shape, repeats)
    monkeypatch.setattr(lrsa.pipeline.speed, "compare_latency", compare)


def test_never_slower_reverts_the_least_gaining_layers(trained, monkeypatch):
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

    _latency_script(monkeypatch, per_layer, whole)
    comp, rep = compress(model, calib, Budget(layer_size=0.4), fallback="time", progress=False)
    assert rep.speed["faster"] and rep.speed["reverted"] == ["features.7", "classifier.2"]
    assert all(v == 1.2 for v in rep.speed["speedups"].values())
    original = fold_batchnorm(model)
    for name in rep.speed["reverted"]:
        row = next(r for r in rep.layers if r["name"] == name)
        assert row["kind"] == "dense" and row["params_compressed"] == row["params_original"]
        assert torch.equal(comp.get_submodule(name).weight, original.get_submodule(name).weight)


def test_mac_budget_is_met_and_cuts_early_layers_more(trained):
    """network_macs spreads the sizes by each layer's multiply-adds: the compressed model
    stays within the MAC budget (a factored layer's MACs are its stored size per output
    position), and the high-resolution early layer keeps less than under a weight budget
    of the same overall size."""
    from lrsa.report import count_macs
    model, calib, _ = trained
    by_macs, rep_macs = compress(model, calib, Budget(macs=0.5), fallback=None,
                                 progress=False)
    original = fold_batchnorm(model)
    assert count_macs(by_macs, (1, 1, 8, 8)) <= 0.5 * count_macs(original, (1, 1, 8, 8))
    stored = rep_macs.params_compressed / rep_macs.params_original
    _, rep_params = compress(model, calib, Budget(size=stored), fallback=None, progress=False)
    cr = lambda rep, name: next(r["params_compressed"] / r["params_original"]  # noqa: E731
                                for r in rep.layers if r["name"] == name)
    assert cr(rep_macs, "features.3") < cr(rep_params, "features.3")
    with pytest.raises(ValueError, match="takes one of size, macs"):
        compress(model, calib, Budget(size=0.5, macs=0.5), progress=False)


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


def test_a_alone_only_when_the_plan_asks_for_it(trained):
    """The default never stores a layer as A alone (it won on held-out layer error yet lost
    about a point of VGG-16's accuracy); a plan with ratio=inf gets exactly that."""
    model, calib, _ = trained
    _, rep = compress(model, calib, Budget(size=0.3), fallback=None, progress=False)
    solved = [r for r in rep.layers if r["kind"] == "factored"]
    assert solved and all(r["choice"] != "A only" for r in solved)
    plan = {r["name"]: LayerPlan(ratio=math.inf, target_cr=0.3) for r in solved}
    _, rep = compress(model, calib, plan, fallback=None, progress=False)
    assert {r["choice"] for r in rep.layers if r["kind"] == "factored"} == {"A only"}


def _linear_with_spectrum(n, d, singular_values, seed):
    """nn.Linear(d, n) whose weight has the given singular values (random singular vectors)."""
    g = torch.Generator().manual_seed(seed)
    P, _ = torch.linalg.qr(torch.randn(n, n, generator=g))
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g))
    s = torch.tensor(singular_values, dtype=torch.float32)
    layer = nn.Linear(d, n)
    with torch.no_grad():
        layer.weight.copy_(P[:, :len(s)] @ torch.diag(s) @ Q[:, :len(s)].T)
    return layer


def test_network_spread_is_the_brute_force_optimum_of_the_energy_product():
    """Equal-shaped layers (every rank costs the same): the greedy spread's ranks maximize
    the product of the layers' kept shares of ||W||_F^2 over every rank combination within
    the budget (brute force), and the budget holds."""
    n, d, budget_ranks = 12, 12, 9  # a rank of a 12 x 12 layer stores 24 of its 144 weights
    spectra = [[9, 0.5, 0.3, 0.2, 0.1, 0.05], [3, 2.9, 2.8, 2.7, 0.2, 0.1],
               [5, 4, 1, 0.5, 0.2, 0.1]]  # optimum (1, 4, 4), not the even (3, 3, 3)
    layers = [(f"fc{i}", _linear_with_spectrum(n, d, s, i)) for i, s in enumerate(spectra)]
    plan = {name: LayerPlan() for name, _ in layers}
    spread_network_target(plan, layers, budget_ranks * (n + d) / (3 * n * d))
    ranks = [round(plan[name].target_cr * n * d / (n + d)) for name, _ in layers]

    def log_energy(rs):
        return sum(math.log(sum(x * x for x in s[:r]) / sum(x * x for x in s))
                   for s, r in zip(spectra, rs))

    best = max((rs for rs in itertools.product(range(1, 6), repeat=3)
                if sum(rs) <= budget_ranks), key=log_energy)
    assert sum(ranks) <= budget_ranks
    assert log_energy(ranks) == pytest.approx(log_energy(best), abs=1e-9)


def test_network_spread_keeps_a_layer_dense_and_refuses_a_budget_below_rank_one():
    """A budget near the whole network's size leaves a layer dense (target_cr 1) rather than
    storing factors larger than its weight; one that cannot give every layer rank 1 names
    the problem."""
    layers = [("a", _linear_with_spectrum(8, 8, [1] * 8, 0)),
              ("b", _linear_with_spectrum(8, 8, [4, 2, 1, 0.5], 1))]
    plan = {name: LayerPlan() for name, _ in layers}
    spread_network_target(plan, layers, 0.99)
    assert plan["a"].target_cr == 1.0
    with pytest.raises(ValueError, match="smallest rank"):
        spread_network_target(plan, layers, 0.05)


def test_network_spread_in_rank_multiples_is_the_brute_force_optimum():
    """With rank_multiple=2 every layer's rank is a multiple of 2 and the ranks maximize the
    energy product over all multiples of 2 within the budget (brute force)."""
    n, d, budget_ranks = 12, 12, 10
    spectra = [[9, 0.5, 0.3, 0.2, 0.1, 0.05], [3, 2.9, 2.8, 2.7, 0.2, 0.1],
               [5, 4, 1, 0.5, 0.2, 0.1]]
    layers = [(f"fc{i}", _linear_with_spectrum(n, d, s, i)) for i, s in enumerate(spectra)]
    plan = {name: LayerPlan(rank_multiple=2) for name, _ in layers}
    spread_network_target(plan, layers, budget_ranks * (n + d) / (3 * n * d))
    ranks = [round(plan[name].target_cr * n * d / (n + d)) for name, _ in layers]

    def log_energy(rs):
        return sum(math.log(sum(x * x for x in s[:r]) / sum(x * x for x in s))
                   for s, r in zip(spectra, rs))

    best = max((rs for rs in itertools.product((2, 4), repeat=3) if sum(rs) <= budget_ranks),
               key=log_energy)
    assert all(r % 2 == 0 for r in ranks) and sum(ranks) <= budget_ranks
    assert log_energy(ranks) == pytest.approx(log_energy(best), abs=1e-9)


@pytest.mark.parametrize("m, expected", [(0, (0, 16)), (3, (7, 16)), (20, (20, 5))])
def test_split_rounds_the_rank_down_and_gives_the_rest_to_kept_channels(m, expected):
    """A 64 x 576 conv (9 columns per channel), 23 x (64 + 576) weights. B alone: rank 23
    rounds down to 16, nothing else. With 3 kept channels the rank left is 20, rounded to
    16, and the 4 ranks freed buy 4 x 640 / (9 x 64) = 4.4 more channels (7 in all); with
    20 channels the rank left (5) is under the multiple and stays."""
    from lrsa.pipeline.layer import _split
    budget = 23 * (64 + 576)
    got = _split(budget, m, 64, 576, 9, 64, 16)
    assert got == expected
    kept, rank = got
    assert kept * 9 * 64 + rank * 640 <= budget


def test_compress_refuses_a_rank_multiple_that_is_not_a_positive_integer(trained):
    """As an argument or in a plan of its own (0 would never grow a rank in the spread)."""
    model, calib, _ = trained
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="rank_multiple must be a positive integer"):
            compress(model, calib, Budget(size=0.3, rank_multiple=bad), progress=False)
    plan = {n: LayerPlan(rank_multiple=0) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}
    with pytest.raises(ValueError, match="rank_multiple must be a positive integer, got 0 "
                                         r"\(layer "):
        compress(model, calib, plan, progress=False)


def test_ratio_zero_is_low_rank_alone_at_the_budget(trained):
    """ratio=0 asks for B alone: every approximated layer has no kept channel and the rank
    that fills its target (reduced-rank regression's), and without a size it is refused."""
    model, calib, _ = trained
    plan = {n: LayerPlan(ratio=0.0, target_cr=0.4) for n, m in model.named_modules()
            if isinstance(m, (nn.Conv2d, nn.Linear))}
    _, rep = compress(model, calib, plan, fallback=None, progress=False)
    for r in rep.layers:
        assert r["kept_channels"] == 0 and r["choice"] == "B only"
        assert r["rank"] == int(0.4 * r["n"] * r["d"] + 1e-6) // (r["n"] + r["d"])
    plan = {n: dataclasses.replace(p, target_cr=None) for n, p in plan.items()}
    with pytest.raises(ValueError, match="ratio=0 .* needs a target_cr"):
        compress(model, calib, plan, progress=False)
    with pytest.raises(ValueError, match="ratio=0 .* needs a size"):
        Budget(ratio=0.0)


def test_time_fallback_tries_b_alone_before_the_dense_layer(trained, monkeypatch):
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
    _latency_script(monkeypatch, per_layer, whole)
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


def test_report_rows_describe_the_model_as_stored(trained, tmp_path, monkeypatch):
    """A layer solved but stored dense reports kind dense, its full size and CR 100 %, with
    what was tried (and why it was not kept) in separate fields; every row's size is what
    the saved model holds, counted module by module, in the report object, its JSON and its
    markdown."""
    model, calib, _ = trained

    def per_layer(dense, factored, shape, repeats):  # features.7 (64 x 32) is slower
        s = 0.7 if tuple(dense.weight.shape[:2]) == (64, 32) else 1.5
        return {"original_median_s": s, "compressed_median_s": 1.0, "speedup": s,
                "original_min_s": s, "compressed_min_s": 1.0}

    def whole(original, compressed, shape, repeats):
        return {"original_median_s": 1.3, "compressed_median_s": 1.0, "speedup": 1.3,
                "original_min_s": 1.3, "compressed_min_s": 1.0}

    _latency_script(monkeypatch, per_layer, whole)
    comp, rep = compress(model, calib, Budget(layer_size=0.4), fallback="time", progress=False)
    save_compressed(comp, tmp_path / "c.pt", arch="small_cnn", report=rep)
    loaded, saved_report = load_compressed(tmp_path / "c.pt")
    rows = {r["name"]: r for r in rep.layers}
    dense = rows["features.7"]
    assert dense["kind"] == "dense" and dense["cr"] == 1.0 and dense["choice"] is None
    assert dense["params_compressed"] == dense["params_original"] == 64 * 32 * 9
    assert dense["tried"]["params"] < dense["params_original"]
    assert dense["tried"]["cr"] == pytest.approx(dense["tried"]["params"] / (64 * 32 * 9))
    assert "slower" in dense["decision"] and "0.70x" in dense["decision"]
    for saved in (rep.to_dict()["layers"], saved_report["layers"]):
        assert [r["params_compressed"] for r in saved] == [r["params_compressed"]
                                                           for r in rep.layers]
    for name, r in rows.items():
        mod = loaded.get_submodule(name)
        held = (mod.num_parameters_stored - r["n"] if r["kind"] == "factored"
                else mod.weight.numel())  # biases aside, as eq. 15 counts
        assert held == r["params_compressed"], name
        assert isinstance(mod, (SparseLowRankConv2d, SparseLowRankLinear)) == \
            (r["kind"] == "factored")
    line = next(s for s in rep.markdown().splitlines() if s.startswith("| features.7 "))
    assert line.split(" | ")[1:8] == ["dense", "-", "-", "-", "100.0", "-", "-"]


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
                                                                            monkeypatch):
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

    _latency_script(monkeypatch, per_layer, whole)
    _, rep = compress(model, calib, Budget(layer_size=0.4), fallback="time", progress=False)
    solved = [r for r in rep.layers if r["kind"] != "original"]
    assert solved and all(r["kind"] == "factored" for r in solved)
    for r in solved:
        assert "within the timing noise" in r["decision"] and "0.90x" in r["decision"]
        assert r["layer_speedups"] == {1: 0.9, 128: 0.9}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "other object"])
def test_a_damaged_work_file_is_named_and_recomputed(trained, tmp_path, damage):
    model, calib, _ = trained
    budget = Budget(layer_size=0.4)
    ref, ref_rep = compress(model, calib, budget, workdir=tmp_path, progress=False,
                            fallback=None)
    victim = sorted(tmp_path.glob("layer_*.pt"))[1]
    if damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:200])
    elif damage == "garbage":
        victim.write_bytes(b"not a torch file at all\n" * 10)
    else:
        torch.save({"state_dict": {}}, victim)
    with pytest.warns(UserWarning, match=f"{victim.name}.*recomputing layer"):
        again, rep = compress(model, calib, budget, workdir=tmp_path, progress=False,
                              fallback=None)
    x = torch.cat(calib)[:16]
    with torch.no_grad():
        torch.testing.assert_close(again(x), ref(x), rtol=1e-5, atol=1e-5)
    torch.load(victim, weights_only=True)  # rewritten whole
    assert [r["params_compressed"] for r in rep.layers] == \
        [r["params_compressed"] for r in ref_rep.layers]
