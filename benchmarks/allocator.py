"""Speed-ups under glibc's default allocator and under one that keeps freed memory
(:data:`lrsa.timing.KEEP_MEMORY`), in both memory layouts: which realization is fastest for
the original networks, and what it does to the speed-ups.

    python benchmarks/allocator.py [--repeats 20]

The networks: VGG-16 under ``Budget.preset("fast")`` and NIN under the NIN benchmark's
default budget, factored by truncated SVD of the shared checkpoints' weights (the spread is
data-free, so the shapes are those of the headline runs; the factors' values do not change
a timing). Each allocator needs its own process (glibc reads the setting at start): the
script runs itself once per setting, one after the other. Writes
benchmarks/results/allocator.json and .md.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from _common import CHECKPOINT, checkpoint_path, git_version, table
from lrsa.batchnorm import fold_batchnorm
from lrsa.models import get_model, load_checkpoint
from lrsa.pipeline import Budget, compress
from lrsa.report import write_report
from lrsa.timing import KEEP_MEMORY, allocator, compare_latency

RESULTS = Path(__file__).parent / "results"


def networks():
    """name -> (BN-folded original, compressed), both in eval mode."""
    from nin_cifar10 import DEFAULT_BUDGET
    out = {}
    for name, path, budget in (("vgg16_bn", CHECKPOINT, Budget.preset("fast")),
                               ("nin_bn", checkpoint_path("nin_bn"),
                                DEFAULT_BUDGET)):
        model = get_model(name)
        load_checkpoint(model, path)
        calib = [torch.zeros(8, 3, 32, 32)]  # unused by the data-free SVD
        compressed, _ = compress(model.eval(), calib, budget, method="svd", progress=False)
        out[name] = (fold_batchnorm(model.eval()), compressed.eval())
    return out


def child(repeats):
    rows = []
    for name, (original, compressed) in networks().items():
        for batch in (128, 1):
            for cl in (False, True):
                r = compare_latency(original, compressed, (batch, 3, 32, 32), channels_last=cl,
                                    repeats=repeats if batch > 1 else 3 * repeats // 2)
                rows.append({"network": name, "batch": batch,
                             "allocator": ("KEEP_MEMORY" if allocator() == KEEP_MEMORY
                                           else allocator()),
                             "layout": "channels_last" if cl else "contiguous",
                             "original ms": r["original_median_s"] * 1e3,
                             "compressed ms": r["compressed_median_s"] * 1e3,
                             "speed-up": r["speedup"],
                             "speed-up (min)": r["original_min_s"] / r["compressed_min_s"]})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    print(json.dumps(rows))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        return child(a.repeats)
    rows = []
    for tunables in (None, KEEP_MEMORY):
        env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
        if tunables:
            env["GLIBC_TUNABLES"] = tunables
        out = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(a.repeats)],
                             env=env, capture_output=True, text=True, check=True)
        rows += json.loads(out.stdout.strip().splitlines()[-1])
    fastest = {n: min((r for r in rows if r["network"] == n and r["batch"] == 128),
                      key=lambda r: r["original ms"]) for n in {r["network"] for r in rows}}
    md = "\n".join([
        f"Code {git_version()}, {torch.get_num_threads()} threads, fp32; median of "
        f"{a.repeats} interleaved repeats at batch 128 ({3 * a.repeats // 2} at batch 1), "
        "minimum-time ratio beside it. Fastest realization for each original at batch 128: "
        + "; ".join(f"{n}: {r['layout']}, {r['allocator']}" for n, r in sorted(fastest.items()))
        + ".", "", table(rows, list(rows[0]))])
    write_report(RESULTS / "allocator", {"code_version": git_version(), "rows": rows,
                                         "repeats": a.repeats, "markdown": md})
    print(md)


if __name__ == "__main__":
    main()
