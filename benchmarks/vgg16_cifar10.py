"""Full VGG-16 on CIFAR-10: lrsa against truncated SVD and reduced-rank regression at equal
stored size, layer by layer; then (optionally) fine-tuning; beside the paper's Table I/III.

    python benchmarks/vgg16_cifar10.py [--network-cr 0.17 | --preset fast] [--epochs 0]
        [--baselines svd rrr lrsa_linear] [--work DIR]

Needs the shared baseline (../shared/models/vgg16_bn_cifar10.pt) and CIFAR-10 in the
official layout (LRSA_DATA or ../data). lrsa runs with its defaults (asymmetric strategy,
ReLU response, 1000 calibration images as the paper, per-layer sizes spread from one
network target, or a named budget with ``--preset``); then, at exactly the per-layer
stored sizes lrsa chose, in the same run: truncated SVD (data-free), reduced-rank
regression (asymmetric, linear response) and lrsa with the linear response. Top-1 on the
10,000 test images before any fine-tuning for each; speed in the memory layout the
original runs faster in, before fine-tuning (which changes no shape); then, with
``--epochs``, each model fine-tuned by one recipe. Every phase is saved as it ends (the
fine-tuning also after each epoch); a rerun resumes only a run of the same code (the
fingerprint of lrsa/ and benchmarks/*.py) and settings. Writes
benchmarks/results/vgg16_cifar10.json and .md (``--out``).
"""

import argparse
import copy
import time
from pathlib import Path

import torch

from _common import (BASELINES, CHECKPOINT, baselines_phase, cifar_root, code_fingerprint,
                     comparison_table, compress_and_evaluate, finetune_runs, git_version,
                     phase, run_state, table, timed_in_faster_layout)
from lrsa.data import load_cifar10, make_loader
from lrsa.features import fold_batchnorm
from lrsa.models import load_checkpoint, vgg16_bn
from lrsa.pipeline import Budget, load_compressed, save_compressed
from lrsa.pipeline.budget import PRESETS
from lrsa.paper import PAPER_TABLE_I, PAPER_VGG16, VGG16_LAYER_NAMES
from lrsa.report import count_parameters, markdown_table, network_summary, write_report
from lrsa.train import evaluate

