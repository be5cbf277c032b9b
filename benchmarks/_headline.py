"""The headline run shared by vgg16_cifar10.py and nin_cifar10.py: compress a trained
CIFAR-10 network with lrsa, the baselines at lrsa's per-layer sizes, speed in the layout the
original runs faster in, fine-tuning of every model and the control, one report.

Every phase is saved as it ends (the fine-tuning also after each epoch, with the test top-1
after each epoch); a rerun resumes only a run of the same code (the fingerprint of lrsa/ and
benchmarks/*.py) and settings.
"""

import copy
import time
from pathlib import Path

import torch

from _common import (BASELINES, baselines_phase, cifar_split, code_fingerprint,
                     comparison_table, compress_and_evaluate, finetune_runs, git_version,
                     phase, run_state, table, timed_in_faster_layout)
from lrsa.batchnorm import fold_batchnorm
from lrsa.data import make_loader
from lrsa.features import find_layers
from lrsa.pipeline import load_compressed, save_compressed
from lrsa.report import count_parameters, markdown_table, network_summary, write_report
from lrsa.timing import allocator
from lrsa.train import evaluate

RESULTS = Path(__file__).parent / "results"
#: the options every headline run takes (its settings: a rerun with others is refused)
RUN_OPTIONS = ("baselines", "fallback", "epochs", "lr", "distill", "calib_images",
               "train_images", "latency_repeats")


def add_run_options(p, name, *, lr=1e-3):
    """The options of :data:`RUN_OPTIONS`, ``--work`` and ``--out`` on parser ``p``
    (``lr``: the network's fine-tuning learning rate, ``--lr``'s default)."""
    p.add_argument("--baselines", nargs="*", choices=list(BASELINES), default=["svd", "rrr"],
                   help="the other methods run (and fine-tuned) at lrsa's per-layer sizes")
    p.add_argument("--fallback", choices=["macs", "time", "none"], default="macs",
                   help="where a solved layer stays dense (lrsa.compress's fallback)")
    p.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs (0: none)")
    p.add_argument("--lr", type=float, default=lr, help="peak fine-tuning learning rate")
    p.add_argument("--distill", choices=["logits", "features", "none"], default="logits",
                   help="fine-tune learning from the uncompressed network too")
    p.add_argument("--calib-images", type=int, default=1000)
    p.add_argument("--train-images", type=int, default=50_000,
                   help="fine-tune on a random subset of this size (an epoch = one pass)")
    p.add_argument("--latency-repeats", type=int, default=30)
    p.add_argument("--work", default=str(RESULTS / f"{name}_work"))
    p.add_argument("--out", default=str(RESULTS / name),
                   help="results path without extension (.json and .md are written)")


def run_settings(a, own):
    """What a headline run records and a resumed one must match: the script's ``own``
    settings, the options of :data:`RUN_OPTIONS` on the command line ``a``, the code (a rerun
    with other code is refused) and the allocator (timings differ under another)."""
    return {**own, **{k: getattr(a, k) for k in RUN_OPTIONS}, "code": code_fingerprint(),
            "allocator": allocator()}


def run(settings, *, work, out, model, recipe, arch, budget_of, title, paper, paper_table,
        layer_names, paper_rows=lambda data: ()):
    """The headline run of the trained ``model`` (BatchNorm not yet folded; trained by
    ``recipe``, its checkpoint's) under ``settings`` (:func:`run_settings`), resumable from
    the folder ``work``;
    ``budget_of(layers)`` gives lrsa's budget (a Budget, or a plan for those layers).
    ``paper_rows(data)``: extra (what, ours, paper) rows for the comparison with the paper.
    Writes ``out``.json and .md and returns the data."""
    work = Path(work)
    state, save = run_state(work, settings)
    commit = phase(state, save, "code_version", git_version)  # the commit it started at
    t_start = time.perf_counter()
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    xtr, ytr, test, idx, calib = cifar_split(settings["calib_images"])
    phase(state, save, "top1_baseline", lambda: evaluate(model.eval(), test)["top1"])
    params_original = phase(state, save, "params_original", lambda: count_parameters(folded))

    def run_lrsa():
        compressed, summary = compress_and_evaluate(
            model, calib, test, budget=budget_of(find_layers(folded, calib[0][:1])),
            response="relu", strategy="asymmetric",
            fallback=None if settings["fallback"] == "none" else settings["fallback"],
            workdir=work / "layers_lrsa")
        save_compressed(compressed, work / "compressed.pt", arch=arch)
        return summary
    lrsa = phase(state, save, "run_lrsa", run_lrsa)
    others = baselines_phase(state, save, model, calib, test, lrsa["layers"], work=work,
                             arch=arch, keys=settings["baselines"])
    # timed before fine-tuning, which changes no shape: the numbers do not wait for hours
    compressed, _ = load_compressed(work / "compressed.pt")
    speed = timed_in_faster_layout(state, save, folded, compressed.eval(), (1, 128),
                                   settings["latency_repeats"])

    data = {"code_version": commit, "code_fingerprint": settings["code"],
            "threads": torch.get_num_threads(), "settings": settings,
            "preset": settings.get("preset"), "baseline_recipe": recipe,
            "budget": lrsa.get("budget"),
            "top1_baseline": state["top1_baseline"], "params_original": params_original,
            "top1_compressed": lrsa["top1"], "params_compressed": lrsa["params"],
            "approx_seconds": lrsa["seconds"], "speed_check": lrsa["speed"],
            "layers": lrsa["layers"], "fallback": settings["fallback"],
            "calib_images": settings["calib_images"],
            "paper": paper}
    for key, other in others.items():
        data.update({f"top1_{key}": other["top1"], f"params_{key}": other["params"],
                     f"approx_seconds_{key}": other["seconds"]})
    data["params_ratio"] = params_original / lrsa["params"]
    compared = [data[f"top1_{k}"] for k in ("svd", "rrr") if k in others]
    data["top1_margin_over_best_baseline"] = lrsa["top1"] - max(compared) if compared else None
    if settings["epochs"]:
        # the permutation's last images: disjoint from the calibration images only when
        # train_images <= 50,000 - calib_images (the default, all 50,000, includes them)
        train_sub = idx[-settings["train_images"]:]

        def new_train():  # made anew for each model: all see one order (finetune_runs)
            return make_loader(xtr[train_sub], ytr[train_sub], 128, train=True, seed=0)
        data.update(finetune_runs(state, save, work, folded, new_train, test, arch=arch,
                                  epochs=settings["epochs"], lr=settings["lr"],
                                  distill=settings["distill"],
                                  baselines=list(others)))
        _finetune_summary(data, settings, len(xtr), others)
    data.update(network_summary(folded, compressed, (1, 3, 32, 32), latency_batches=()),
                **speed)
    data["wall_seconds_this_invocation"] = time.perf_counter() - t_start
    data["markdown"] = _markdown(data, settings, title, lrsa, others, paper, paper_table,
                                 layer_names, paper_rows)
    write_report(out, data)
    print(data["markdown"])
    return data


def _finetune_summary(data, settings, train_size, others):
    """The fine-tuning keys: the drop against the better of baseline and control, the
    recipe, and a table of every model before and after."""
    reference = max(data["top1_baseline"], data["top1_baseline_finetuned"])
    data.update(finetune_seconds=data["finetune_seconds_finetuned"],
                finetune_epochs=settings["epochs"] * settings["train_images"] / train_size,
                finetune_recipe=f"{settings['epochs']} epochs of {settings['train_images']} "
                                f"images, lr {settings['lr']} cosine, bf16, distill "
                                f"{settings['distill']}",
                top1_drop=reference - data["top1_finetuned"])
    runs = [(BASELINES[k][0], f"top1_{k}", f"{k}_finetuned") for k in others]
    runs += [("**lrsa**", "top1_compressed", "finetuned"),
             ("uncompressed (control)", "top1_baseline", "baseline_finetuned")]
    rows = [{"method": name, "top-1 before": f"{data[before]:.2f}%",
             **{f"epoch {i + 1}": f"{e['top1']:.2f}%"
                for i, e in enumerate(data.get(f"curve_{key}", []))},
             "top-1 fine-tuned": f"{data[f'top1_{key}']:.2f}%",
             "fine-tuning s": f"{data[f'finetune_seconds_{key}']:.0f}"}
            for name, before, key in runs]
    data["finetune_markdown"] = "\n".join([
        f"Fine-tuned ({data['finetune_recipe']}); test top-1 after each epoch; drop against "
        f"the better of baseline and control: {data['top1_drop']:.2f} points.", "",
        table(rows, list(max(rows, key=len)))])


def _markdown(data, settings, title, lrsa, others, paper, paper_table, layer_names, paper_rows):
    speed = ", ".join(f"batch {b[1:]} {r['layout']}" for b, r in data["realization"].items())
    speed += f"; allocator: {data['realization']['b128']['allocator']}"
    per_layer = [{"layer": layer_names.get(r["name"], r["name"]),
                  "n x d": f"{r['n']} x {r['d']}", "kind": r["kind"],
                  "lrsa": r.get("choice", "-"), "rank": r["rank"],
                  "kept channels": r.get("kept_channels", "-"),
                  "sized by": (r.get("sized_by") or "-").split(": ")[-1],
                  "params lrsa": r["params_compressed"],
                  **{f"params {k}": others[k]["layers"][i]["params_compressed"]
                     for k in others}} for i, r in enumerate(lrsa["layers"])]
    ours_vs_paper = [("parameters (original / compressed)", f"{data['params_ratio']:.2f}x",
                      f"{paper['params_ratio']}x"),
                     ("CPU speed-up, batch 128", f"{data['speedup_b128']:.2f}x",
                      f"{paper['speedup']}x"),
                     *paper_rows(data)]
    if settings["epochs"]:
        ours_vs_paper.append(("top-1 drop after fine-tuning",
                              f"{data['top1_drop']:.2f} pt ({data['finetune_epochs']:.2g} "
                              "epochs)", f"{paper['accuracy_drop']} pt"))
    return "\n".join([
        f"{title}, code {data['code_version']}, {data['threads']} threads; baseline top-1 "
        f"{data['top1_baseline']:.2f}% (`{data['baseline_recipe']}`).", "",
        "| | ours | paper |", "|---|---:|---:|",
        *(f"| {what} | {ours} | {theirs} |" for what, ours, theirs in ours_vs_paper), "",
        "At equal stored size per layer (the sizes lrsa chose), before fine-tuning:", "",
        comparison_table(lrsa, others, data["params_original"]), "",
        f"Speed (BN-folded original vs lrsa, fp32 in the layout faster for the original: "
        f"{speed}; {settings['latency_repeats']} interleaved repeats): batch 1 "
        f"{data['speedup_b1']:.2f}x (min {data['speedup_b1_min']:.2f}x), batch 128 "
        f"{data['speedup_b128']:.2f}x (min {data['speedup_b128_min']:.2f}x); MACs "
        f"{data['macs_ratio']:.2f}x fewer.", "",
        *([data["finetune_markdown"], ""] if settings["epochs"] else []),
        "Per layer (stored parameters):", "", table(per_layer, list(per_layer[0])), "",
        markdown_table(lrsa["layers"], paper=paper_table, names=layer_names,
                       paper_ratio=paper["params_ratio"])])
