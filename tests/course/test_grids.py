"""lrsa.course.grids: the lambda grid of the slider explorers, on the embedded digits CNN
(fast)."""

import json
import math

import pytest

from lrsa.course import explorer, grids
from lrsa.course.setups import digits_setup
from lrsa.pipeline import LayerPlan, SolverSettings, compress


@pytest.fixture(scope="module")
def setup():
    return digits_setup()


def test_lambda_grid_matches_compress_and_is_cached(setup, tmp_path, monkeypatch):
    layer, cache = "features.7", tmp_path / "grid.json"
    grid = grids.lambda_grid(setup.model, layer, setup.calib, [0.03, 0.3], [3.0, math.inf],
                             max_samples=1000, cache=cache, progress=False)
    assert (grid["n"], grid["d"]) == (64, 288) and len(grid["points"]) == 4
    for p in grid["points"]:
        assert len(p["column_norms"]) == 288 and len(p["singular_values"]) == p["rank"]
        assert sum(v > 0 for v in p["column_norms"]) == p["nonzero_columns"]
        if math.isinf(p["ratio"]):
            assert p["rank"] == 0 and p["size_b"] == 0
    for ratio in (3.0, math.inf):
        lo, hi = sorted((p for p in grid["points"] if p["ratio"] == ratio),
                        key=lambda p: p["relative_lam1"])
        assert hi["size"] < lo["size"]
    # the same solve as compress with a one-layer plan
    _, rep = compress(setup.model, setup.calib, {layer: LayerPlan(relative_lam1=0.03, ratio=3.0)},
                      solver=SolverSettings(max_samples=1000), fallback=None, progress=False)
    row = next(r for r in rep.layers if r["name"] == layer)
    p = explorer.grid_point(grid, 0.03, 3.0)
    assert (p["rank"], p["nonzero_columns"]) == (row["rank"], row["nonzero_columns"])
    assert abs(p["rel_error"] - row["rel_error"]) < 1e-5
    # read back from the cache without solving; other settings recompute
    import lrsa.pipeline

    def boom(*a, **k):
        raise AssertionError("solved again")

    monkeypatch.setattr(lrsa.pipeline, "approximate_layer", boom)
    again = grids.lambda_grid(setup.model, layer, setup.calib, [0.03, 0.3], [3.0, math.inf],
                              max_samples=1000, cache=cache, progress=False)
    assert again == {**grid, "cached": True} and not grid["cached"]
    assert again["seconds"] == grid["seconds"] > 0  # the time it took when solved
    assert json.loads(cache.read_text())["key"] == grid["key"]
    with pytest.raises(AssertionError, match="solved again"):
        grids.lambda_grid(setup.model, layer, setup.calib, [0.05], [3.0], max_samples=1000,
                          cache=cache, progress=False)
