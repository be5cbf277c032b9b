"""Where a compressed network's time goes, and the speed-up the layers it keeps allow.

    python benchmarks/time_shares.py --compressed FILE [FILE ...] [--model vgg16_bn [nin_bn ...]]
    python benchmarks/time_shares.py --work VGG_WORK [NIN_WORK ...] [--repeats 15]

The compressed networks: ``--compressed``, files in lrsa's format (e.g. an ablation's
``runs/ablation_vgg16/seed0/b_alone.pt``), each against its BN-folded original (the trained
``--model`` in the same position, :func:`_common.checkpoint_path`), with the compressed
model's ranks and kept channels and both networks' multiply-adds (traced) recorded beside
the times; or ``--work``, the work folders of benchmark
runs (``vgg16_cifar10.py`` / ``nin_cifar10.py``), each holding ``original.pt`` (the
BN-folded original) and ``compressed.pt``. For each:

1. every top-level module of ``features`` (and ``classifier``) of the original and of the
   compressed model, timed alone on its own input (median of ``--repeats``, batch 1 and
   128): the share of the original's time spent in modules the compressed model leaves as
   they were (convolutions kept or kept dense, pools, activations) and the bound it sets:
   even if the factored layers took no time at all, the speed-up is at most
   T_original / T_unchanged;
2. (once) a factored 3 x 3 convolution U V against its rank at VGG-16's shapes: on a CPU
   whose convolutions compute output channels in blocks, time is a step function of the
   rank (what ``rank_multiple`` is for).

Writes benchmarks/results/time_shares.json and .md (``--out``).
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from _common import checkpoint_path, cpu_model, git_version, load_pair
from lrsa.layers import SparseLowRankConv2d, SparseLowRankLinear
from lrsa.pipeline import load_compressed
from lrsa.report import layer_macs, write_report
from lrsa.timing import allocator, measure_latency
from lrsa.utils import format_table

RESULTS = Path(__file__).parent / "results"
FACTORED = (SparseLowRankConv2d, SparseLowRankLinear)
#: (in channels, out channels, spatial size) of VGG-16 convolutions on 32 x 32 inputs
VGG_SHAPES = {"conv1-2": (64, 64, 32), "conv2-1": (64, 128, 16), "conv2-2": (128, 128, 16),
              "conv3-2": (256, 256, 8)}
RANKS = (8, 16, 17, 24, 32, 33, 48, 64)


def seconds(module, shape, repeats):
    """Median seconds of one forward pass on a random input of ``shape``."""
    return measure_latency(module, shape, repeats=repeats)["median_s"]


def stages(model):
    """(name, module) of the model's top-level stages in order, ``classifier`` last."""
    out = list(model.features.named_children())
    if hasattr(model, "classifier"):
        out.append(("classifier", model.classifier))
    return out


@torch.inference_mode()
def stage_times(model, batch, repeats):
    """Seconds per stage (median), each timed alone on an input of the shape it gets in the
    network."""
    x, times = torch.randn(batch, 3, 32, 32), {}
    for name, mod in stages(model):
        x = x.flatten(1) if name == "classifier" else x
        times[name] = seconds(mod, tuple(x.shape), repeats)
        x = mod(x)
    return times


def from_work(work):
    """(original, compressed, label, record) of a benchmark work folder (no record)."""
    original = load_compressed(Path(work) / "original.pt")[0].eval()
    compressed = load_compressed(Path(work) / "compressed.pt")[0].eval()
    state = json.loads((Path(work) / "state.json").read_text()) \
        if (Path(work) / "state.json").is_file() else {}
    code = state.get("settings", {}).get("code_version", "?")[:7]
    return original, compressed, f"{type(original).__name__} ({code})", {}


def from_file(path, model):
    """(original, compressed, label, record) of a compressed ``model`` saved at ``path``;
    ``record``: each factored layer's rank and kept input channels, and every layer's
    multiply-adds per image in both networks (a traced forward pass)."""
    original, compressed = load_pair(model, checkpoint_path(model), path)
    record = {"structure": {name: {"rank": m.rank, "kept_channels":
                                   0 if m.sparse is None else len(m.kept_index)}
                            for name, m in compressed.named_modules()
                            if isinstance(m, FACTORED)},
              "layer_macs_original": layer_macs(original, (1, 3, 32, 32)),
              "layer_macs_compressed": layer_macs(compressed, (1, 3, 32, 32))}
    return original, compressed, f"{type(original).__name__} ({path})", record


