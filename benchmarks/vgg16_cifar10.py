"""Full VGG-16 on CIFAR-10: compress, fine-tune, measure; beside the paper's Table I/III.

    python benchmarks/vgg16_cifar10.py [--network-cr 0.18] [--epochs 1] [--train-images 50000]

Needs the shared baseline (../shared/models/vgg16_bn_cifar10.pt) and CIFAR-10 in the
official layout (LRSA_DATA or ../data). Asymmetric strategy, ReLU response, 1000
calibration images (as the paper), per-layer targets spread from one network CR target,
then fine-tuning on the 50k training images. The control fine-tunes the uncompressed
baseline (BN folded the same way) with the same recipe, so extra training cannot hide a
loss. Every phase is saved as it ends; a rerun resumes. Writes
benchmarks/results/vgg16_cifar10.json and .md (``--out``).
"""

import argparse
import copy
import json
from pathlib import Path

import torch

from _common import CHECKPOINT, cifar_root, finetune_phase, run_control, run_state
from lrsa.data import load_cifar10, make_loader
from lrsa.features import fold_batchnorm
from lrsa.models import load_checkpoint, vgg16_bn
from lrsa.pipeline import compress, save_compressed
from lrsa.report import (PAPER_TABLE_I, PAPER_VGG16, VGG16_LAYER_NAMES, markdown_table,
                         network_summary, write_report)
from lrsa.train import evaluate

RESULTS = Path(__file__).parent / "results"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--network-cr", type=float, default=0.18)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--calib-images", type=int, default=1000)
    p.add_argument("--train-images", type=int, default=50_000,
                   help="fine-tune on a random subset of this size (an epoch = one pass)")
    p.add_argument("--work", default=str(RESULTS / "vgg16_work"))
    p.add_argument("--skip-control", action="store_true")
    p.add_argument("--control-only", action="store_true",
                   help="run only the control (to run it beside the main run)")
    p.add_argument("--out", default=str(RESULTS / "vgg16_cifar10"),
                   help="results path without extension (.json and .md are written)")
    a = p.parse_args()
    if not CHECKPOINT.exists() or cifar_root() is None:
        raise SystemExit("needs ../shared/models/vgg16_bn_cifar10.pt and CIFAR-10 "
                         "(set LRSA_DATA to the folder holding cifar-10-batches-py)")
    work = Path(a.work)
    keys = ("network_cr", "epochs", "lr", "calib_images", "train_images")
    settings = {k: getattr(a, k) for k in keys}
    state, save_state = run_state(work, settings)  # other settings: refused, not reused

    model = vgg16_bn()
    load_checkpoint(model, CHECKPOINT)
    model.eval()
    xtr, ytr = load_cifar10(cifar_root(), train=True)
    xte, yte = load_cifar10(cifar_root(), train=False)
    test = make_loader(xte, yte, 500)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))
    sub = idx[-a.train_images:]  # disjoint from the calibration images when it can be
    train = make_loader(xtr[sub], ytr[sub], 128, train=True, seed=0)
    calib = [x for x, _ in make_loader(xtr[idx[:a.calib_images]], ytr[idx[:a.calib_images]],
                                       250)]
    if "top1_baseline" not in state:
        state["top1_baseline"] = evaluate(model, test)["top1"]
        save_state()
    print("baseline", state["top1_baseline"], flush=True)

    control_path = work / "control.json"
    if a.control_only or (not a.skip_control and not control_path.exists()):
        run_control(fold_batchnorm(copy.deepcopy(model).eval()), train, test, control_path,
                    epochs=a.epochs, lr=a.lr)
        if a.control_only:
            return
    if control_path.exists():
        state.update(json.loads(control_path.read_text()))
    print("control", state.get("top1_baseline_finetuned"), flush=True)

    comp_path = work / "compressed.pt"
    if "approx_seconds" not in state:
        compressed, rep = compress(model, calib, network_cr=a.network_cr, response="relu",
                                   strategy="asymmetric", workdir=work / "layers")
        save_compressed(compressed, comp_path, arch="vgg16_bn", report=rep)
        state.update(approx_seconds=rep.seconds, layers=rep.layers,
                     top1_compressed=evaluate(compressed, test)["top1"])
        save_state()
    print("compressed", state["top1_compressed"], "in", state["approx_seconds"], flush=True)

    finetuned = finetune_phase(state, save_state, comp_path, work / "finetuned.pt", train, test,
                               epochs=a.epochs, lr=a.lr, arch="vgg16_bn")
    summary = network_summary(fold_batchnorm(copy.deepcopy(model).eval()), finetuned.eval(),
                              (1, 3, 32, 32), latency_batches=(1, 128), repeats=10)
    reference = max(state["top1_baseline"], state.get("top1_baseline_finetuned", 0.0))
    # a resumed run times only its own part: the layers' own times add up to the whole
    state["approx_seconds"] = sum(r["seconds"] for r in state["layers"])
    epochs = a.epochs * a.train_images / len(xtr)  # in passes over the 50k training images
    data = {**state, **summary, "finetune_epochs": epochs, "finetune_lr": a.lr,
            "finetune_images": a.train_images,
            "network_cr_target": a.network_cr, "calib_images": a.calib_images,
            "speedup_b1": summary["latency"]["b1"]["speedup"],
            "speedup_b128": summary["latency"]["b128"]["speedup"],
            "top1_drop": reference - state["top1_finetuned"],
            "threads": torch.get_num_threads(), "paper": PAPER_VGG16}
    table = markdown_table(state["layers"], paper=PAPER_TABLE_I, names=VGG16_LAYER_NAMES,
                           paper_ratio=PAPER_VGG16["params_ratio"])
    data["markdown"] = "\n".join([
        table, "",
        "| | ours | paper |", "|---|---:|---:|",
        f"| parameters (original / compressed) | {data['params_ratio']:.2f}x | 4.44x |",
        f"| MACs (original / compressed) | {data['macs_ratio']:.2f}x | - |",
        f"| CPU speed-up, batch 1 | {data['speedup_b1']:.2f}x | - |",
        f"| CPU speed-up, batch 128 | {data['speedup_b128']:.2f}x | 2.2x |",
        f"| top-1 baseline / control (fine-tuned, uncompressed) | "
        f"{state['top1_baseline']:.2f}% / {state.get('top1_baseline_finetuned', float('nan')):.2f}%"
        f" | 92.05% |",
        f"| top-1 compressed, before fine-tuning | {state['top1_compressed']:.2f}% | - |",
        f"| top-1 compressed, fine-tuned ({epochs:.2g} epochs) | {state['top1_finetuned']:.2f}% "
        f"| - |",
        f"| top-1 drop vs the better reference | {data['top1_drop']:.2f} pt | 0.40 pt |",
        f"| approximation time (all layers) | {state['approx_seconds'] / 60:.1f} min | "
        f"10-30 min per layer |"])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