RESULTS = Path(__file__).parent / "results"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # 0.17: layers left as they were (not faster factored) take back about 4 % of the budget
    p.add_argument("--network-cr", type=float, default=0.17)
    p.add_argument("--network-macs", type=float, default=None,
                   help="a multiply-add budget instead of --network-cr")
    p.add_argument("--target-speedup", type=float, default=None,
                   help="a whole-model speed-up budget (measured layer times) instead")
    p.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="a named budget (lrsa.Budget.preset) instead of the three above")
    p.add_argument("--baselines", nargs="+", choices=list(BASELINES), default=list(BASELINES),
                   help="the other methods run at lrsa's per-layer sizes")
    p.add_argument("--fallback", choices=["macs", "time", "none"], default="macs",
                   help="where a solved layer stays dense (lrsa.compress's fallback; the "
                        "headlines before the pipeline split used 'time')")
    p.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs (0: none)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--distill", choices=["logits", "features", "none"], default="logits",
                   help="fine-tune learning from the uncompressed network too")
    p.add_argument("--calib-images", type=int, default=1000)
    p.add_argument("--train-images", type=int, default=50_000,
                   help="fine-tune on a random subset of this size (an epoch = one pass)")
    p.add_argument("--latency-repeats", type=int, default=30)
    p.add_argument("--work", default=str(RESULTS / "vgg16_work"))
    p.add_argument("--out", default=str(RESULTS / "vgg16_cifar10"),
                   help="results path without extension (.json and .md are written)")
    a = p.parse_args()
    if not CHECKPOINT.exists() or cifar_root() is None:
        raise SystemExit("needs ../shared/models/vgg16_bn_cifar10.pt and CIFAR-10 "
                         "(set LRSA_DATA to the folder holding cifar-10-batches-py)")
    work = Path(a.work)
    settings = {k: getattr(a, k) for k in ("network_cr", "network_macs", "target_speedup",
                                           "preset", "baselines", "fallback",
                                           "epochs", "lr", "distill", "calib_images",
                                           "train_images", "latency_repeats")}
    settings["code"] = code_fingerprint()  # a rerun with other code is refused
    state, save = run_state(work, settings)
    commit = phase(state, save, "code_version", git_version)  # the commit it started at
    t_start = time.perf_counter()

    model = vgg16_bn()
    load_checkpoint(model, CHECKPOINT)
    model.eval()
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    xtr, ytr = load_cifar10(cifar_root(), train=True)
    xte, yte = load_cifar10(cifar_root(), train=False)
    test = make_loader(xte, yte, 500)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))
    calib = [x for x, _ in make_loader(xtr[idx[:a.calib_images]], ytr[idx[:a.calib_images]],
                                       250)]
    phase(state, save, "top1_baseline", lambda: evaluate(model, test)["top1"])
    params_original = phase(state, save, "params_original", lambda: count_parameters(folded))

    def run_lrsa():
        budget = (Budget.preset(a.preset) if a.preset else
                  Budget(macs=a.network_macs) if a.network_macs else
                  Budget(speedup=a.target_speedup) if a.target_speedup else
                  Budget(size=a.network_cr))
        compressed, summary = compress_and_evaluate(
            model, calib, test, budget=budget, response="relu", strategy="asymmetric",
            fallback=None if a.fallback == "none" else a.fallback,
            workdir=work / "layers_lrsa")
        save_compressed(compressed, work / "compressed.pt", arch="vgg16_bn")
        return summary
    lrsa = phase(state, save, "run_lrsa", run_lrsa)
    others = baselines_phase(state, save, model, calib, test, lrsa["layers"], work=work,
                             arch="vgg16_bn", keys=a.baselines)
    # timed before fine-tuning, which changes no shape: the numbers do not wait for hours
    compressed, _ = load_compressed(work / "compressed.pt")
    speed = timed_in_faster_layout(state, save, folded, compressed.eval(), (1, 128),
                                   a.latency_repeats)

    data = {"code_version": commit, "code_fingerprint": settings["code"],
            "threads": torch.get_num_threads(), "preset": a.preset,
            "budget": lrsa.get("budget"),
            "top1_baseline": state["top1_baseline"], "params_original": params_original,
            "top1_compressed": lrsa["top1"], "params_compressed": lrsa["params"],
            "approx_seconds": lrsa["seconds"], "speed_check": lrsa["speed"],
            "layers": lrsa["layers"], "network_cr_target": a.network_cr, "fallback": a.fallback,
            "network_macs_target": a.network_macs, "target_speedup": a.target_speedup,
            "calib_images": a.calib_images, "paper": PAPER_VGG16}
    for key, run in others.items():
        data.update({f"top1_{key}": run["top1"], f"params_{key}": run["params"],
                     f"approx_seconds_{key}": run["seconds"]})
    data["params_ratio"] = params_original / lrsa["params"]
    data["top1_margin_over_best_baseline"] = lrsa["top1"] - max(
        data.get(f"top1_{k}", -1.0) for k in ("svd", "rrr"))
    per_layer = [{"layer": VGG16_LAYER_NAMES.get(r["name"], r["name"]),
                  "n x d": f"{r['n']} x {r['d']}", "kind": r["kind"],
                  "lrsa": r.get("choice", "-"), "rank": r["rank"],
                  "kept channels": r.get("kept_channels", "-"),
                  "sized by": (r.get("sized_by") or "-").split(": ")[-1],
                  "params lrsa": r["params_compressed"],
                  **{f"params {k}": others[k]["layers"][i]["params_compressed"]
                     for k in others}} for i, r in enumerate(lrsa["layers"])]

    if a.epochs:
        train_sub = idx[-a.train_images:]
        train = make_loader(xtr[train_sub], ytr[train_sub], 128, train=True, seed=0)
        data.update(finetune_runs(state, save, work, folded, train, test, arch="vgg16_bn",
                                  epochs=a.epochs, lr=a.lr, distill=a.distill))
        reference = max(data["top1_baseline"], data["top1_baseline_finetuned"])
        data.update(finetune_seconds=data["finetune_seconds_finetuned"],
                    finetune_epochs=a.epochs * a.train_images / len(xtr),
                    finetune_recipe=f"{a.epochs} epochs, lr {a.lr} cosine, bf16, "
                                    f"distill {a.distill}",
                    top1_drop=reference - data["top1_finetuned"])
        ft_rows = [{"method": name, "top-1 before": f"{data[f'top1_{k}']:.2f}%",
                    "top-1 fine-tuned": f"{data[f'top1_{k}_finetuned']:.2f}%",
                    "fine-tuning s": f"{data[f'finetune_seconds_{k}_finetuned']:.0f}"}
                   for k, name in (("svd", "truncated SVD"), ("rrr", "reduced-rank regression"))]
        ft_rows += [{"method": "**lrsa**", "top-1 before": f"{data['top1_compressed']:.2f}%",
                     "top-1 fine-tuned": f"{data['top1_finetuned']:.2f}%",
                     "fine-tuning s": f"{data['finetune_seconds']:.0f}"},
                    {"method": "uncompressed (control)",
                     "top-1 before": f"{data['top1_baseline']:.2f}%",
                     "top-1 fine-tuned": f"{data['top1_baseline_finetuned']:.2f}%",
                     "fine-tuning s": f"{data['finetune_seconds_baseline_finetuned']:.0f}"}]
        data["finetune_markdown"] = "\n".join([
            f"Fine-tuned ({data['finetune_recipe']}); drop against the better of baseline "
            f"and control: {data['top1_drop']:.2f} points.", "",
            table(ft_rows, list(ft_rows[0]))])

    data.update(network_summary(folded, compressed, (1, 3, 32, 32), latency_batches=()),
                **speed)
    layouts = ", ".join(f"batch {b[1:]} {r['layout']}" for b, r in speed["realization"].items())
    data["wall_seconds_this_invocation"] = time.perf_counter() - t_start
    data["markdown"] = "\n".join([
        f"VGG-16 on CIFAR-10, code {data['code_version']}, {data['threads']} threads; "
        f"baseline top-1 {data['top1_baseline']:.2f}%.", "",
        "At equal stored size per layer (the sizes lrsa chose), before fine-tuning:", "",
        comparison_table(lrsa, others, params_original), "",
        f"Speed (BN-folded original vs lrsa, fp32 in the layout faster for the original: "
        f"{layouts}; {a.latency_repeats} interleaved repeats): "
        f"batch 1 {data['speedup_b1']:.2f}x (min {data['speedup_b1_min']:.2f}x), batch 128 "
        f"{data['speedup_b128']:.2f}x (min {data['speedup_b128_min']:.2f}x); MACs "
        f"{data['macs_ratio']:.2f}x fewer.", "",
        *([data["finetune_markdown"], ""] if a.epochs else []),
        "Per layer (stored parameters):", "", table(per_layer, list(per_layer[0])), "",
        markdown_table(lrsa["layers"], paper=PAPER_TABLE_I, names=VGG16_LAYER_NAMES,
                       paper_ratio=PAPER_VGG16["params_ratio"])])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
