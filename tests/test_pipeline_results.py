"""lrsa.pipeline.results: the report describes the model as stored."""

import json

import pytest

from lrsa.layers import SparseLowRankConv2d, SparseLowRankLinear
from lrsa.pipeline import (Budget, CompressionReport, compress, load_compressed,
                           save_compressed)


def test_report_rows_describe_the_model_as_stored(trained, tmp_path, latency_script):
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

    latency_script(per_layer, whole)
    comp, rep = compress(model, calib, Budget(layer_size=0.4), fallback="time", progress=False)
    save_compressed(comp, tmp_path / "c.pt", arch="small_cnn", report=rep)
    loaded, saved_report = load_compressed(tmp_path / "c.pt")
    rows = {r["name"]: r for r in rep.layers}
    dense = rows["features.7"]
    assert dense["kind"] == "dense" and dense["size"] == 1.0 and dense["choice"] is None
    assert dense["params_compressed"] == dense["params_original"] == 64 * 32 * 9
    assert dense["tried"]["params_compressed"] < dense["params_original"]
    tried = dense["tried"]
    assert tried["size"] == pytest.approx(tried["params_compressed"] / (64 * 32 * 9))
    assert "slower" in dense["decision"] and "0.70x" in dense["decision"]
    assert isinstance(saved_report, CompressionReport)  # the type compress returns
    assert saved_report.to_dict() == json.loads(json.dumps(rep.to_dict()))
    for saved in (rep.to_dict()["layers"], saved_report.to_dict()["layers"]):
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


def test_an_original_row_stores_the_whole_weight_and_a_dense_one_keeps_what_was_tried():
    from lrsa.pipeline.results import LayerReport
    row = LayerReport.original("fc", "Linear", 6, 4, decision="kept")
    assert (row.kind, row.params_compressed, row.rank, row.nonzero_columns, row.size) == \
        ("original", 24, 4, 4, 1.0)
    solved = LayerReport(name="fc", type="Linear", n=6, d=4, params_original=24,
                         kind="factored", rank=1, size_b=10 / 24, size=10 / 24,
                         params_compressed=10, nonzero_columns=0, choice="B only")
    dense = solved.stored_dense("not faster")
    assert (dense.kind, dense.params_compressed, dense.rank, dense.size) == ("dense", 24, 4, 1.0)
    assert dense.tried["params_compressed"] == 10 and dense.tried["choice"] == "B only"
    # a dense row saved under the old names reads back, what was tried included
    from lrsa.pipeline.results import renamed
    old = dict(dense, cr=1.0, cr_a=0.0, cr_b=1.0,
               tried={"cr": 10 / 24, "params": 10,
                      **{k: v for k, v in dense.tried.items()
                         if k not in ("size", "params_compressed")}})
    for k in ("size", "size_a", "size_b"):
        del old[k]
    assert LayerReport(**renamed(old)) == dense


def test_a_solved_row_counts_the_fit_it_describes():
    """Sizes from the fit's shapes: A over 2 kept columns of a 6 x 4 weight (12 values),
    B of rank 1 (6 + 4 values); the fit's choice fields pass through unchanged."""
    import torch

    from lrsa.pipeline.layer import LayerFit
    from lrsa.pipeline.results import LayerReport
    fit = LayerFit(torch.zeros(6, 4), torch.ones(6, 1), torch.ones(1, 4), torch.zeros(6), 0.5,
                   None, method="lrsa", choice="A+B", params_compressed=22,
                   nonzero_columns=2, nonzeros=12, sparsity="channel", kept_channels=2,
                   refined=True, ranked_by="admm")
    row = LayerReport.original("fc", "Linear", 6, 4).solved(fit, response="relu",
                                                            rel_error=0.1, seconds=2.0)
    assert (row.kind, row.rank, row.params_compressed, row.kept_channels) == \
        ("factored", 1, 22, 2)
    assert row.size_a == pytest.approx(12 / 24) and row.size_b == pytest.approx(10 / 24)
    assert row.size == pytest.approx(22 / 24)
    assert (row.choice, row.refined, row.ranked_by, row.response, row.converged) == \
        ("A+B", True, "admm", "relu", True)
