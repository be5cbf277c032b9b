"""lrsa.course: one source per lesson, the student versions nbgrader generates from it, and
the round trip a grading course makes (generate, submit, autograde).

The structure tests read the committed notebooks; the nbgrader tests need nbgrader
(``pip install -e ".[grade]"``, installed by CI) and share the session's single grading run
with tests/test_notebooks.py and tests/test_docs.py (tests/_notebook_runs.py).
"""

import re
from pathlib import Path

import pytest

from lrsa.course import grading

nbformat = pytest.importorskip("nbformat", reason="pip install 'lrsa[nb]'")

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted((ROOT / "notebooks" / "solutions").glob("*.ipynb"))


def _exercises(nb):
    """Exercise number -> its cells, from each '### Exercise K' heading to the next heading."""
    out, k = {}, None
    for cell in nb.cells:
        m = re.match(r"### Exercise (\d+)", cell.source) if cell.cell_type == "markdown" else None
        if m:
            k = int(m.group(1))
            out[k] = []
        elif cell.cell_type == "markdown" and re.match(r"#{1,3} ", cell.source):
            k = None  # a section after the exercises (one that uses the labs' functions)
        elif k is not None:
            out[k].append(cell)
    return out


def _grade_ids(cells):
    return [c.metadata.get("nbgrader", {}).get("grade_id") for c in cells]


def test_the_lessons_are_the_sources():
    assert grading.lesson_names() == [p.stem for p in SOURCES]
    assert len(SOURCES) >= 8


@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_every_exercise_is_marked_for_nbgrader(path):
    """Each exercise: a written answer (0 points), an answer cell whose solution sits after
    the student's `... = ...` line, and a locked check cell worth one point that calls
    lrsa.course.exercises (a lab: lrsa.course.labs) and shows no value (nbgrader would read
    a shown number as a partial grade)."""
    exercises = _exercises(nbformat.read(path, as_version=4))
    assert 2 <= len(exercises) <= 4, path.name
    for k, cells in exercises.items():
        assert _grade_ids(cells) == [f"exercise{k}_{kind}"
                                     for kind in ("reasoning", "answer", "check")], (path.name, k)
        reasoning, answer, check = (c.metadata.nbgrader for c in cells)
        assert reasoning["grade"] and reasoning["solution"] and reasoning["points"] == 0
        assert answer["solution"] and not answer["grade"] and not answer["locked"]
        assert check["grade"] and check["locked"] and check["points"] == 1
        before, _, after = cells[1].source.partition("### BEGIN SOLUTION")
        assert re.search(r"= \.\.\.", before) and "### END SOLUTION" in after, (path.name, k)
        # hidden tests (graded only by nbgrader) come after the visible check
        visible = re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", cells[2].source,
                         flags=re.S)
        checker = re.search(r"\b(exercises|labs)\.\w+\(", visible)
        assert checker and visible.rstrip().endswith(";")
        hidden = cells[2].source.find("### BEGIN HIDDEN TESTS")
        assert hidden == -1 or cells[2].source.find(checker.group(0)) < hidden


@pytest.mark.parametrize("prefix", ["07", "08", "09"])
def test_the_later_lessons_have_two_labs_with_hidden_tests(prefix):
    """The implementation labs: at least two graded checks per lesson hold tests nbgrader
    runs and the student does not see."""
    path = next(p for p in SOURCES if p.name.startswith(prefix))
    exercises = _exercises(nbformat.read(path, as_version=4))
    hidden = [k for k, cells in exercises.items()
              if "### BEGIN HIDDEN TESTS" in cells[2].source]
    assert len(hidden) >= 2, (path.name, hidden)


def test_make_course_lays_out_an_nbgrader_course(tmp_path):
    names = grading.make_course(tmp_path)
    assert names == [p.stem for p in SOURCES]
    for name in names:
        assert (tmp_path / "source" / name / f"{name}.ipynb").is_file()
    from traitlets.config import Config  # what nbgrader's config loader hands the file

    config = Config()
    exec((tmp_path / "nbgrader_config.py").read_text(), {"get_config": lambda: config})
    assert config.ClearSolutions.code_stub == {"python": ""}
    assert config.Execute.timeout >= 600


def test_lessons_name_a_folder_without_sources(tmp_path):
    with pytest.raises(FileNotFoundError, match="no course sources"):
        grading.lesson_names(tmp_path)


# ------------------------------------------------------------------ with nbgrader

def _graded():
    import _notebook_runs

    reason = _notebook_runs.unavailable()
    if reason:
        pytest.skip(reason)
    if not _notebook_runs.grading_available():
        pytest.skip("nbgrader is not installed: pip install -e '.[grade]'")
    return _notebook_runs.grade_course()


def _cells(nb):
    """What a student sees of a notebook: each cell's type, source and nbgrader marks."""
    return [(c.cell_type, c.source, c.metadata.get("nbgrader")) for c in nb.cells]


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_committed_student_notebook_is_what_nbgrader_generates(path):
    """notebooks/NN.ipynb is generate_assignment's output for its source today: the two
    cannot drift apart (regenerate with `python -m lrsa.course`)."""
    grades = _graded()
    generated = nbformat.read(grades.released[path.stem], as_version=4)
    committed = nbformat.read(ROOT / "notebooks" / path.name, as_version=4)
    assert _cells(committed) == _cells(generated), (
        f"notebooks/{path.name} is not what nbgrader makes of solutions/{path.name}: "
        "run `python -m lrsa.course` and commit the result")
    answers = [c.source for c in generated.cells if "nbgrader" in c.metadata
               and c.metadata.nbgrader["grade_id"].endswith(("_answer", "_reasoning"))]
    assert not any("SOLUTION" in s for s in answers)  # the answers are gone


@pytest.mark.slow
@pytest.mark.parametrize("path", SOURCES, ids=[p.stem for p in SOURCES])
def test_autograde_gives_full_points_to_the_solutions_and_none_to_the_untouched(path):
    """The round trip a course makes: the source submitted as is (every exercise answered)
    scores every check point; the generated student version, untouched, scores zero."""
    grades = _graded()
    lesson = path.stem
    checks = len(_exercises(nbformat.read(path, as_version=4)))
    assert grades.scores[lesson, "filled"] == (checks, checks)
    assert grades.scores[lesson, "untouched"] == (0, checks)
    filled = grades.cells[lesson, "filled"]
    assert all(filled[f"exercise{k}_check"] == 1 for k in range(1, checks + 1))
    print(f"{lesson}: filled {grades.scores[lesson, 'filled']}, "
          f"untouched {grades.scores[lesson, 'untouched']}")


def test_cli_course_lays_out_a_course_and_refuses_a_full_folder(tmp_path, capsys):
    from lrsa.cli import main

    assert main(["course", str(tmp_path / "c")]) == 0
    assert "nbgrader generate_assignment 01_" in capsys.readouterr().out
    assert (tmp_path / "c" / "nbgrader_config.py").is_file()
    assert main(["course", str(tmp_path / "c")]) == 2
    assert "is not empty" in capsys.readouterr().err
    assert main(["course", str(tmp_path / "d"), "--notebooks", str(tmp_path)]) == 2
    assert "no course sources" in capsys.readouterr().err
