"""Fine-tuning with and without distillation from the uncompressed network, over seeds.

    LRSA_DATA=<dir> python benchmarks/distillation.py --work runs/distillation \\
        [--compressed-pattern runs/ablation_vgg16/seed{seed}/b_alone.pt] [--seeds 0 1 2]

Per seed, starts from that seed's compressed VGG-16 (by default the headline's: the VGG-16
ablation's B alone, compressed on the seed's calibration sample, before its fine-tuning) and
fine-tunes it with ``lrsa.finetune`` three ways on the same random training subset, in the
same order, at the same lr and schedule (bf16 autocast): cross-entropy only, logit
distillation (alpha 0.5, T 4) and logits plus the approximated layers' outputs. Each model's
predictions on the 10,000 test images are kept; the figures are read on the report half of
the ablation's split (:func:`lrsa.evaluation.split_indices`, seed 0; nothing is chosen here,
so the validation half is not used), with paired 95 % intervals over seeds and images.
Resumable. Writes benchmarks/results/distillation.json and .md.
"""

import argparse
import copy
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import (CHECKPOINT, add_run_options, cifar_root, code_fingerprint, git_version,
                     phase, run_state, saved_state, table)
from lrsa.batchnorm import fold_batchnorm
from lrsa.data import load_cifar10, make_loader
from lrsa.evaluation import bootstrap_interval, split_indices
from lrsa.models import load_checkpoint, vgg16_bn
from lrsa.pipeline import finetune, load_compressed
from lrsa.report import write_report
from lrsa.train import predictions

RESULTS = Path(__file__).parent / "results"
#: name -> finetune keywords besides the teacher (None: cross-entropy only, no teacher)
VARIANTS = {"none": None, "logits": dict(alpha=0.5, temperature=4.0),
            "features": dict(alpha=0.5, temperature=4.0, feature_weight=1.0)}
#: the paired differences the results report
PAIRS = [("logits", "none"), ("features", "logits"), ("features", "none")]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--compressed-pattern", default="runs/ablation_vgg16/seed{seed}/b_alone.pt",
                   help="each seed's compressed VGG-16, {seed} replaced by the seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--train-images", type=int, default=20_000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-3,
                   help="default: the VGG-16 ablation's, chosen on validation")
    add_run_options(p, RESULTS / "distillation")
    a = p.parse_args()
    starts = {s: Path(a.compressed_pattern.format(seed=s)) for s in a.seeds}
    missing = [str(f) for f in starts.values() if not f.is_file()]
    if missing or cifar_root() is None:
        raise SystemExit(f"needs CIFAR-10 and each seed's compressed VGG-16 (missing: "
                         f"{missing}): benchmarks/ablation.py --model vgg16_bn makes them")
    settings = {"compressed_pattern": a.compressed_pattern, "seeds": a.seeds,
                "train_images": a.train_images, "epochs": a.epochs, "lr": a.lr,
                "checkpoint": str(CHECKPOINT), "code": code_fingerprint()}
    work = Path(a.work)
    xte, labels = load_cifar10(cifar_root(), train=False)
    if a.summarize:
        state = saved_state(work)
    else:
        state, save = run_state(work, settings)
        phase(state, save, "code_version", git_version)
        teacher = vgg16_bn()
        load_checkpoint(teacher, CHECKPOINT)
        teacher = fold_batchnorm(teacher.eval())
        xtr, ytr = load_cifar10(cifar_root(), train=True)
        test = make_loader(xte, labels, 500)
        for seed in a.seeds:
            run_seed(settings, seed, starts[seed], state, save, work, teacher, xtr, ytr, test)
    data = summarize(state, work, labels.numpy())
    write_report(a.out, data)
    print(data["markdown"])


def run_seed(settings, seed, start_file, state, save, work, teacher, xtr, ytr, test):
    """The seed's compressed start, then each variant fine-tuned from it on the seed's
    training subset and order; every model's test predictions saved."""
    runs = state.setdefault("runs", {}).setdefault(str(seed), {})
    start, _ = load_compressed(start_file)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))
    idx = idx[:settings["train_images"]]
    for name in ("start", *VARIANTS):
        if name in runs:
            continue
        model, t0 = copy.deepcopy(start), time.perf_counter()
        if name != "start":
            kw = VARIANTS[name]
            train = make_loader(xtr[idx], ytr[idx], 128, train=True, seed=seed)
            finetune(model, train, epochs=settings["epochs"], lr=settings["lr"], bf16=True,
                     seed=seed, progress=False,
                     **({} if kw is None else dict(teacher=teacher, **kw)))
        pred, _ = predictions(model, test)
        np.save(work / f"seed{seed}_{name}.npy", pred.astype(np.int8))
        runs[name] = {"seconds": time.perf_counter() - t0}
        save()
        print(seed, name, runs[name], flush=True)


def summarize(state, work, labels):
    """Top-1 and paired differences on the report half, over the seeds every variant
    reached."""
    settings = state["settings"]
    names = ("start", *VARIANTS)
    seeds = [s for s in map(str, settings["seeds"])
             if all(n in state.get("runs", {}).get(s, {}) for n in names)]
    if not seeds:
        raise SystemExit(f"{work}: no seed has finished every variant yet")
    _, report = split_indices(len(labels), len(labels) // 2, seed=0)
    correct = {n: np.stack([np.load(work / f"seed{s}_{n}.npy")[report] == labels[report]
                            for s in seeds]).astype(np.uint8) for n in names}
    top1 = {n: bootstrap_interval([correct[n]]) for n in names}
    diffs = {f"{x} - {y}": bootstrap_interval([correct[x], correct[y]]) for x, y in PAIRS}
    rows = [{"distillation": "(before fine-tuning)" if n == "start" else n,
             "top-1 [95 %]": str(top1[n]),
             "seconds per seed": " / ".join(f"{state['runs'][s][n]['seconds']:.0f}"
                                            for s in seeds)} for n in names]
    diff_rows = [{"difference": k, "points [95 %]": str(iv),
                  "verdict": iv.comparison(f"{k.split(' - ')[0]} higher",
                                           f"{k.split(' - ')[1]} higher")}
                 for k, iv in diffs.items()]
    data = {"what": "fine-tuning with and without distillation, same start, same data",
            "argv": sys.argv, "settings": settings, "code_version": state["code_version"],
            "threads": torch.get_num_threads(), "seeds": [int(s) for s in seeds],
            "report_images": len(report),
            "split": "lrsa.evaluation.split_indices(10000, 5000, seed=0): the report half",
            "top1": {n: iv.to_dict() for n, iv in top1.items()},
            "differences": {k: iv.to_dict() for k, iv in diffs.items()},
            "seconds": {s: state["runs"][s] for s in seeds}}
    data["markdown"] = "\n".join([
        f"VGG-16's headline start (each seed's compressed model: "
        f"{settings['compressed_pattern']}), fine-tuned {settings['epochs']} pass(es) over "
        f"{settings['train_images']} training images, lr {settings['lr']:g} cosine, bf16; "
        f"code {data['code_version']}, {data['threads']} threads; seeds {data['seeds']}. "
        f"Top-1 on the report half ({len(report)} test images), 95 % intervals over seeds "
        "and images.", "",
        table(rows, ["distillation", "top-1 [95 %]", "seconds per seed"]), "",
        "Paired differences:", "",
        table(diff_rows, ["difference", "points [95 %]", "verdict"])])
    return data


if __name__ == "__main__":
    main()
