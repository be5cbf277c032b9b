"""Full VGG-16 on CIFAR-10: lrsa against truncated SVD and reduced-rank regression at equal
stored size, layer by layer; then (optionally) fine-tuning; beside the paper's Table I/III.

    python benchmarks/vgg16_cifar10.py [--size 0.17 | --macs M | --speedup S | --preset fast]
        [--epochs 0] [--baselines svd rrr lrsa_linear] [--work DIR]

Needs a trained VGG-16-BN (``_common.checkpoint_path``: ``runs/models/vgg16_bn_cifar10.pt``
or LRSA_CHECKPOINTS) and CIFAR-10 in the official layout (LRSA_DATA or ``data``). lrsa runs
with its defaults (asymmetric strategy, ReLU response, 1000 calibration images as the
paper, per-layer sizes spread from one network target, or a named budget with
``--preset``); then, at exactly the per-layer
stored sizes lrsa chose, in the same run: truncated SVD (data-free), reduced-rank
regression (asymmetric, linear response) and lrsa with the linear response. Top-1 on the
10,000 test images before any fine-tuning for each; speed in the memory layout the
original runs faster in, before fine-tuning (which changes no shape); then, with
``--epochs``, each model and the uncompressed control fine-tuned by one recipe, with the
test top-1 after each epoch. Resumable (benchmarks/_headline.py). Writes
benchmarks/results/vgg16_cifar10.json and .md (``--out``).
"""

import argparse

from _common import CHECKPOINT, require_inputs
from _headline import add_run_options, run, run_settings
from lrsa.models import load_checkpoint, vgg16_bn
from lrsa.pipeline import Budget
from lrsa.pipeline.budget import PRESETS
from lrsa.paper import PAPER_TABLE_I, PAPER_VGG16, VGG16_LAYER_NAMES


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 0.17: layers left as they were (not faster factored) take back about 4 % of the budget
    p.add_argument("--size", type=float, default=0.17, help="Budget(size=...)")
    p.add_argument("--macs", type=float, default=None,
                   help="a multiply-add budget instead of --size (Budget(macs=...))")
    p.add_argument("--speedup", type=float, default=None,
                   help="a whole-model speed-up budget (measured layer times) instead")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named budget (lrsa.Budget.preset) instead of the three above")
    add_run_options(p, "vgg16_cifar10")
    a = p.parse_args()
    require_inputs(CHECKPOINT, "vgg16_bn")
    budget = (Budget.preset(a.preset) if a.preset else
              Budget(macs=a.macs) if a.macs else
              Budget(speedup=a.speedup) if a.speedup else
              Budget(size=a.size))
    model = vgg16_bn()
    meta = load_checkpoint(model, CHECKPOINT)
    settings = {k: getattr(a, k) for k in ("size", "macs", "speedup", "preset")}
    run(run_settings(a, settings), work=a.work, out=a.out, model=model,
        recipe=meta.get("recipe", "?"), arch="vgg16_bn",
        budget_of=lambda layers: budget,
        title="VGG-16 on CIFAR-10", paper=PAPER_VGG16, paper_table=PAPER_TABLE_I,
        layer_names=VGG16_LAYER_NAMES)


if __name__ == "__main__":
    main()
