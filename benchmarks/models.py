"""Parameters, MACs and measured CPU latency before/after, per architecture.

    python benchmarks/models.py [--models alexnet googlenet nin] [--size S]

Without ImageNet and pretrained weights here, AlexNet and GoogLeNet run with random weights
on random 224x224 images (NIN on random 32x32 ones): the figures are sizes and speeds, not
accuracies. All layers are approximated, AlexNet's FC layers (d = 9216 and 4096, 96 % of its
weights) too: there the channels are ranked by their share of the least-squares fit instead
of by the ADMM, whose M-step (n d^2 = 3.5e11 multiply-adds for fc6) is beyond this CPU's
minutes. Accuracy needs trained weights and data: the rows read from
benchmarks/results/vgg16_cifar10.json and nin_cifar10.json (written by vgg16_cifar10.py and
nin_cifar10.py, trained networks on CIFAR-10, fine-tuned) carry it; notebooks/06 does AlexNet
on a user's ImageNet folder. Prints one markdown table beside the paper's Tables III and VI;
writes benchmarks/results/models.json and .md.
"""

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import torch

from _common import table
from lrsa.models import alexnet, googlenet, nin
from lrsa.pipeline import Budget, SolverSettings, compress
from lrsa.report import network_summary, write_report

RESULTS = Path(__file__).parent / "results"
#: paper (params ratio, speed-up, accuracy drop in points: top-1 for CIFAR-10, top-5 ImageNet)
PAPER = {"vgg16_bn": (4.44, 2.2, 0.40), "nin": (2.77, 1.7, 0.41), "alexnet": (5.56, 1.1, 1.27),
         "googlenet": (2.87, 1.35, 0.0)}
DEFAULT_SIZE = {"alexnet": 0.18, "googlenet": 0.45, "nin": 0.36}
COLUMNS = ["model", "weights", "params_before", "params_after", "params_ratio", "macs_before",
           "macs_after", "speedup_b1", "speedup_b8", "approx_s", "top1_before", "top1_after",
           "paper_params_ratio", "paper_speedup", "paper_drop", "structures"]


def build(name):
    if name == "nin":
        return nin(), 32
    if name == "alexnet":
        return alexnet(num_classes=1000), 224
    return googlenet(num_classes=1000), 224


def random_weight_row(name, size, images):
    """One row for ``name`` with random weights, compressed to ``size`` of its weights."""
    torch.manual_seed(0)
    model, side = build(name)  # the input images' side in pixels
    model.eval()
    g = torch.Generator().manual_seed(0)
    calib = [torch.randn(images, 3, side, side, generator=g)]
    t0 = time.perf_counter()
    comp, rep = compress(model, calib, Budget(size=size),
                         solver=SolverSettings(max_samples=4000), progress=False)
    secs = time.perf_counter() - t0
    s = network_summary(model, comp.eval(), (1, 3, side, side), latency_batches=(1, 8),
                        repeats=5)
    return {"model": name, "weights": "random", "params_before": s["params_original"],
            "params_after": s["params_compressed"], "params_ratio": s["params_ratio"],
            "macs_before": s["macs_original"], "macs_after": s["macs_compressed"],
            "speedup_b1": s["latency"]["b1"]["speedup"],
            "speedup_b8": s["latency"]["b8"]["speedup"], "approx_s": secs,
            "structures": ", ".join(f"{k}: {v}" for k, v in sorted(Counter(
                r.get("choice", r["kind"]) if r["kind"] == "factored" else r["kind"]
                for r in rep.layers).items()))}


def trained_row(name, path):
    """A row from a full CIFAR-10 benchmark's results (trained weights, fine-tuned)."""
    d = json.loads(path.read_text())
    return {"model": name, "weights": f"trained ({path.name})",
            "params_before": d["params_original"], "params_after": d["params_compressed"],
            "params_ratio": d["params_ratio"], "macs_before": d["macs_original"],
            "macs_after": d["macs_compressed"], "speedup_b1": d["speedup_b1"],
            "speedup_b8": None, "approx_s": d["approx_seconds"],
            "top1_before": max(d["top1_baseline"], d.get("top1_baseline_finetuned", 0)),
            "top1_after": d.get("top1_finetuned", d["top1_compressed"]), "structures": "-"}


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["alexnet", "googlenet"],
                   choices=["alexnet", "googlenet", "nin"],
                   help="run with random weights (sizes and speeds only)")
    p.add_argument("--size", type=float, default=None,
                   help="whole-network stored-size target (default per model: AlexNet 0.18 as "
                        "the paper's 5.56x; GoogLeNet 0.45, its 1x1 convolutions, kept as the "
                        "paper keeps NIN's, alone hold 34 %%; NIN 0.36)")
    p.add_argument("--images", type=int, default=16)
    a = p.parse_args()
    rows = []
    for name, file in (("vgg16_bn", "vgg16_cifar10.json"), ("nin", "nin_cifar10.json")):
        if (RESULTS / file).is_file():
            rows.append(trained_row(name, RESULTS / file))
    for name in a.models:
        rows.append(random_weight_row(name, a.size or DEFAULT_SIZE[name], a.images))
        print(f"{name}: done in {rows[-1]['approx_s']:.0f} s", flush=True)
    for r in rows:
        pr, ps, pd = PAPER[r["model"]]
        r.update(paper_params_ratio=pr, paper_speedup=ps, paper_drop=pd)
    md = table(rows, COLUMNS)
    note = ("MACs per image; speed-ups are interleaved CPU timings in one process "
            f"({torch.get_num_threads()} threads), at batch 1 and 8 for the random-weight rows "
            "and batch 1 for the trained rows (their batch-128 figures are in their own "
            "results). top-1 before = the better of the baseline and its fine-tuned control; "
            "paper_drop: top-1 points (CIFAR-10) or top-5 points (ImageNet).")
    print(md + "\n\n" + note)
    write_report(RESULTS / "models", {"size": a.size or DEFAULT_SIZE, "rows": rows,
                                      "markdown": md + "\n\n" + note})


if __name__ == "__main__":
    main()
