r"""How the course checks an answer: the protocol every self-check and lab follows.

Every check (:mod:`lrsa.course.exercises`: an answer; :mod:`lrsa.course.labs`: a function
the student wrote) compares with a reference of its own and prints one line:

* ``answer is ...`` (the placeholder): "not answered yet"; returns None, so a notebook with
  open exercises still runs top to bottom;
* right within the stated tolerance: "correct"; returns True;
* wrong: "not yet" with a hint (never the answer); returns False.

Under nbgrader (``nbgrader autograde`` or ``validate`` set ``NBGRADER_EXECUTION`` in the
kernel's environment) an unanswered exercise raises :class:`NotAnswered` and a wrong one
:class:`WrongAnswer`, so the check cell (an autograded cell of one point) scores zero; a
right one prints "correct" and scores its point. An answer of the wrong kind or shape raises
``TypeError`` / ``ValueError`` saying what was expected.
"""

from __future__ import annotations

import os

import numpy as np

from ..utils import as_numpy

__all__ = ["NotAnswered", "WrongAnswer", "compare", "grading", "not_answered", "numbers",
           "unanswered", "verdict"]


class NotAnswered(AssertionError):
    """An exercise still at its placeholder ``...``, checked under nbgrader."""


class WrongAnswer(AssertionError):
    """A wrong answer, checked under nbgrader."""


def grading():
    """Whether nbgrader runs this kernel (autograde or validate): checks then raise."""
    return os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate")


def not_answered(title, what="answer"):
    message = f"{title}: not answered yet (replace ... with your {what})."
    if grading():
        raise NotAnswered(message)
    print(message)


def unanswered(answer):
    return answer is Ellipsis or (isinstance(answer, (tuple, list))
                                  and any(a is Ellipsis for a in answer))


def numbers(answer, shape, title):
    """The answer as a float array of the reference's shape, or a clear error."""
    if isinstance(answer, (str, bytes)) or callable(answer):
        raise TypeError(f"{title}: the answer must be a number or an array of numbers, "
                        f"got {type(answer).__name__}")
    try:
        got = as_numpy(answer)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{title}: the answer must be a number or an array of numbers, "
                        f"got {answer!r}") from exc
    if got.shape != tuple(shape):
        want = "a single number" if shape == () else f"shape {tuple(shape)}"
        raise ValueError(f"{title}: expected {want}, got shape {got.shape}")
    return got


def verdict(title, ok, hint):
    message = f"{title}: correct." if ok else f"{title}: not yet. Hint: {hint}"
    if not ok and grading():
        raise WrongAnswer(message)
    print(message)
    return bool(ok)


def compare(title, answer, reference, hint, *, atol=0.0, rtol=0.0):
    """Shared path of every checker: placeholder, shape check, comparison, one line."""
    if unanswered(answer):
        return not_answered(title)
    reference = np.asarray(reference, dtype=float)
    got = numbers(answer, reference.shape, title)
    return verdict(title, np.allclose(got, reference, atol=atol, rtol=rtol), hint)
