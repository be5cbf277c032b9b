"""The Axes a course plot draws on, shared by the ``plot_*`` functions of
:mod:`lrsa.course.lessons`, :mod:`lrsa.course.speed` and :mod:`lrsa.course.fine_tuning`."""

from __future__ import annotations


def axes_or_new(ax, figsize=(5.5, 3.6)):
    """``ax``, or when it is None the Axes of a new figure of ``figsize`` (constrained
    layout). matplotlib is imported only then, so importing a lesson module does not pull
    it in."""
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax
