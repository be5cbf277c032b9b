"""lrsa.course.resources: one lookup for the course's files, in a clone or an installed wheel."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lrsa.course import resources

ROOT = Path(__file__).resolve().parents[2]


def test_a_clone_reads_its_own_folders():
    assert resources.ROOTS[0] == ROOT
    assert resources.results_dir() == ROOT / "benchmarks" / "results"
    assert resources.notebooks_dir() == ROOT / "notebooks"
    assert resources.saved_results("frontier") == json.loads(
        (ROOT / "benchmarks" / "results" / "frontier.json").read_text())


def test_the_first_root_holding_the_folder_wins(monkeypatch, tmp_path):
    empty, first, second = tmp_path / "empty", tmp_path / "clone", tmp_path / "packaged"
    empty.mkdir()
    for root, text in ((first, '{"from": 1}'), (second, '{"from": 2}')):
        (root / "benchmarks" / "results").mkdir(parents=True)
        (root / "benchmarks" / "results" / "both.json").write_text(text)
    monkeypatch.setattr(resources, "ROOTS", (empty, first, second))
    assert resources.results_dir() == first / "benchmarks" / "results"
    assert resources.saved_results("both") == {"from": 1}
    with pytest.raises(FileNotFoundError, match="no saved measurement nothing.json"):
        resources.saved_results("nothing")


def test_a_missing_folder_names_the_places_looked(monkeypatch, tmp_path):
    monkeypatch.setattr(resources, "ROOTS", (tmp_path,))
    with pytest.raises(FileNotFoundError, match=f"notebooks .*{tmp_path}"):
        resources.notebooks_dir()


@pytest.mark.slow
def test_an_installed_wheel_carries_the_course(tmp_path):
    """Build the wheel, install it into a fresh venv (its dependencies borrowed from this
    environment by a path entry, so no network), and use the course from outside any clone."""
    source = tmp_path / "source"  # a copy: the build writes build/ beside the sources
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".ipynb_checkpoints")
    for part in ("lrsa", "notebooks", "benchmarks/results"):
        shutil.copytree(ROOT / part, source / part, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, source / name)
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "-w", str(wheels), str(source)], check=True,
                   cwd=tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip())
    here = [p for p in sys.path if p.endswith("site-packages")]
    (purelib / "borrowed.pth").write_text("\n".join(here) + "\n")  # torch, numpy, ...
    wheel, = wheels.glob("lrsa-*.whl")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)], check=True)
    script = f"""
import json, sys
import lrsa, lrsa.course.resources as r
from lrsa.course import grading
assert lrsa.__file__.startswith({str(venv)!r}), lrsa.__file__
assert str(r.results_dir()).startswith({str(purelib)!r}), r.results_dir()
saved = {str(ROOT / 'benchmarks/results/frontier.json')!r}
assert r.saved_results("frontier") == json.load(open(saved))
names = grading.make_course(sys.argv[1])
print(json.dumps(names))
"""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([python, "-c", script, str(tmp_path / "course")], cwd=tmp_path,
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    expected = sorted(p.stem for p in (ROOT / "notebooks" / "solutions").glob("*.ipynb"))
    assert json.loads(out.stdout) == expected
    for name in expected:
        assert (tmp_path / "course" / "source" / name / f"{name}.ipynb").read_bytes() == (
            ROOT / "notebooks" / "solutions" / f"{name}.ipynb").read_bytes()


def test_saved_correctness_unpacks_what_the_ablation_packs(monkeypatch, tmp_path):
    rng = np.random.default_rng(0)
    correct = (rng.random((3, 13)) < 0.7).astype(np.uint8)  # 13 images: packbits pads to 16
    results = tmp_path / "benchmarks" / "results"
    results.mkdir(parents=True)
    np.savez_compressed(results / "abl.npz", seeds__after=np.array([0, 1, 2]),
                        validation=np.arange(5), report=np.arange(5, 13),
                        **{"b_alone__after": np.packbits(correct, axis=1)})
    monkeypatch.setattr(resources, "ROOTS", (tmp_path,))
    seeds, val, report, got = resources.saved_correctness("abl")
    assert seeds == {"after": [0, 1, 2]} and len(val) + len(report) == 13
    assert list(got) == [("b_alone", "after")]
    assert np.array_equal(got["b_alone", "after"], correct)
    with pytest.raises(FileNotFoundError, match="no saved correctness"):
        resources.saved_correctness("nothing")
