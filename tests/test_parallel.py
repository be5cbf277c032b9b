"""lrsa.parallel: a lambda grid on a 2-worker local Dask cluster equals the serial one."""

import math
import sys

import pytest

from lrsa import parallel
from lrsa.course import grids
from lrsa.course.setups import digits_setup

distributed = pytest.importorskip("distributed", reason="pip install 'lrsa[distributed]'")


@pytest.fixture(scope="module")
def setup():
    return digits_setup()


def test_grid_on_two_workers_equals_serial(setup):
    args = (setup.model, "features.7", setup.calib, [0.03, 0.1, 0.3], [3.0, math.inf])
    serial = grids.lambda_grid(*args, max_samples=1000, progress=False)
    with parallel.dask_client(workers=2) as client:
        assert len(client.scheduler_info()["workers"]) == 2
        remote = grids.lambda_grid(*args, max_samples=1000, progress=False, client=client)
    assert remote["key"] == serial["key"]
    assert [(p["relative_lam1"], p["ratio"]) for p in remote["points"]] == \
        [(p["relative_lam1"], p["ratio"]) for p in serial["points"]]  # the serial order
    for got, want in zip(remote["points"], serial["points"]):
        # same structure exactly; numbers to float tolerance (one thread per worker here,
        # two in the serial run: sums may be ordered differently)
        for key in ("rank", "nonzero_columns", "size", "size_a", "size_b", "converged"):
            assert got[key] == want[key], key
        for key in ("rel_error", "relu_error", "lam1", "lam2"):
            assert got[key] == pytest.approx(want[key], rel=1e-4, abs=1e-7), key
        assert got["column_norms"] == pytest.approx(want["column_norms"], rel=1e-3, abs=1e-6)


def test_client_arguments_are_checked():
    with pytest.raises(ValueError, match="workers must be >= 1"):
        with parallel.dask_client(workers=0):
            pass
    with pytest.raises(ValueError, match="remote scheduler"):
        with parallel.dask_client(address="tcp://127.0.0.1:1", workers=2):
            pass


def test_missing_dask_says_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"lrsa\[distributed\]"):
        with parallel.dask_client(workers=1):
            pass


def test_symmetric_layers_on_two_workers_equal_serial(setup):
    """compress(strategy="symmetric", client=...) solves the layers on the workers: the
    same structure and, to float tolerance, the same weights as the serial run."""
    import torch

    from lrsa.pipeline import Budget, SolverSettings, compress

    kw = dict(strategy="symmetric", solver=SolverSettings(max_samples=1000), fallback=None,
              progress=False)
    serial, rep_serial = compress(setup.model, setup.calib, Budget(size=0.5), **kw)
    with parallel.dask_client(workers=2) as client:
        remote, rep_remote = compress(setup.model, setup.calib, Budget(size=0.5),
                                      client=client, **kw)
    for a, b in zip(rep_remote.layers, rep_serial.layers):
        assert (a["name"], a["kind"], a["rank"], a["nonzero_columns"],
                a["params_compressed"]) == (b["name"], b["kind"], b["rank"],
                                            b["nonzero_columns"], b["params_compressed"])
    x = torch.cat(setup.calib)[:64]
    with torch.no_grad():
        torch.testing.assert_close(remote(x), serial(x), rtol=1e-3, atol=1e-4)
    with pytest.raises(ValueError, match="asymmetric strategy needs"):
        compress(setup.model, setup.calib, client=object(), strategy="asymmetric",
                 progress=False)
