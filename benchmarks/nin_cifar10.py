"""NIN on CIFAR-10: compress a baseline trained by `lrsa train`, compare with truncated SVD
and reduced-rank regression at the same per-layer sizes, fine-tune, measure; beside the
paper's Tables II and III.

    python -m lrsa train --model nin_bn --epochs 12 --lr 0.1 --warmup-epochs 0.5 --bf16 \\
        --out runs/nin/nin_bn_cifar10.pt    # the shared baseline's recipe (83.94 %)
    python benchmarks/nin_cifar10.py [--checkpoint runs/nin/nin_bn_cifar10.pt] [--epochs 0]

``--model nin`` takes a plain NIN checkpoint instead; ``nin_bn`` (a BatchNorm after every conv,
folded into the convs before compression) is what a CPU can train in a few epochs.

As the paper (Sec. V-B): the three spatial convolutions are approximated, to the per-layer
rates of its Table II (conv1 18.4 %, conv2 16.9 %, conv3 38.2 %; ``--table-ii-scale`` scales
them), the six 1x1 cccp layers are kept; ReLU response, asymmetric strategy, 1000 calibration
images. Fine-tuning runs on a random training subset (``--train-images``), and the control
fine-tunes the uncompressed baseline with the same recipe, so extra training of a short-trained
baseline cannot pass for a small loss. Every phase is saved as it ends; a rerun resumes.
Writes benchmarks/results/nin_cifar10.json and .md (``--out``).
"""

import argparse
from pathlib import Path

import torch

from _common import (SHARED, baselines_phase, cifar_root, comparison_table,
                     compress_and_evaluate, finetune_runs, git_version, phase,
                     run_state)
from lrsa.data import load_cifar10, make_loader
from lrsa.features import find_layers, fold_batchnorm
from lrsa.models import get_model, load_checkpoint
from lrsa.pipeline import default_plan, load_compressed, save_compressed
from lrsa.paper import NIN_LAYER_NAMES, PAPER_NIN, PAPER_TABLE_II
from lrsa.report import markdown_table, network_summary, write_report
from lrsa.train import evaluate

