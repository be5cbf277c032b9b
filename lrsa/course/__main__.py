"""``python -m lrsa.course``: regenerate the student notebooks from their sources."""

from .grading import write_student_notebooks

for path in write_student_notebooks():
    print("wrote", path)
