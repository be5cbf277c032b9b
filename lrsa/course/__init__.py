"""The course: what the notebooks call, their self-checks, and the nbgrader tooling.

Nothing here is needed to compress a network; the library is ``lrsa`` itself.

:mod:`~lrsa.course.lessons`, :mod:`~lrsa.course.speed`, :mod:`~lrsa.course.fine_tuning`
    the computations and figures of notebooks 07 and 10, 08 (where the time goes) and 09
    (fine-tuning and distillation);
:mod:`~lrsa.course.experiments`, :mod:`~lrsa.course.setups`
    the figure loops of notebooks 03-06 and the networks and data they run on;
:mod:`~lrsa.course.widgets`, :mod:`~lrsa.course.explorer`, :mod:`~lrsa.course.grids`
    sliders over one live figure, with a static small-multiples version; the lambda grid
    the explorers of notebooks 05 and 06 look up;
:mod:`~lrsa.course.exercises`
    the self-checks of the exercises (graded by nbgrader);
:mod:`~lrsa.course.grading`
    the course as an nbgrader course (``lrsa course DIR``); ``python -m lrsa.course``
    regenerates the student notebooks from their sources;
:mod:`~lrsa.course.resources`
    where the notebooks and saved measurements are, in a clone or an installed wheel.
"""
