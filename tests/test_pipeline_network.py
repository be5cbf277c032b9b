"""lrsa.pipeline.network: compress end to end on the digits CNN (the `trained` fixture of
conftest.py): agreement with A + B, strategies, resume and its refusals, damaged work files,
bad arguments, baselines at matching sizes; then a small torch transformer: attention and
MLP projections, single-weight sparsity, the layers that cannot take it."""

import copy
import math

import pytest
import torch
from torch import nn

import lrsa.pipeline
from lrsa.batchnorm import fold_batchnorm
from lrsa.layers import SparseLowRankConv2d, SparseLowRankLinear, keep_structure_hook
from lrsa.models import small_cnn
from lrsa.pipeline import Budget, LayerPlan, compress, load_compressed, save_compressed
from lrsa.utils import set_module
from lrsa.report import count_parameters
from lrsa.train import evaluate


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
    budget = Budget(relative_lam1=0.05)
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
    assert [r["size"] for r in rep.layers] == pytest.approx([r["size"] for r in ref_rep.layers])
    # other settings in the same folder are refused, not mixed in
    with pytest.raises(ValueError, match="other settings"):
        compress(model, calib, Budget(relative_lam1=0.2), workdir=tmp_path / "run", progress=False)


def test_symmetric_and_asymmetric_agree_on_the_first_approximated_layer_only(trained):
    # the first approximated layer sees the original inputs under both strategies; later
    # ones see the approximated network's inputs only under the asymmetric one
    model, calib, _ = trained
    kw = dict(response="linear", progress=False, fallback=None)
    nets = [compress(model, calib, Budget(relative_lam1=0.05), strategy=s, **kw)[0]
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
        compress(model, calib, Budget(relative_lam1=0.1), method="rrr", progress=False)
    with pytest.raises(ValueError, match="method"):
        compress(model, calib, method="pca", progress=False)


# ---------------------------------------------------------------------------- transformers

class _TinyTransformer(nn.Module):
    """Tokens (batch, 6, 8) -> an embedding, one torch encoder layer, a linear head."""

    def __init__(self, activation="gelu", d_ff=64):
        super().__init__()
        self.embed = nn.Linear(8, 32)
        self.encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(
            32, 4, d_ff, dropout=0.0, batch_first=True, activation=activation), 1)
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(1))


@pytest.fixture(scope="module")
def tokens():
    torch.manual_seed(0)
    return torch.randn(96, 6, 8)


PROJECTIONS = ["encoder.layers.0.self_attn.q_proj", "encoder.layers.0.self_attn.k_proj",
               "encoder.layers.0.self_attn.v_proj", "encoder.layers.0.self_attn.out_proj",
               "encoder.layers.0.linear1", "encoder.layers.0.linear2"]


