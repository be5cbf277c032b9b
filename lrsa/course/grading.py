"""The course as an nbgrader course: one source per lesson, the student versions generated.

``notebooks/solutions/NN_name.ipynb`` is each lesson's only source: the whole notebook, with
every exercise answered between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` and marked
with nbgrader's cell metadata:

* the answer cell (``exerciseK_answer``): the student's ``x = ...`` line, then the worked
  solution, which ``nbgrader generate_assignment`` removes;
* the derivation (``exerciseK_reasoning``): a written answer, 0 points (read by the teacher,
  not scored), replaced by a prompt in the student version;
* the check cell (``exerciseK_check``): the :mod:`lrsa.course.exercises` self-check, locked,
  1 point. Under nbgrader the check raises unless the answer is right, so ``nbgrader
  autograde`` gives the point exactly when the self-check says "correct".

``notebooks/NN_name.ipynb`` is what ``generate_assignment`` makes of the source, committed so
that students can open it without nbgrader; :func:`write_student_notebooks` regenerates it
and the test suite checks that the committed copy is what nbgrader generates today.

A teacher builds a course folder with ``lrsa course DIR`` (:func:`make_course`), then runs
nbgrader there as usual (``nbgrader generate_assignment 01_proximal_operators``, ...,
``nbgrader autograde 01_proximal_operators``). Needs ``pip install 'lrsa[grade]'``.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from .resources import notebooks_dir

#: nbgrader settings of the course: no stub below the student's ``x = ...`` line, a prompt
#: for written answers, and cells long enough for the full (non-smoke) runs
SETTINGS = {
    "ClearSolutions": {"code_stub": {"python": ""},
                       "text_stub": "*Your derivation or explanation here (read, not scored).*"},
    "Execute": {"timeout": 3600},
}


def lesson_names(notebooks=None):
    """The lessons (assignment ids), one per source in ``notebooks/solutions``."""
    sources = Path(notebooks or notebooks_dir()) / "solutions"
    if not sources.is_dir():
        raise FileNotFoundError(f"no course sources (solutions/*.ipynb) in {sources.parent}")
    return sorted(p.stem for p in sources.glob("*.ipynb"))


def config_text():
    """``nbgrader_config.py`` for the course (:data:`SETTINGS`)."""
    lines = ["c = get_config()  # noqa: F821 (nbgrader's config loader defines it)"]
    for section, values in SETTINGS.items():
        lines += [f"c.{section}.{key} = {value!r}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def make_course(root, notebooks=None):
    """Lay out an nbgrader course in ``root``: ``source/<lesson>/<lesson>.ipynb`` for every
    lesson and ``nbgrader_config.py``. Returns the lessons."""
    root, notebooks = Path(root), Path(notebooks or notebooks_dir())
    names = lesson_names(notebooks)
    for name in names:
        folder = root / "source" / name
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(notebooks / "solutions" / f"{name}.ipynb", folder / f"{name}.ipynb")
    (root / "nbgrader_config.py").write_text(config_text())
    return names


def grader(root):
    """nbgrader's Python API on the course in ``root``, with :data:`SETTINGS`."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    # nbgrader runs the `alembic` script from PATH: a virtual environment's python started
    # without activating it would not find the one installed beside it
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")

    config = Config({section: dict(values) for section, values in SETTINGS.items()})
    return NbGraderAPI(coursedir=CourseDirectory(root=str(root), config=config), config=config)


def _checked(result, what):
    """``result`` of an nbgrader API call, or a RuntimeError carrying nbgrader's log."""
    if not result["success"]:
        raise RuntimeError(f"nbgrader {what} failed:\n{result.get('error') or result['log']}")
    return result


def generate(root, names):
    """``nbgrader generate_assignment`` for each lesson; returns lesson -> student notebook."""
    api = grader(root)
    for name in names:
        _checked(api.generate_assignment(name), f"generate_assignment {name}")
    return {name: Path(root) / "release" / name / f"{name}.ipynb" for name in names}


def write_student_notebooks(notebooks=None):
    """Regenerate ``notebooks/NN_name.ipynb`` from the sources; returns the paths written."""
    notebooks = Path(notebooks or notebooks_dir())
    with tempfile.TemporaryDirectory() as tmp:
        released = generate(tmp, make_course(tmp, notebooks))
        written = []
        for name, path in released.items():
            shutil.copyfile(path, notebooks / f"{name}.ipynb")
            written.append(notebooks / f"{name}.ipynb")
    return written
