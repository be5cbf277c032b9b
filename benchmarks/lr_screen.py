"""The fine-tuning learning rate of an ablation, chosen on validation images only.

    LRSA_DATA=<folder with cifar-10-batches-py> python benchmarks/lr_screen.py \\
        --model runs/ablation_nin/seed0/b_alone.pt --work runs/lr_screen
    LRSA_DATA=... python benchmarks/lr_screen.py --network vgg16_bn --lrs 3e-4 1e-3 3e-3 \\
        --model runs/ablation_vgg16/seed0/a_plus_b.pt --work runs/lr_screen_vgg16

The ablation (``benchmarks/ablation.py``) fine-tunes NIN at lr 1e-2 and VGG-16 at 1e-3,
values earlier stops picked on the test set. This screen makes the choice again under the
protocol: one seed-0 model of the ablation is fine-tuned by the ablation's recipe (1 epoch,
cosine, bf16, logit distillation from the BN-folded original, seed 0's data order) at each
candidate learning rate, and scored on the *validation* half of the test set
(:func:`lrsa.evaluation.split_indices`, seed 0, as the ablation's); the report half is not
read. The JSON records the candidates, their validation top-1 and the winner. Resumable:
each candidate's score is saved as it ends.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import (checkpoint_path, cifar_root, code_fingerprint, cpu_model, git_version,
                     phase, require_inputs, run_state)
from lrsa.batchnorm import fold_batchnorm
from lrsa.data import load_cifar10, make_loader
from lrsa.evaluation import split_indices
from lrsa.models import get_model, load_checkpoint
from lrsa.pipeline import finetune, load_compressed
from lrsa.train import predictions

RESULTS = Path(__file__).parent / "results"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="the compressed model to fine-tune")
    p.add_argument("--network", choices=("nin_bn", "vgg16_bn"), default="nin_bn",
                   help="the original's architecture")
    p.add_argument("--checkpoint", help="the original (the teacher); default: "
                                        "_common.checkpoint_path(--network)")
    p.add_argument("--lrs", type=float, nargs="+", default=[3e-3, 1e-2, 3e-2])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--work", required=True)
    p.add_argument("--out", help="default: benchmarks/results/lr_screen_<nin|vgg16>")
    a = p.parse_args()
    a.checkpoint = a.checkpoint or str(checkpoint_path(a.network))
    a.out = a.out or str(RESULTS / f"lr_screen_{a.network.removesuffix('_bn')}")
    require_inputs(a.checkpoint, a.network)
    settings = {k: getattr(a, k) for k in ("network", "model", "checkpoint", "lrs", "seed",
                                           "epochs")}
    settings["code"] = code_fingerprint()
    state, save = run_state(Path(a.work), settings)
    phase(state, save, "code_version", git_version)
    teacher = get_model(a.network)
    load_checkpoint(teacher, a.checkpoint)
    teacher = fold_batchnorm(teacher.eval())
    xtr, ytr = load_cifar10(cifar_root(), train=True)
    xte, yte = load_cifar10(cifar_root(), train=False)
    val, _ = split_indices(len(yte), len(yte) // 2, seed=0)
    validation = make_loader(xte[val], yte[val], 500)
    scores = state.setdefault("validation_top1", {})
    for lr in a.lrs:
        if str(lr) in scores:
            continue
        net, _ = load_compressed(a.model)
        t0 = time.perf_counter()
        finetune(net, make_loader(xtr, ytr, 128, train=True, seed=a.seed), epochs=a.epochs,
                 lr=lr, bf16=True, teacher=teacher, seed=a.seed)
        pred, labels = predictions(net.eval(), validation)
        scores[str(lr)] = {"top1": float(100 * (pred == labels).mean()),
                           "seconds": time.perf_counter() - t0}
        save()
    winner = max(scores, key=lambda k: scores[k]["top1"])
    p_correct = scores[winner]["top1"] / 100
    data = {"what": f"the {a.network} ablation's fine-tuning learning rate, chosen on "
                    "validation",
            "argv": sys.argv, "settings": settings, "code_version": state["code_version"],
            "cpu": cpu_model(), "threads": torch.get_num_threads(),
            "validation": "lrsa.evaluation.split_indices(10000, 5000, seed=0)[0]: the "
                          "ablation's validation half; the report half is not read",
            "candidates": a.lrs, "validation_top1": scores, "winner": float(winner),
            "images": int(len(val)),
            "standard_error_points": float(100 * np.sqrt(p_correct * (1 - p_correct)
                                                         / len(val)))}
    Path(f"{a.out}.json").write_text(json.dumps(data, indent=1) + "\n")
    print(json.dumps({k: v["top1"] for k, v in scores.items()}), "winner", winner)


if __name__ == "__main__":
    main()
