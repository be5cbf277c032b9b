"""lrsa.course.lessons: the computations behind notebooks 07 and 10, checked by hand and on
small runs (the baselines at lrsa's sizes, eq. 15)."""


from lrsa.course import lessons as L


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


def test_plots_return_their_axes():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = [L.plot_heldout_splits(L.heldout_splits(_HELDOUT_ROWS)),
            L.plot_equal_size_top1(_GRID, 0.2, "energy", original=88.0),
            L.plot_frontier(_GRID), L.plot_frontier(_GRID, x="speedup_b128")]
    assert all(isinstance(ax, plt.Axes) for ax in axes)
    plt.close("all")

