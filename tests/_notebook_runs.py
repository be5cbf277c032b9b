"""Each notebook executed once per test session, for the tests that need it executed.

tests/test_course.py grades the course with nbgrader, tests/test_notebooks.py checks that
every notebook runs top to bottom in smoke mode, and tests/test_docs.py builds the site,
whose pages show the notebooks *with* their outputs. Executing the notebooks once for each
would triple the slowest part of the suite, so all three ask this module:

* with nbgrader installed (``pip install -e ".[grade]"``, as CI does), :func:`run` grades the
  whole course once: ``nbgrader generate_assignment`` makes each student version from its
  source, ``nbgrader autograde`` runs two submissions per lesson, ``filled`` (the source, every
  exercise answered) and ``untouched`` (the student version as generated). Its executed
  notebooks are the runs: a source's is the ``filled`` one, a student notebook's the
  ``untouched`` one (where every check raises ``NotAnswered``, by design);
* without nbgrader, each notebook is executed with nbclient, a source with
  ``NBGRADER_EXECUTION=validate`` (a wrong answer raises) and a student notebook as a student
  runs it (the checks print "not answered yet").

pytest imports this module once per session, so the cache below is shared by the tests.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SOURCE_DIR = NOTEBOOK_DIR / "solutions"
KERNEL = "python3"
CELL_TIMEOUT = 600  # seconds per cell


@dataclass
class Run:
    nb: object            # the executed nbformat notebook (outputs as far as it ran)
    seconds: float
    error: str | None     # None when the notebook ran to its end
    graded: bool = False  # executed by nbgrader autograde (checks raise unless right)


@dataclass
class Grades:
    """The course as nbgrader graded it: (lesson, student) -> score, and the release."""
    scores: dict = field(default_factory=dict)    # (lesson, student) -> (score, max_score)
    cells: dict = field(default_factory=dict)     # (lesson, student) -> {grade_id: score}
    released: dict = field(default_factory=dict)  # lesson -> generated student notebook


_RUNS: dict[Path, Run] = {}
GRADES: Grades | None = None
STUDENTS = {"filled": SOURCE_DIR, "untouched": None}  # None: the generated release


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


def grading_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("nbgrader") is not None


@contextmanager
def _env(**values):
    """Set environment variables (the kernel inherits them) for the block."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run(path) -> Run:
    """``path`` executed in smoke mode (``LRSA_SMOKE=1``), once per session: by nbgrader when
    it is installed (the whole course at the first call), else by nbclient."""
    path = Path(path).resolve()
    if path not in _RUNS:
        if grading_available():
            grade_course()
        else:
            _RUNS[path] = _execute(path)
    return _RUNS[path]


def _execute(path: Path) -> Run:
    import nbclient
    import nbformat
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(path.parent)}})
    grading = "validate" if path.parent == SOURCE_DIR else ""
    start, error = time.perf_counter(), None
    with _env(LRSA_SMOKE="1", NBGRADER_EXECUTION=grading):
        try:
            client.execute()
        except CellExecutionError as e:
            error = str(e)
    return Run(nb, time.perf_counter() - start, error)


def grade_course() -> Grades:
    """Generate the student versions and autograde both submissions of every lesson, once
    per session, in a temporary course folder; record the runs and the grades."""
    global GRADES
    if GRADES is not None:
        return GRADES
    import nbformat
    from nbgrader.api import Gradebook

    from lrsa.course import grading as course

    root = Path(tempfile.mkdtemp(prefix="lrsa-course-"))
    lessons = course.make_course(root, NOTEBOOK_DIR)
    grades = Grades(released=course.generate(root, lessons))
    api = course.grader(root)
    for student, folder in STUDENTS.items():
        for lesson in lessons:
            submitted = root / "submitted" / student / lesson
            submitted.mkdir(parents=True)
            shutil.copyfile(grades.released[lesson] if folder is None
                            else folder / f"{lesson}.ipynb", submitted / f"{lesson}.ipynb")
            start = time.perf_counter()
            with _env(LRSA_SMOKE="1"):
                result = api.autograde(lesson, student)
            seconds = time.perf_counter() - start
            out = root / "autograded" / student / lesson / f"{lesson}.ipynb"
            nb = nbformat.read(out, as_version=4) if out.is_file() else nbformat.v4.new_notebook()
            error = None if result["success"] else (result.get("error") or result["log"])
            path = (SOURCE_DIR if folder is not None else NOTEBOOK_DIR) / f"{lesson}.ipynb"
            _RUNS[path.resolve()] = Run(nb, seconds, error, graded=True)
    with warnings.catch_warnings(), Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gb:
        # nbgrader 0.9's own queries trip SQLAlchemy's autoflush warnings (SAWarning); the
        # scores read are complete
        warnings.simplefilter("ignore")
        for lesson in lessons:
            for student in STUDENTS:
                sub = gb.find_submission_notebook(lesson, lesson, student)
                grades.scores[lesson, student] = (sub.score, sub.max_score)
                grades.cells[lesson, student] = {g.name: g.score for g in sub.grades}
    GRADES = grades
    return grades


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
