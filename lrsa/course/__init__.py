"""The course: what the notebooks call, their self-checks, and the nbgrader tooling.

Nothing here is needed to compress a network; the library is :mod:`lrsa` itself.

:mod:`~lrsa.course.lessons`
    the computations and figures of notebooks 07-10;
:mod:`~lrsa.course.experiments`, :mod:`~lrsa.course.setups`
    the figure loops of notebooks 03-06 and the networks and data they run on;
:mod:`~lrsa.course.widgets`, :mod:`~lrsa.course.explorer`
    sliders over one live figure, with a static small-multiples version;
:mod:`~lrsa.course.exercises`
    the self-checks of the exercises (graded by nbgrader);
:mod:`~lrsa.course.grading`
    the course as an nbgrader course (``lrsa course DIR``); ``python -m lrsa.course``
    regenerates the student notebooks from their sources;
:mod:`~lrsa.course.resources`
    where the notebooks and saved measurements are, in a clone or an installed wheel.
"""