RESULTS = Path(__file__).parent / "results"
ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=["nin_bn", "nin"], default="nin_bn")
    p.add_argument("--checkpoint", default=str(SHARED / "models" / "nin_bn_cifar10.pt"),
                   help="default: the shared 12-epoch nin_bn baseline (83.94 %%)")
    p.add_argument("--table-ii-scale", type=float, default=1.0,
                   help="multiply the paper's per-layer rates (1: as Table II)")
    p.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (0: none)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--distill", choices=["logits", "features", "none"], default="logits",
                   help="fine-tune learning from the uncompressed network too")
    p.add_argument("--calib-images", type=int, default=1000)
    p.add_argument("--train-images", type=int, default=10_000,
                   help="fine-tune on a random subset of this size (an epoch = one pass)")
    p.add_argument("--test-images", type=int, default=None, help="first N (default: all)")
    p.add_argument("--work", default=str(RESULTS / "nin_work"))
    p.add_argument("--out", default=str(RESULTS / "nin_cifar10"),
                   help="results path without extension (.json and .md are written)")
    a = p.parse_args()
    if not Path(a.checkpoint).is_file() or cifar_root() is None:
        raise SystemExit(f"needs a NIN checkpoint ({a.checkpoint}; train one with the command "
                         "in this file's docstring) and CIFAR-10 (set LRSA_DATA to the folder "
                         "holding cifar-10-batches-py)")
    work = Path(a.work)
    keys = ("checkpoint", "model", "table_ii_scale", "epochs", "lr", "distill", "calib_images",
            "train_images", "test_images")
    settings = {k: getattr(a, k) for k in keys}
    settings["code_version"] = git_version()
    state, save_state = run_state(work, settings)  # other settings: refused, not reused

    model = get_model(a.model)
    meta = load_checkpoint(model, a.checkpoint)
    model = fold_batchnorm(model.eval())  # what compress sees; the control is fine-tuned so too
    xtr, ytr = load_cifar10(cifar_root(), train=True)
    xte, yte = load_cifar10(cifar_root(), train=False)
    test = make_loader(xte[:a.test_images], yte[:a.test_images], 500)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))
    sub = idx[-a.train_images:]  # disjoint from the calibration images
    train = make_loader(xtr[sub], ytr[sub], 128, train=True, seed=0)
    calib = [x for x, _ in make_loader(xtr[idx[:a.calib_images]], ytr[idx[:a.calib_images]],
                                       250)]
    if "top1_baseline" not in state:
        state.update(top1_baseline=evaluate(model, test)["top1"],
                     baseline_recipe=meta.get("recipe", "?"))
        save_state()
    print("baseline", state["top1_baseline"], flush=True)

    comp_path = work / "compressed.pt"

    def run_lrsa():
        plan = default_plan(find_layers(model, calib[0][:1]), ratio=3.0)
        for name, lp in plan.items():
            paper_cr = PAPER_TABLE_II[NIN_LAYER_NAMES[name]][2] / 100
            lp.skip = paper_cr >= 1  # the cccp layers; conv1 IS approximated in the paper
            lp.target_cr = None if lp.skip else min(1.0, paper_cr * a.table_ii_scale)
        compressed, summary = compress_and_evaluate(
            model, calib, test, budget=plan, response="relu", strategy="asymmetric",
            workdir=work / "layers")
        save_compressed(compressed, comp_path, arch=a.model)
        return summary
    lrsa = phase(state, save_state, "run_lrsa", run_lrsa)
    state.update(layers=lrsa["layers"], top1_compressed=lrsa["top1"])
    others = baselines_phase(state, save_state, model, calib, test, lrsa["layers"], work=work,
                             arch=a.model)
    for key, run in others.items():
        state.update({f"top1_{key}": run["top1"], f"params_{key}": run["params"]})

    if a.epochs:
        state.update(finetune_runs(state, save_state, work, model, train, test, arch=a.model,
                                   epochs=a.epochs, lr=a.lr, distill=a.distill))
    finetuned = load_compressed(work / ("finetuned.pt" if a.epochs else "compressed.pt"))[0]
    summary = network_summary(model, finetuned.eval(), (1, 3, 32, 32),
                              latency_batches=(1, 128), repeats=10)
    reference = max(state["top1_baseline"], state.get("top1_baseline_finetuned", 0.0))
    approx_s = lrsa["seconds"]
    epochs = a.epochs * a.train_images / len(xtr)
    data = {**state, **summary, "approx_seconds": approx_s, "finetune_epochs": epochs,
            "finetune_lr": a.lr, "finetune_images": a.train_images,
            "table_ii_scale": a.table_ii_scale, "calib_images": a.calib_images,
            "speedup_b1": summary["latency"]["b1"]["speedup"],
            "speedup_b128": summary["latency"]["b128"]["speedup"],
            "top1_drop": reference - state.get("top1_finetuned", state["top1_compressed"]),
            "threads": torch.get_num_threads(), "paper": PAPER_NIN}
    table = markdown_table(state["layers"], paper=PAPER_TABLE_II, names=NIN_LAYER_NAMES,
                           paper_ratio=PAPER_NIN["params_ratio"])
    data["markdown"] = "\n".join([
        f"Baseline: `{state['baseline_recipe']}`; code {settings['code_version']}, "
        f"{data['threads']} threads.", "",
        "At equal stored size per layer (the sizes lrsa chose), before fine-tuning:", "",
        comparison_table(lrsa, others, data["params_original"]), "", table, "",
        "| | ours | paper |", "|---|---:|---:|",
        f"| parameters (original / compressed) | {data['params_ratio']:.2f}x | 2.77x |",
        f"| MACs (original / compressed) | {data['macs_ratio']:.2f}x | - |",
        f"| CPU speed-up, batch 1 | {data['speedup_b1']:.2f}x | - |",
        f"| CPU speed-up, batch 128 | {data['speedup_b128']:.2f}x | 1.7x (Table II: 2.2x) |",
        f"| top-1 baseline | {state['top1_baseline']:.2f}% | - |",
        f"| top-1 compressed, before fine-tuning | {state['top1_compressed']:.2f}% | - |",
        *([f"| top-1 control (uncompressed, same fine-tuning) | "
           f"{state['top1_baseline_finetuned']:.2f}% | - |",
           f"| top-1 compressed, fine-tuned ({epochs:.2g} epochs) | "
           f"{state['top1_finetuned']:.2f}% | - |",
           f"| top-1 truncated SVD / reduced-rank regression, same fine-tuning | "
           f"{state['top1_svd_finetuned']:.2f}% / {state['top1_rrr_finetuned']:.2f}% | - |"]
          if a.epochs else []),
        f"| top-1 drop vs the better reference | {data['top1_drop']:.2f} pt | 0.41 pt |",
        f"| approximation time (3 layers) | {approx_s:.0f} s | 10-30 min per layer |"])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
