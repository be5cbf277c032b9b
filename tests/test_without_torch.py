"""Where torch is not installed (JupyterLite, a NumPy-only teaching server), the maths core
and notebooks 01-02 still run: ``lrsa.prox``, ``lrsa.admm``, ``lrsa.solver`` (with the exact
fits and baselines it shares the array API with), ``lrsa.viz``, ``lrsa.reference`` and the
course's widgets and self-checks import torch only where a function needs it. Each test runs in
a subprocess whose import system refuses torch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, NoTorch())
"""


def _run_without_torch(code, *args):
    env = {**os.environ, "LRSA_SMOKE": "1", "MPLBACKEND": "Agg"}
    out = subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *args], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_the_operators_run_and_torch_names_fail_clearly():
    got = json.loads(_run_without_torch("""
import json
import numpy as np
import lrsa
from lrsa.admm import he_yuan_correction
V = np.array([[3.0, 0.1], [4.0, 0.1]])
out = {"l21": lrsa.prox_l21(V, 1.0).tolist(), "svt": lrsa.svt(V, 10.0).tolist(),
       "soft": lrsa.soft_threshold(V, 1.0).tolist(), "torch": "torch" in sys.modules}
try:
    lrsa.compress
except ImportError as exc:
    out["compress"] = str(exc)
print(json.dumps(out))
"""))
    assert np.allclose(got["l21"], [[2.4, 0.0], [3.2, 0.0]])  # (3, 4) shrunk by 1/5
    assert got["svt"] == [[0.0, 0.0], [0.0, 0.0]]  # both singular values < 10
    assert got["soft"] == [[2.0, 0.0], [3.0, 0.0]]
    assert got["torch"] is False and got["compress"] == "torch is not installed here"


def test_the_solver_runs_on_numpy_and_agrees_with_torch():
    """solve_layer, the debiased refit and reduced-rank regression on NumPy, without torch,
    give what the torch run in this process gives (same iterations, same objective)."""
    import torch

    import lrsa
    rng = np.random.default_rng(0)
    X = rng.standard_normal((12, 300))
    Z = rng.standard_normal((6, 12)) @ X
    code = """
import json
import numpy as np
import lrsa
X = np.array(json.loads(sys.argv[1]))
Z = np.array(json.loads(sys.argv[2]))
relu = lrsa.solve_layer(X, np.maximum(Z, 0), 0.01, 0.02)
debiased = lrsa.solve_layer(X, Z, 0.01, 0.02, response="linear", debias=True)
U, V = lrsa.reduced_rank_regression(X, Z, 2)
print(json.dumps({"kinds": [type(v).__name__ for v in (relu.A, debiased.B, U)],
                  "iterations": relu.iterations, "F": relu.objective,
                  "debiased": debiased.objective, "rrr": (U @ V).tolist()}))
"""
    got = json.loads(_run_without_torch(code, json.dumps(X.tolist()), json.dumps(Z.tolist())))
    Xt, Zt = torch.from_numpy(X), torch.from_numpy(Z)
    relu = lrsa.solve_layer(Xt, torch.relu(Zt), 0.01, 0.02)
    debiased = lrsa.solve_layer(Xt, Zt, 0.01, 0.02, response="linear", debias=True)
    U, V = lrsa.reduced_rank_regression(Xt, Zt, 2)
    assert got["kinds"] == ["ndarray"] * 3
    assert got["iterations"] == relu.iterations
    assert abs(got["F"] - relu.objective) <= 1e-9 * abs(relu.objective)
    assert abs(got["debiased"] - debiased.objective) <= 1e-9 * abs(debiased.objective)
    assert np.allclose(got["rrr"], (U @ V).numpy(), atol=1e-10)


@pytest.mark.parametrize("notebook", ["01_proximal_operators", "02_three_block_admm"])
def test_notebook_runs_without_torch(notebook):
    """Every code cell of the notebook's source, in order (smoke mode), with its checks."""
    stdout = _run_without_torch("""
import json
ns = {}
for cell in json.load(open(sys.argv[1]))["cells"]:
    if cell["cell_type"] == "code":
        exec(compile("".join(cell["source"]), "cell", "exec"), ns)
print("torch loaded:", "torch" in sys.modules)
""", str(ROOT / "notebooks" / "solutions" / f"{notebook}.ipynb"))
    assert stdout.rstrip().endswith("torch loaded: False")
    assert stdout.count(": correct.") >= 4 and "not yet" not in stdout
    assert "FAIL" not in stdout
