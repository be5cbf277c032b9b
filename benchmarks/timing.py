"""A compressed network's CPU speed-up under one condition: several processes, interleaved
repeats, raw times kept, the median ratio with a bootstrap interval over processes and the
minimum-time ratio beside it, under glibc's default allocator and, as a second labelled
row, under ``lrsa.timing.KEEP_MEMORY``.

    python benchmarks/timing.py --compressed runs/ablation_nin/seed0/b_alone.pt \\
        [--model nin_bn | vgg16_bn] [--processes 5] [--repeats 30] [--out ...]

Run it alone on the machine. The realization (contiguous or channels_last fp32) is chosen on
the original alone, per batch size, in a process of its own under the default allocator,
then applied to both networks in every process; bf16 is timed for the original only, as a
record (the accuracies are fp32). Each process loads both networks, times them interleaved
at batch 1 and 128 (:func:`lrsa.timing.compare_latency`) and, in processes of their own,
each network's peak resident memory over one batch-128 forward pass.
"""

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from _common import checkpoint_path, cpu_model, git_version, load_pair, table
from lrsa.evaluation import percentile_bootstrap
from lrsa.report import write_report
from lrsa.timing import KEEP_MEMORY, allocator, compare_latency, measure_latency

RESULTS = Path(__file__).parent / "results"
BATCHES = (1, 128)
SAMPLE = (3, 32, 32)


@dataclass(frozen=True)
class Pair:
    """What every process measures: the original ``model`` from ``checkpoint`` against its
    ``compressed`` form, ``repeats`` interleaved repeats per batch size."""

    model: str
    checkpoint: str
    compressed: str
    repeats: int


def child(pair, role, layout):
    """One process's measurement (``role``: "choose" the layout, "time", or
    "memory_original" / "memory_compressed"), printed as JSON on stdout."""
    original, compressed = load_pair(pair.model, pair.checkpoint, pair.compressed)
    if role == "choose":
        out = {}
        for b in BATCHES:
            out[f"b{b}"] = {f"{form}_s": measure_latency(
                original.to(torch.bfloat16) if form == "bf16" else original.float(),
                (b, *SAMPLE), repeats=pair.repeats, channels_last=form != "contiguous")[
                "median_s"]
                for form in ("contiguous", "channels_last", "bf16")}
            original.float()
    elif role.startswith("memory"):
        net = original if role == "memory_original" else compressed
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        measure_latency(net, (128, *SAMPLE), repeats=1, warmup=0,
                        channels_last=layout["b128"] == "channels_last")
        out = {"peak_rss_added_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                     - before) / 1024}
    else:
        out = {f"b{b}": compare_latency(original, compressed, (b, *SAMPLE),
                                        repeats=pair.repeats,
                                        channels_last=layout[f"b{b}"] == "channels_last")
               for b in BATCHES}
    print(json.dumps(out))


def spawn(pair, role, env_allocator, layout=None):
    """:func:`child` in a process of its own, under ``env_allocator`` (GLIBC_TUNABLES);
    returns what it printed."""
    env = {**os.environ}
    env.pop("GLIBC_TUNABLES", None)
    if env_allocator is not None:
        env["GLIBC_TUNABLES"] = env_allocator
    cmd = [sys.executable, __file__, "--child", role, "--model", pair.model,
           "--checkpoint", pair.checkpoint, "--compressed", pair.compressed,
           "--repeats", str(pair.repeats), "--layout", json.dumps(layout or {})]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("nin_bn", "vgg16_bn"), default="nin_bn")
    p.add_argument("--checkpoint", help="default: _common.checkpoint_path(--model)")
    p.add_argument("--compressed", required=True, help="the compressed --model (lrsa's format)")
    p.add_argument("--processes", type=int, default=5)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--out", help="default: benchmarks/results/timing_<nin|vgg16>")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--layout", default="{}", help=argparse.SUPPRESS)
    a = p.parse_args()
    pair = Pair(a.model, a.checkpoint or str(checkpoint_path(a.model)), a.compressed,
                a.repeats)
    if a.child:
        return child(pair, a.child, json.loads(a.layout))
    chosen = spawn(pair, "choose", None)
    layout = {b: "channels_last" if t["channels_last_s"] < t["contiguous_s"] else "contiguous"
              for b, t in chosen.items()}
    rows = {}
    for name, env_allocator in (("glibc default", None), ("KEEP_MEMORY", KEEP_MEMORY)):
        runs = [spawn(pair, "time", env_allocator, layout) for _ in range(a.processes)]
        memory = {who: spawn(pair, f"memory_{who}", env_allocator, layout)["peak_rss_added_mb"]
                  for who in ("original", "compressed")}
        rows[name] = {"processes": runs, "peak_rss_added_mb_b128": memory,
                      **{f"b{b}": _summary(runs, f"b{b}") for b in BATCHES}}
    data = {"argv": sys.argv, "code_version": git_version(), "torch": torch.__version__,
            "python": platform.python_version(), "threads": torch.get_num_threads(),
            "cpu": cpu_model(), "allocator_of_parent": allocator(),
            "model": a.model, "compressed": a.compressed, "processes": a.processes,
            "repeats": a.repeats,
            "realization": {"chosen_on": "the original alone, default allocator, median of "
                            f"{a.repeats} repeats", "original_medians_s": chosen,
                            "layout": layout, "dtype": "fp32"},
            "allocators": rows}
    data["markdown"] = _markdown(data)
    write_report(a.out or RESULTS / f"timing_{a.model.removesuffix('_bn')}", data)
    print(data["markdown"])


def _summary(runs, batch):
    ratios = [r[batch]["speedup"] for r in runs]
    minimum = (min(min(r[batch]["original_times_s"]) for r in runs)
               / min(min(r[batch]["compressed_times_s"]) for r in runs))
    iv = percentile_bootstrap(ratios)
    return {"median_ratio": iv.to_dict(), "min_time_ratio": minimum,
            "per_process_ratios": ratios,
            "original_median_s": float(np.median([r[batch]["original_median_s"] for r in runs])),
            "compressed_median_s": float(np.median([r[batch]["compressed_median_s"]
                                                    for r in runs]))}


def _markdown(d):
    rows = []
    for name, r in d["allocators"].items():
        for b in BATCHES:
            s = r[f"b{b}"]
            iv = s["median_ratio"]
            rows.append({"allocator": name, "batch": b, "layout": d["realization"]["layout"][
                f"b{b}"], "original ms": f"{1e3 * s['original_median_s']:.1f}",
                "compressed ms": f"{1e3 * s['compressed_median_s']:.1f}",
                "speed-up, median [95 %]": f"{iv['mean']:.2f}x [{iv['low']:.2f}, "
                                            f"{iv['high']:.2f}]",
                "min-time ratio": f"{s['min_time_ratio']:.2f}x",
                "peak RSS added, MB (orig / compr, b128)":
                    f"{r['peak_rss_added_mb_b128']['original']:.0f} / "
                    f"{r['peak_rss_added_mb_b128']['compressed']:.0f}"})
    return "\n".join([
        f"CPU timing, code {d['code_version']}, {d['threads']} threads, {d['cpu']}; "
        f"{d['processes']} processes x {d['repeats']} interleaved repeats per allocator; "
        f"fp32, layout chosen on the original alone.", "", table(rows, list(rows[0]))])


if __name__ == "__main__":
    main()
