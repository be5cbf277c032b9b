"""Each notebook executed once per test session, for two tests that need it executed.

tests/test_notebooks.py checks that every notebook and solution runs top to bottom in smoke
mode; tests/test_docs.py builds the site, whose pages show the notebooks *with* their outputs.
Executing the twelve notebooks twice would double the slowest part of the suite, so both ask
this module: the first asks it to execute a notebook, the second gets the same executed
notebook back (the docs build finds the copies in ``$LRSA_DOCS_EXECUTED``, see docs/conf.py).
pytest imports this module once per session, so the cache below is shared by both test
modules.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL = "python3"
CELL_TIMEOUT = 600  # seconds per cell


@dataclass
class Run:
    nb: object            # the executed nbformat notebook (outputs as far as it ran)
    seconds: float
    error: str | None     # None when every cell ran


_RUNS: dict[Path, Run] = {}


def unavailable() -> str | None:
    """Why notebooks cannot be executed here, or None."""
    import importlib.util

    for mod in ("nbformat", "nbclient", "ipykernel"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not installed: pip install 'lrsa[nb]' to execute the notebooks"
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        return (f"no Jupyter kernel named {KERNEL!r}: run "
                f"`python -m ipykernel install --sys-prefix --name {KERNEL}`")
    return None


def run(path) -> Run:
    """Execute ``path`` (in its own folder, ``LRSA_SMOKE=1``) once per session; later calls
    return the same Run."""
    path = Path(path).resolve()
    if path not in _RUNS:
        import nbclient
        import nbformat
        from nbclient.exceptions import CellExecutionError

        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                         resources={"metadata": {"path": str(path.parent)}})
        old = os.environ.get("LRSA_SMOKE")
        os.environ["LRSA_SMOKE"] = "1"  # the kernel inherits the environment
        start, error = time.perf_counter(), None
        try:
            client.execute()
        except CellExecutionError as e:
            error = str(e)
        finally:
            if old is None:
                os.environ.pop("LRSA_SMOKE", None)
            else:
                os.environ["LRSA_SMOKE"] = old
        _RUNS[path] = Run(nb, time.perf_counter() - start, error)
    return _RUNS[path]


def write_executed(paths, folder: Path) -> list[str]:
    """Execute ``paths`` (or reuse their runs) and write the ones that ran to the end under
    ``folder``, laid out as below ``notebooks/``; return the failures' names."""
    import nbformat

    failed = []
    for path in paths:
        r = run(path)
        if r.error:
            failed.append(Path(path).name)
            continue
        out = folder / Path(path).resolve().relative_to(NOTEBOOK_DIR)
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(r.nb, out)
    return failed
