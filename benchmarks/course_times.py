"""How long each course notebook takes, in smoke mode or in full mode: the numbers of the
lecture plan (docs/teaching.md, "What each notebook needs, and how long it takes").

    python benchmarks/course_times.py [--notebooks 01 02 ...] [--full] [--out ...]

Run it alone on the machine. For each notebook, in order, the version with the answers
(``notebooks/solutions/``) runs first, then the student version (``notebooks/``, untouched:
its graded cells raise, so errors are allowed there and counted), each by
``jupyter nbconvert --execute`` in a process of its own with ``LRSA_SMOKE=1`` and
``TQDM_DISABLE=1``, from the notebooks' own folder, into a temporary folder (the repository is
not written). Every run shares one empty cache folder made for this run
(``LRSA_CACHE``): the first run of a notebook computes what it caches (the digits CNN, lambda
grids, solved layers), so the answers' time is the cold one and the student's the warm one.
With ``--full`` the notebooks run without ``LRSA_SMOKE`` (full mode: whatever data and
weights the environment names, e.g. ``LRSA_VGG16``), the version with the answers only (the
student's runs the same cells up to its first unanswered exercise), into
``course_times_full``. Writes benchmarks/results/course_times.json (or
``course_times_full.json``) and .md with the wall time of each run, the errors it raised,
the code version, the CPU and the thread count.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, cpu_model, git_version, table
from lrsa.report import write_report

RESULTS = Path(__file__).parent / "results"
NOTEBOOKS = REPO / "notebooks"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--notebooks", nargs="+", help="number prefixes (default: all)")
    p.add_argument("--full", action="store_true",
                   help="full mode (no LRSA_SMOKE), the version with the answers only")
    p.add_argument("--out")
    a = p.parse_args()
    a.out = a.out or str(RESULTS / ("course_times_full" if a.full else "course_times"))
    names = sorted(f.name for f in NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")
                   if a.notebooks is None or f.name[:2] in a.notebooks)
    if not names:
        raise SystemExit(f"no notebooks match {a.notebooks} in {NOTEBOOKS}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, TQDM_DISABLE="1", LRSA_CACHE=str(Path(tmp) / "cache"))
        env.pop("LRSA_SMOKE", None)
        if not a.full:
            env["LRSA_SMOKE"] = "1"
        versions = [("answers", NOTEBOOKS / "solutions")] + \
            ([] if a.full else [("student", NOTEBOOKS)])
        for name in names:
            row = {"notebook": name.removesuffix(".ipynb")}
            for version, folder in versions:
                seconds, errors = run(folder / name, Path(tmp) / version, env)
                row |= {f"{version}_s": round(seconds, 1), f"{version}_errors": errors}
                print(row, flush=True)
            rows.append(row)
    mode = "full mode (no LRSA_SMOKE)" if a.full else "smoke mode (LRSA_SMOKE=1)"
    data = {"what": f"wall time of each course notebook in {mode}",
            "argv": sys.argv, "code_version": git_version(), "cpu": cpu_model(),
            "cores": os.cpu_count(), "python": platform.python_version(),
            "threads_env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS",
                                                           "MKL_NUM_THREADS")},
            "data": {k: os.environ.get(k) for k in ("LRSA_VGG16", "LRSA_DATA", "LRSA_IMAGENET")},
            "order": "per notebook: answers first (cold cache)"
                     + ("" if a.full else ", then student (warm)"),
            "rows": rows}
    data["markdown"] = table(rows, ["notebook", "answers_s", "answers_errors"]
                             + ([] if a.full else ["student_s", "student_errors"]))
    write_report(a.out, data)
    print(data["markdown"])


def run(notebook, out_dir, env):
    """Execute ``notebook`` into ``out_dir``; (wall seconds, number of error outputs)."""
    out_dir.mkdir(exist_ok=True)
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
           "--allow-errors", "--ExecutePreprocessor.timeout=1200", "--output-dir",
           str(out_dir), str(notebook)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=notebook.parent, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{notebook.name} did not run:\n{done.stderr[-2000:]}")
    executed = json.loads((out_dir / notebook.name).read_text())
    errors = sum(o.get("output_type") == "error" for c in executed["cells"]
                 for o in c.get("outputs", []))
    return seconds, errors


if __name__ == "__main__":
    main()
