"""Where the course's files are: the notebooks and the saved measurements they read.

In a clone of the repository (an editable install) they are the repository's own
``notebooks/`` and ``benchmarks/results/``; in an installed wheel they are package data,
``lrsa/course/_data/``, copied there when the wheel is built (``setup.py``). One lookup,
:func:`course_path`, serves both, so ``lrsa course DIR`` and the notebooks work either way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

__all__ = ["course_path", "notebooks_dir", "results_dir", "saved_results", "saved_correctness"]

_HERE = Path(__file__).resolve().parent
#: where to look, in order: the clone holding this package (when it is one), the package data
ROOTS = tuple(root for root in (_HERE.parents[1], _HERE / "_data")
              if root != _HERE.parents[1] or (root / "pyproject.toml").is_file())


def course_path(*parts):
    """The course file or folder ``parts`` (e.g. ``"benchmarks", "results"``) under the
    first of ``ROOTS`` that holds it; ``FileNotFoundError`` naming the places looked."""
    for root in ROOTS:
        path = root.joinpath(*parts)
        if path.exists():
            return path
    raise FileNotFoundError(
        f"the course's {'/'.join(parts)} is neither in a clone of lrsa nor in this "
        f"installation's package data (looked in {', '.join(map(str, ROOTS))}); reinstall "
        "lrsa from its wheel or from a clone (pip install -e .)")


def notebooks_dir():
    """The course's notebooks: the student versions, with the sources in ``solutions/``."""
    return course_path("notebooks")


def results_dir():
    """The project's saved measurements (``benchmarks/results``) that the notebooks read."""
    return course_path("benchmarks", "results")


def _result_file(name, suffix, what):
    path = results_dir() / f"{name}{suffix}"
    if not path.is_file():
        raise FileNotFoundError(f"no saved {what} {path.name} in {path.parent}")
    return path


def saved_results(name):
    """The saved measurement ``benchmarks/results/<name>.json`` as a dict."""
    return json.loads(_result_file(name, ".json", "measurement").read_text())


def saved_correctness(name):
    """The per-image correctness a benchmark saved, ``benchmarks/results/<name>.npz``
    (``benchmarks/ablation.py``'s): ``(seeds, validation indices, report indices,
    correct)``: ``seeds`` maps each stage ("before" / "after" fine-tuning) to the seeds it
    holds, ``correct`` maps (method, stage) to a uint8 array (seeds, images), 1 where the
    image was classified correctly."""
    with np.load(_result_file(name, ".npz", "correctness")) as saved:
        n = len(saved["validation"]) + len(saved["report"])
        parts = [(k, *k.split("__")) for k in saved.files if "__" in k]
        seeds = {stage: saved[k].tolist() for k, what, stage in parts if what == "seeds"}
        correct = {(what, stage): np.unpackbits(saved[k], axis=1)[:, :n]
                   for k, what, stage in parts if what != "seeds"}
        return seeds, saved["validation"], saved["report"], correct
