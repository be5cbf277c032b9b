"""Parameters, MACs and measured CPU latency before/after, per architecture.

    python benchmarks/models.py [--models nin alexnet googlenet] [--frac 0.05]

Without ImageNet and pretrained weights here, AlexNet and GoogLeNet run with random weights
on random 224x224 images (NIN and VGG-16 on random 32x32 ones unless the shared VGG-16
checkpoint is present): the figures are sizes and speeds, not accuracies. Accuracy needs the
data (see notebooks/06). AlexNet's FC layers (d = 9216 and 4096) are left out: one M-step
there costs n d^2 = 3.5e11 multiply-adds, beyond this CPU (see the note printed).
Prints a markdown table beside the paper's Tables III and VI; writes
benchmarks/results/models.json.
"""

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

from _common import CHECKPOINT, table
from lrsa.models import alexnet, googlenet, load_checkpoint, nin, vgg16_bn
from lrsa.pipeline import compress
from lrsa.report import network_summary

PAPER = {"vgg16_bn": (4.44, 2.2), "nin": (2.77, 1.7), "alexnet": (5.56, 1.1),
         "googlenet": (2.87, 1.35)}


def build(name):
    if name == "vgg16_bn":
        m = vgg16_bn()
        if CHECKPOINT.exists():
            load_checkpoint(m, CHECKPOINT)
        return m, 32, ()
    if name == "nin":
        return nin(), 32, ()
    if name == "alexnet":
        m = alexnet(num_classes=1000)
        return m, 224, tuple(n for n, x in m.named_modules() if isinstance(x, nn.Linear))
    return googlenet(num_classes=1000), 224, ()


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["nin", "alexnet", "googlenet"])
    p.add_argument("--frac", type=float, default=0.05)
    p.add_argument("--images", type=int, default=16)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "models.json"))
    a = p.parse_args()
    rows = []
    for name in a.models:
        torch.manual_seed(0)
        model, size, exclude = build(name)
        model.eval()
        g = torch.Generator().manual_seed(0)
        calib = [torch.randn(a.images, 3, size, size, generator=g)]
        t0 = time.perf_counter()
        comp, rep = compress(model, calib, frac=a.frac, exclude=exclude, max_samples=4000,
                             progress=False)
        secs = time.perf_counter() - t0
        s = network_summary(model, comp.eval(), (1, 3, size, size), latency_batches=(1, 8),
                            repeats=5)
        rows.append({"model": name, "params_before": s["params_original"],
                     "params_after": s["params_compressed"], "params_ratio": s["params_ratio"],
                     "macs_ratio": s["macs_ratio"], "speedup_b1": s["latency"]["b1"]["speedup"],
                     "speedup_b8": s["latency"]["b8"]["speedup"], "approx_s": secs,
                     "paper_params_ratio": PAPER[name][0], "paper_speedup": PAPER[name][1],
                     "excluded": ", ".join(exclude) or "-"})
        print(f"{name}: done in {secs:.0f} s", flush=True)
    print(table(rows, ["model", "params_before", "params_after", "params_ratio", "macs_ratio",
                       "speedup_b1", "speedup_b8", "approx_s", "paper_params_ratio",
                       "paper_speedup", "excluded"]))
    Path(a.out).write_text(json.dumps({"frac": a.frac, "weights": "random (see docstring)",
                                       "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
