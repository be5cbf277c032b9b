"""Every notebook in notebooks/ runs top to bottom (LRSA_SMOKE=1) and is committed clean.

Each notebook checks itself in an ``assert`` cell, so "runs without an error" is a real test.
Execution needs nbclient, nbformat, ipykernel and a kernel named python3
(``pip install 'lrsa[nb]'`` provides all four); without them the execution tests skip.
"""

import os
import time
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
KERNEL = "python3"
CELL_TIMEOUT = 600  # seconds per cell

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed: "
                               "pip install 'lrsa[nb]' to run the notebook tests")


def _read(path):
    return nbformat.read(path, as_version=4)


def _client(nb):
    """An nbclient NotebookClient for nb, or pytest.skip with the reason it cannot run."""
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed: "
                                   "pip install 'lrsa[nb]' to execute the notebooks")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed: "
                        "pip install 'lrsa[nb]' to execute the notebooks")
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.skip(f"no Jupyter kernel named {KERNEL!r}: run "
                    f"`python -m ipykernel install --sys-prefix --name {KERNEL}`")
    return nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                   resources={"metadata": {"path": str(NOTEBOOK_DIR)}})


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_committed_clean(path):
    """nbformat v4, kernel python3, no outputs or execution counts, and at least one assert
    (the notebook checks itself)."""
    nb = _read(path)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == KERNEL
    code = [c for c in nb.cells if c.cell_type == "code"]
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} carry outputs; clear them before committing"
    assert any("assert" in c.source for c in code), f"{path.name} has no assert cell"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path, monkeypatch):
    nb = _read(path)
    client = _client(nb)
    monkeypatch.setenv("LRSA_SMOKE", "1")  # the kernel inherits the environment
    monkeypatch.chdir(NOTEBOOK_DIR)
    from nbclient.exceptions import CellExecutionError

    start = time.perf_counter()
    try:
        client.execute()
    except CellExecutionError as e:
        pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
    elapsed = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0].ename}: {errors[0].evalue}"
    print(f"{path.name}: {elapsed:.1f} s (LRSA_SMOKE=1, {os.cpu_count()} CPUs)")
