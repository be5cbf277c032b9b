"""solve_layer on NumPy arrays against the same solve on torch tensors (CPU), interleaved.

The solver is written once against the array API, so a NumPy input runs in NumPy (what
notebooks 01-02 do where torch is not installed) and a tensor in torch (the pipeline). This
times both on the same random layers (float32, ReLU response, 100 iterations, the same lambdas),
alternating NumPy and torch in one process, and checks that both reach the same objective.

    python benchmarks/solver_backends.py [--repeats 5] [--out benchmarks/results/solver_backends]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import cpu_model, git_version, table
from lrsa import solve_layer
from lrsa.report import write_report
from lrsa.timing import allocator

RESULTS = Path(__file__).parent / "results"
#: (outputs n, lowered inputs d, samples N): a digits-CNN layer, a VGG-16 conv2 and conv4 shape
LAYERS = ((16, 72, 2000), (64, 288, 4000), (128, 1152, 8000))
LAM1, LAM2, ITERATIONS = 0.02, 0.05, 100


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out", default=str(RESULTS / "solver_backends"))
    a = p.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for n, d, N in LAYERS:
        X = rng.standard_normal((d, N)).astype(np.float32)
        Y = np.maximum((rng.standard_normal((n, d)) / np.sqrt(d)).astype(np.float32) @ X, 0)
        inputs = {"numpy": (X, Y), "torch": (torch.from_numpy(X), torch.from_numpy(Y))}
        times, objective = {k: [] for k in inputs}, {}
        for _ in range(a.repeats):
            for kind, (x, y) in inputs.items():
                start = time.perf_counter()
                sol = solve_layer(x, y, LAM1, LAM2, max_iter=ITERATIONS, tol=1e-12)
                times[kind].append(time.perf_counter() - start)
                objective[kind] = sol.objective
        med = {k: float(np.median(v)) for k, v in times.items()}
        rows.append({"n": n, "d": d, "N": N, "times_s": times, "median_s": med,
                     "numpy_over_torch": med["numpy"] / med["torch"],
                     "objective": objective,
                     "objective_rel_gap": abs(objective["numpy"] - objective["torch"])
                     / abs(objective["torch"])})
    data = {"argv": sys.argv, "code_version": git_version(), "torch": torch.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu": cpu_model(), "allocator": allocator(),
            "repeats": a.repeats, "iterations": ITERATIONS, "lam1": LAM1, "lam2": LAM2,
            "rows": rows}
    shown = [{"layer (n x d, N)": f"{r['n']} x {r['d']}, {r['N']}",
              "NumPy ms": f"{1e3 * r['median_s']['numpy']:.0f}",
              "torch ms": f"{1e3 * r['median_s']['torch']:.0f}",
              "NumPy / torch": f"{r['numpy_over_torch']:.2f}",
              "objective gap": f"{r['objective_rel_gap']:.1e}"} for r in rows]
    data["markdown"] = "\n".join([
        f"solve_layer, ReLU response, float32, {ITERATIONS} iterations, medians of "
        f"{a.repeats} interleaved repeats; code {data['code_version']}, {data['threads']} "
        f"threads, {data['cpu']}.", "", table(shown, list(shown[0]))])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
