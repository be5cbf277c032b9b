"""Fine-tuning throughput under torchrun: K processes against one, on this machine.

    python benchmarks/ddp_throughput.py [--processes 2 4] [--steps 30] [--rounds 3]

Fine-tunes the compressed VGG-16 of the VGG-16 benchmark (its work folder; random-weight
VGG-16 when absent) for ``--steps`` steps of global batch 128 with logit distillation, bf16,
as the benchmark does: once in one process and once under ``torchrun --nproc_per_node=K``
for each K, the machine's threads split evenly over the processes, in alternation
(``--rounds``). Reports images per second, median and best over the rounds, and the
ratio to one process. Writes benchmarks/results/ddp_throughput.json and .md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"
VGG_WORK = RESULTS / "vgg16_work"


def worker(steps, out):
    """One timed fine-tuning run in this process (a torchrun rank or a plain process)."""
    from _common import CHECKPOINT
    from lrsa import distributed
    from lrsa.batchnorm import fold_batchnorm
    from lrsa.data import make_loader
    from lrsa.models import get_model, load_checkpoint
    from lrsa.pipeline import finetune, load_compressed
    distributed.setup()
    teacher = get_model("vgg16_bn")
    if CHECKPOINT.is_file():
        load_checkpoint(teacher, CHECKPOINT)
    teacher = fold_batchnorm(teacher.eval())
    path = VGG_WORK / "compressed.pt"
    student = load_compressed(path)[0] if path.is_file() else fold_batchnorm(
        get_model("vgg16_bn").eval())
    g = torch.Generator().manual_seed(0)
    n = 128 * (steps + 2)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    warm = make_loader(x[:256], y[:256], 128, train=True, shard=True)
    finetune(student, warm, epochs=1, lr=1e-3, teacher=teacher, bf16=True)  # warm-up
    loader = make_loader(x[256:], y[256:], 128, train=True, shard=True)
    distributed.barrier()
    t0 = time.perf_counter()
    finetune(student, loader, epochs=1, lr=1e-3, teacher=teacher, bf16=True)
    distributed.barrier()
    seconds = time.perf_counter() - t0
    if distributed.is_main():
        Path(out).write_text(json.dumps({"seconds": seconds, "images": steps * 128,
                                         "threads": torch.get_num_threads(),
                                         "processes": distributed.world_size()}))
    distributed.teardown()


def timed(k, steps, threads):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "t.json"
        env = {**os.environ, "OMP_NUM_THREADS": str(max(threads // k, 1))}
        me = [str(Path(__file__).resolve()), "--worker", str(out), "--steps", str(steps)]
        cmd = ([sys.executable, *me] if k == 1 else
               [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={k}", *me])
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        return json.loads(out.read_text())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--processes", type=int, nargs="+", default=[2])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(RESULTS / "ddp_throughput"))
    a = p.parse_args()
    if a.worker:
        return worker(a.steps, a.worker)
    from _common import git_version
    from lrsa.report import write_report
    threads = torch.get_num_threads()
    runs = {k: [] for k in [1, *a.processes]}
    for _ in range(a.rounds):
        for k in runs:
            r = timed(k, a.steps, threads)
            runs[k].append(r["images"] / r["seconds"])
            print(k, "processes", f"{runs[k][-1]:.1f} images/s", flush=True)
    rows = {k: {"median": statistics.median(v), "best": max(v), "all": v}
            for k, v in runs.items()}
    lines = [f"Fine-tuning throughput, compressed VGG-16 (global batch 128, bf16, logit "
             f"distillation), {a.steps} steps a run, {a.rounds} rounds in alternation; "
             f"{threads} threads split over the processes; code {git_version()}.", "",
             "| processes | threads each | images/s, median | best | vs one process (median) |",
             "|---:|---:|---:|---:|---:|"]
    for k, r in rows.items():
        lines.append(f"| {k} | {max(threads // k, 1)} | {r['median']:.1f} | {r['best']:.1f} | "
                     f"{r['median'] / rows[1]['median']:.2f}x |")
    data = {"threads": threads, "steps": a.steps, "rounds": a.rounds,
            "code_version": git_version(), "runs": {str(k): v for k, v in rows.items()},
            "markdown": "\n".join(lines)}
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