def test_transformer_at_full_size_gives_the_original_outputs(tokens):
    torch.manual_seed(0)
    model = _TinyTransformer().eval()
    compressed, report = compress(model, tokens, Budget(layer_size=1.0), progress=False)
    assert [r.name for r in report.layers] == ["embed", *PROJECTIONS, "head"]
    assert all(r.kind == "original" for r in report.layers)
    with torch.no_grad():
        torch.testing.assert_close(compressed(tokens), model(tokens), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation,response", [("relu", "relu"), ("gelu", "linear")])
def test_factored_attention_and_mlp_equal_their_dense_a_plus_uv(tokens, activation, response):
    torch.manual_seed(1)
    model = _TinyTransformer(activation).eval()
    compressed, report = compress(model, tokens, Budget(size=0.5), progress=False,
                                  fallback=None)
    rows = {r.name: r for r in report.layers}
    assert all(rows[name].kind == "factored" for name in PROJECTIONS)
    assert rows["encoder.layers.0.linear1"].response == response
    assert rows["encoder.layers.0.self_attn.q_proj"].response == "linear"
    dense = copy.deepcopy(compressed)
    for name in PROJECTIONS:
        set_module(dense, name, compressed.get_submodule(name).to_dense_module())
    with torch.no_grad():
        torch.testing.assert_close(dense(tokens), compressed(tokens), rtol=1e-4, atol=1e-5)
        error = (compressed(tokens) - model(tokens)).norm() / model(tokens).norm()
    assert float(error) < 0.5
    assert report.params_compressed / report.params_original == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("sparsity", ["unstructured", "2:4"])
def test_single_weight_sparsity_keeps_its_pattern_and_its_stated_size(tokens, sparsity, tmp_path):
    from lrsa.decompose import entry_storage
    from lrsa.layers import EntrySparseLowRankLinear
    torch.manual_seed(2)
    model = _TinyTransformer().eval()
    compressed, report = compress(model, tokens, Budget(layer_size=0.75, ratio=3.0),
                                  sparsity=sparsity, progress=False)
    rows = {r.name: r for r in report.layers}
    for name in PROJECTIONS:
        mod, row = compressed.get_submodule(name), rows[name]
        assert row.sparsity == sparsity and row.kind == "factored"
        assert isinstance(mod, EntrySparseLowRankLinear)
        A = mod.sparse_matrix()
        assert int((A != 0).sum()) == row.nonzeros == mod.nonzeros
        stored = entry_storage(sparsity, row.nonzeros, row.n) + row.rank * (row.n + row.d)
        assert row.params_compressed == math.ceil(stored) <= 0.75 * row.n * row.d + 1
        if sparsity == "2:4" and row.nonzeros:
            assert ((A != 0).reshape(row.n, -1, 4).sum(-1) <= 2).all()
    # fine-tuning keeps the zeros; the saved model loads back with them
    opt = torch.optim.SGD(compressed.parameters(), lr=0.1)
    opt.register_step_post_hook(keep_structure_hook(compressed))
    compressed(tokens).square().mean().backward()
    opt.step()
    for name in PROJECTIONS:
        mod = compressed.get_submodule(name)
        assert int((mod.sparse.weight != 0).sum()) <= mod.nonzeros
    save_compressed(compressed, tmp_path / "m.pt", report=report)
    loaded, _ = load_compressed(tmp_path / "m.pt", build=_TinyTransformer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(tokens), compressed(tokens))


def test_layers_that_cannot_take_the_pattern_are_kept_with_the_reason(tokens):
    torch.manual_seed(3)
    model = _FirstOutput(nn.Sequential(
        nn.Linear(8, 10), nn.ReLU(), nn.Linear(10, 12), nn.ReLU(),
        nn.MultiheadAttention(12, 2, batch_first=True, add_bias_kv=True)))
    _, report = compress(model, tokens, Budget(layer_size=0.6, all_layers=True),
                         sparsity="2:4", progress=False)
    rows = {r.name: r for r in report.layers}
    assert rows["net.0"].kind == "factored" and rows["net.0"].sparsity == "2:4"
    assert rows["net.2"].kind == "original"
    assert rows["net.2"].decision == ("kept as it is: 2:4 sparsity needs in_features to be a "
                                      "multiple of 4, got 10")
    assert rows["net.4"].type == "MultiheadAttention" and rows["net.4"].kind == "original"
    assert "add_bias_kv" in rows["net.4"].decision


class _FirstOutput(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        h = self.net[:4](x)
        return self.net[4](h, h, h)[0]


@pytest.mark.parametrize("kwargs,match", [
    (dict(method="oats"), "thresholds single weights"),
    (dict(sparsity="2:4", budget=None), "needs a size to fill"),
    (dict(sparsity="rows"), "'channel', 'unstructured'"),
])
def test_bad_sparsity_arguments(tokens, kwargs, match):
    kwargs.setdefault("budget", Budget(size=0.5))
    with pytest.raises(ValueError, match=match):
        compress(_TinyTransformer(), tokens, progress=False, **kwargs)


def test_every_long_running_call_is_quiet_unless_asked():
    """One default for progress bars across the library: off (the CLI turns them on)."""
    import inspect

    from lrsa.pipeline import compress, finetune
    from lrsa.solver import solve_layer
    from lrsa.train import train
    for fn in (compress, finetune, solve_layer, train):
        assert inspect.signature(fn).parameters["progress"].default is False, fn.__name__
