"""The course's notebooks and saved measurements travel in the wheel as package data.

They live at the repository's top (``notebooks/``, ``benchmarks/results/``), where a clone's
users open them; building a wheel copies them to ``lrsa/course/_data/``, where
:mod:`lrsa.course.resources` finds them in an installation without the repository.
Everything else about the package is in ``pyproject.toml``.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
#: folder -> the files of it the course reads
COURSE_DATA = {"notebooks": ("*.ipynb", "solutions/*.ipynb"),
               "benchmarks/results": ("*.json", "*.npz")}


class BuildWithCourseData(build_py):
    """``build_py`` that also copies :data:`COURSE_DATA` into ``lrsa/course/_data``."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "lrsa" / "course" / "_data"
        for folder, patterns in COURSE_DATA.items():
            for pattern in patterns:
                for source in sorted((ROOT / folder).glob(pattern)):
                    destination = target / folder / source.relative_to(ROOT / folder)
                    self.mkpath(str(destination.parent))
                    self.copy_file(str(source), str(destination))


setup(cmdclass={"build_py": BuildWithCourseData})