def time_shares(original, compressed, label, record, repeats):
    factored = {name for name, mod in stages(compressed)
                if any(isinstance(m, FACTORED) for m in mod.modules())}
    out = {}
    for batch in (1, 128):
        t_orig, t_comp = stage_times(original, batch, repeats), stage_times(compressed, batch,
                                                                          repeats)
        total = sum(t_orig.values())
        unchanged = sum(t for n, t in t_orig.items() if n not in factored)
        out[f"b{batch}"] = {
            "original_ms": {n: 1e3 * t for n, t in t_orig.items()},
            "compressed_ms": {n: 1e3 * t for n, t in t_comp.items()},
            "unchanged_share": unchanged / total,
            "bound_speedup": total / unchanged,
            "stage_sum_speedup": total / sum(t_comp.values())}
    return {"label": label, "factored": sorted(factored), **out, **record}


def rank_steps(repeats):
    """Speed-up of U V (3 x 3 conv to r channels, then 1 x 1) over the dense conv, by rank."""
    out = {}
    for name, (c, n, hw) in VGG_SHAPES.items():
        for batch in (1, 128):
            shape = (batch, c, hw, hw)
            dense = seconds(nn.Conv2d(c, n, 3, padding=1), shape, repeats)
            out[f"{name} b{batch}"] = {
                r: dense / seconds(nn.Sequential(nn.Conv2d(c, r, 3, padding=1, bias=False),
                                                 nn.Conv2d(r, n, 1)), shape, repeats)
                for r in RANKS if r * (9 * c + n) < 9 * c * n}
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    given = p.add_mutually_exclusive_group(required=True)
    given.add_argument("--work", nargs="+",
                       help="benchmark work folders with original.pt and compressed.pt")
    given.add_argument("--compressed", nargs="+",
                       help="compressed models in lrsa's format, one per --model")
    p.add_argument("--model", nargs="+", choices=("vgg16_bn", "nin_bn"), default=["vgg16_bn"])
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--out", default=str(RESULTS / "time_shares"))
    a = p.parse_args()
    if a.compressed:
        if len(a.compressed) != len(a.model):
            raise SystemExit(f"{len(a.compressed)} --compressed files but {len(a.model)} "
                             "--model names: give one model per file, in the same order")
        for path, model in zip(a.compressed, a.model):
            if not Path(path).is_file() or not checkpoint_path(model).is_file():
                raise SystemExit(f"needs {path} and the trained {model} at "
                                 f"{checkpoint_path(model)} (LRSA_CHECKPOINTS names its folder)")
        pairs = {path: from_file(path, model) for path, model in zip(a.compressed, a.model)}
    else:
        missing = [w for w in a.work if not (Path(w) / "compressed.pt").is_file()
                   or not (Path(w) / "original.pt").is_file()]
        if missing:
            raise SystemExit(f"no original.pt and compressed.pt in {missing}: give the --work "
                             "folder of a vgg16_cifar10.py or nin_cifar10.py run")
        pairs = {w: from_work(w) for w in a.work}
    data = {"argv": sys.argv, "code_version": git_version(), "cpu": cpu_model(),
            "threads": torch.get_num_threads(), "allocator": allocator(),
            "repeats": a.repeats,
            "runs": {k: time_shares(*pair, a.repeats) for k, pair in pairs.items()},
            "rank_steps": rank_steps(a.repeats)}
    rows = [[r["label"], b[1:], f"{100 * r[b]['unchanged_share']:.0f} %",
             f"{r[b]['bound_speedup']:.2f}x", f"{r[b]['stage_sum_speedup']:.2f}x"]
            for w, r in data["runs"].items() for b in ("b1", "b128")]
    steps = [[k, *(f"{v[r]:.2f}" if r in v else "-" for r in RANKS)]
             for k, v in data["rank_steps"].items()]
    data["markdown"] = "\n".join([
        f"Code {data['code_version']}, {data['threads']} threads, median of {a.repeats}.", "",
        "Time of the original spent in stages the compressed model leaves unchanged, and the "
        "speed-up bound it sets (factored layers at zero time); last column: the stages' "
        "summed times, original over compressed:", "",
        format_table(["model (work folder's code)", "batch", "unchanged share", "bound",
                      "stage-sum speed-up"], rows), "",
        "U V (3 x 3 conv to rank r, then 1 x 1) against the dense 3 x 3 conv, speed-up by "
        "rank:", "",
        format_table(["layer, batch", *(f"r={r}" for r in RANKS)], steps)])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
