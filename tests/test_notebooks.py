"""Every lesson's source (notebooks/solutions/, the notebook with its exercises answered) and
student version (notebooks/) runs top to bottom (LRSA_SMOKE=1) and is committed clean.

Each notebook checks itself in an ``assert`` cell, and a source's exercise checks raise
unless its answers are right, so "runs without an error" is a real test. How the notebooks
are executed (by nbgrader's autograde where it is installed): tests/_notebook_runs.py.
Execution needs nbclient, nbformat, ipykernel and a kernel named python3
(``pip install 'lrsa[nb]'`` provides all four); without them the execution tests skip.
"""

import os
import tempfile
from pathlib import Path

import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
SOURCE_DIR = NOTEBOOK_DIR / "solutions"
SOURCES = sorted(SOURCE_DIR.glob("*.ipynb"))
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb")) + SOURCES
KERNEL = "python3"

nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed: "
                               "pip install 'lrsa[nb]' to run the notebook tests")


def _read(path):
    return nbformat.read(path, as_version=4)


def test_there_are_notebooks():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_every_notebook_has_its_source():
    """notebooks/NN_name.ipynb <-> notebooks/solutions/NN_name.ipynb, both ways."""
    assert {p.stem for p in SOURCES} == {p.stem for p in NOTEBOOK_DIR.glob("*.ipynb")}


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


COURSE = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", COURSE, ids=[p.stem for p in COURSE])
def test_notebook_opens_with_what_the_student_learns(path):
    """The first cell says what the student will learn (a list) before the run times."""
    first = _read(path).cells[0]
    assert first.cell_type == "markdown"
    text = first.source
    learn, runtime = text.find("**What you will learn.**"), text.find("**Run time.**")
    assert learn != -1, f"{path.name}: no 'What you will learn' in the first cell"
    assert runtime != -1, f"{path.name}: no 'Run time' in the first cell"
    assert learn < runtime, f"{path.name}: run times come before what the student learns"
    items = text[learn:runtime].count("\n* ")
    assert items >= 2, f"{path.name}: 'What you will learn' lists {items} items"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path):
    # executed once per session (tests/_notebook_runs.py): the docs build in test_docs.py
    # renders the same executed copies instead of executing every notebook a second time
    import _notebook_runs

    reason = _notebook_runs.unavailable()
    if reason:
        pytest.skip(reason)
    ran = _notebook_runs.run(path)
    if ran.error:
        pytest.fail(f"{path.name} failed:\n{ran.error}", pytrace=False)
    nb, elapsed = ran.nb, ran.seconds
    name = path.relative_to(NOTEBOOK_DIR).as_posix()
    errors = [(c, o) for c in nb.cells if c.cell_type == "code" for o in c.outputs
              if o.output_type == "error"]
    if ran.graded and path.parent == NOTEBOOK_DIR:
        # the untouched student version, autograded: only its checks fail, as unanswered
        unexpected = [o for c, o in errors if not (_is_check(c) and o.ename == "NotAnswered")]
        assert not unexpected, f"{name}: {unexpected[0].ename}: {unexpected[0].evalue}"
    else:
        assert not errors, f"{name}: {errors[0][1].ename}: {errors[0][1].evalue}"
    _check_interactive_cells(nb, name)
    _check_no_machine_paths(nb, name)
    how = "nbgrader autograde" if ran.graded else "nbclient"
    print(f"{name}: {elapsed:.1f} s (LRSA_SMOKE=1, {os.cpu_count()} CPUs, {how})")


def _is_check(cell):
    return cell.metadata.get("nbgrader", {}).get("grade_id", "").endswith("_check")


def _check_interactive_cells(nb, name):
    """Cells tagged "interactive" show one display carrying both the live widget (for widget
    front-ends) and a static PNG (for every other renderer), and no other widget output
    (a progress bar would be one more widget; a second figure a stale copy)."""
    for i, cell in enumerate(nb.cells):
        if "interactive" not in cell.metadata.get("tags", []):
            continue
        shown = [o for o in cell.outputs if o.output_type in ("display_data", "execute_result")]
        assert len(shown) == 1, f"{name} cell {i}: {len(shown)} displays, expected one"
        data = shown[0].data
        assert "application/vnd.jupyter.widget-view+json" in data, f"{name} cell {i}: no widget"
        assert "image/png" in data, f"{name} cell {i}: no static figure"


def _check_no_machine_paths(nb, name):
    """No output shows where this machine keeps things (home, temp or work folders)."""
    roots = {str(Path.home()), tempfile.gettempdir(), str(NOTEBOOK_DIR.parent)}
    for i, cell in enumerate(nb.cells):
        for o in cell.get("outputs", []):
            text = o.get("text", "") + "".join(
                v for k, v in o.get("data", {}).items() if k.startswith("text/"))
            leaked = [r for r in roots if r and r in text]
            assert not leaked, f"{name} cell {i} shows a machine path: {leaked}"
