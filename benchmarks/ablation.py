"""Does the sparse part pay? B alone, A + B, A alone, truncated SVD and reduced-rank
regression at one budget, over several seeds, before and after the same fine-tuning,
with paired 95 % intervals; the winner among lrsa's three splits chosen on validation.

    LRSA_DATA=<folder with cifar-10-batches-py> python benchmarks/ablation.py \\
        --work runs/ablation_nin [--model nin_bn | vgg16_bn] [--seeds 0 1 2] [--epochs 1]

The protocol (docs/evaluation.md): the shared baselines were trained on all 50,000
training images, so CIFAR-10's 10,000 test images are split into two fixed halves
(:func:`lrsa.evaluation.split_indices`, seed 0): every choice is made on the *validation*
half, the figures are read on the *report* half. A seed fixes the calibration sample (from
the training images), the solver's sampling and the fine-tuning data order and
augmentation, shared by every method within it. Each model's predictions on all 10,000
test images are kept in the work folder; the results keep which were correct (bit-packed)
and the predictions' sha256.

Methods, each at the budget of the network's headline (``--size``, ``--macs``, every layer):
``b_alone`` (ratio 0: the fast preset, reduced-rank regression with the ReLU refit),
``a_plus_b`` (ratio 3: Algorithm 1 ranks the input channels and each layer's split between
kept channels and rank is chosen on held-out calibration samples), ``a_alone`` (ratio inf:
channel pruning by the group-lasso prox and refit), ``svd`` and ``rrr`` at exactly
``b_alone``'s per-layer sizes, and ``control`` (the uncompressed network, fine-tuned the
same way). Resumable: every model and epoch is saved as it ends.
"""

import argparse
import copy
import hashlib
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import (add_run_options, checkpoint_path, cifar_root, code_fingerprint,
                     cpu_model, git_version, phase, require_inputs, run_state, saved_state,
                     table)
from lrsa.batchnorm import fold_batchnorm
from lrsa.data import load_cifar10, make_loader
from lrsa.evaluation import bootstrap_interval, mcnemar, split_indices
from lrsa.models import get_model, load_checkpoint
from lrsa.pipeline import Budget, compress, compress_like, finetune, load_compressed
from lrsa.pipeline import save_compressed
from lrsa.pipeline.layer import SolverSettings
from lrsa.report import count_macs, count_parameters, write_report
from lrsa.timing import allocator
from lrsa.train import predictions

RESULTS = Path(__file__).parent / "results"
#: lrsa's three splits of the budget (Budget.ratio = lam2 / lam1)
SPLITS = {"b_alone": 0.0, "a_plus_b": 3.0, "a_alone": math.inf}
#: method key -> what it is, in the tables
METHODS = {"b_alone": "lrsa, B alone (low-rank only; the fast preset)",
           "a_plus_b": "lrsa, A + B (Algorithm 1 chooses the split)",
           "a_alone": "lrsa, A alone (channel pruning)",
           "svd": "truncated SVD at B alone's sizes",
           "rrr": "reduced-rank regression at B alone's sizes",
           "control": "uncompressed (control)"}
#: each network's headline budget (chosen on the test set at earlier stops, before the
#: protocol; the results say so) and fine-tuning lr (re-made on validation:
#: benchmarks/lr_screen.py, results/lr_screen_<name>.json)
HEADLINES = {"nin_bn": {"size": 0.36, "macs": 0.4, "lr": 1e-2},
             "vgg16_bn": {"size": 0.2, "macs": 0.33, "lr": 3e-3}}
NAMES = {"nin_bn": "NIN", "vgg16_bn": "VGG-16"}
SPLIT_SEED = 0  # the fixed halves of the test set
STAGES = ("before", "after")  # fine-tuning


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=list(HEADLINES), default="nin_bn")
    p.add_argument("--checkpoint", help="default: _common.checkpoint_path(--model)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--size", type=float, help="default: the headline's (see HEADLINES)")
    p.add_argument("--macs", type=float, help="default: the headline's")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, help="default: the headline's")
    p.add_argument("--calib-images", type=int, default=1000)
    p.add_argument("--compressed-from", metavar="WORK",
                   help="take the compressed models (and their before-fine-tuning records) "
                        "from another ablation's work folder whose budget, seeds' calibration "
                        "and checkpoint match; only the fine-tuning runs again (for a new lr "
                        "or number of epochs)")
    add_run_options(p, None)
    a = p.parse_args()
    for key, value in HEADLINES[a.model].items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    a.checkpoint = a.checkpoint or str(checkpoint_path(a.model))
    if a.out is None:
        a.out = str(RESULTS / f"ablation_{a.model.removesuffix('_bn')}")
    require_inputs(a.checkpoint, a.model)
    settings = {k: getattr(a, k) for k in ("checkpoint", "seeds", "size", "macs", "epochs",
                                           "lr", "calib_images")}
    if a.model != "nin_bn":  # NIN's runs predate the option
        settings["model"] = a.model
    settings.update(code=code_fingerprint(), allocator=allocator())
    if a.compressed_from:
        settings["compressed_from"] = compressed_source(a.compressed_from, settings)
    work = Path(a.work)
    model = get_model(a.model)
    meta = load_checkpoint(model, a.checkpoint)
    xte, yte = load_cifar10(cifar_root(), train=False)
    if a.summarize:
        state = saved_state(work)
        settings = state["settings"]
    else:
        state, save = run_state(work, settings)
        phase(state, save, "code_version", git_version)
        folded = fold_batchnorm(copy.deepcopy(model).eval())
        xtr, ytr = load_cifar10(cifar_root(), train=True)
        test = make_loader(xte, yte, 500)
        if a.compressed_from:
            adopt_compressed(Path(a.compressed_from), work, state, save, a.seeds)
        for seed in a.seeds:
            run_seed(settings, a.model, seed, state, save, work, model, folded, xtr, ytr, test)
    data = summarize(state, work, meta, settings, yte.numpy(), a.out)
    write_report(a.out, data)
    print(data["markdown"])


#: the settings a compressed model depends on (fine-tuning's lr and epochs do not)
COMPRESSION_SETTINGS = ("checkpoint", "size", "macs", "calib_images", "model")


def compressed_source(work, settings):
    """What ``--compressed-from work`` records: the folder, its code and commit. Refuses a
    folder whose compression settings differ from this run's."""
    theirs = saved_state(work)
    other = theirs["settings"]
    def value(d, k):  # NIN's runs predate the "model" key
        return d.get(k, "nin_bn" if k == "model" else None)

    diff = {k: (value(other, k), value(settings, k)) for k in COMPRESSION_SETTINGS
            if value(other, k) != value(settings, k)}
    if diff:
        raise SystemExit(f"--compressed-from {work} compressed with other settings (theirs, "
                         f"this run's): {diff}")
    return {"work": str(work), "code": other["code"],
            "code_version": theirs.get("code_version")}


def adopt_compressed(source, work, state, save, seeds):
    """Copy each seed's compressed models, their predictions and before-fine-tuning records
    from ``source`` (models a seed lacks there are compressed here as usual)."""
    theirs = saved_state(source)["runs"]
    for seed in map(str, seeds):
        folder = work / f"seed{seed}"
        folder.mkdir(exist_ok=True)
        runs = state.setdefault("runs", {}).setdefault(seed, {})
        for key, record in theirs.get(seed, {}).items():
            if key in runs or "before" not in record:
                continue
            for name in (f"{key}.pt", f"{key}_before.npy"):
                shutil.copyfile(source / f"seed{seed}" / name, folder / name)
            runs[key] = {k: record[k] for k in ("before", "layers") if k in record}
            save()


def budget(settings, ratio):
    """The run's budget (its ``size`` and ``macs``, every layer open) at one split."""
    return Budget.preset("fast", size=settings["size"], macs=settings["macs"], all_layers=True,
                         ratio=ratio)


def run_seed(settings, arch, seed, state, save, work, model, folded, xtr, ytr, test):
    """Compress ``model`` (architecture ``arch``) with every method at the budget in
    ``settings``, then fine-tune each and the control by its recipe, for one seed."""
    folder = work / f"seed{seed}"
    folder.mkdir(exist_ok=True)
    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))
    n_calib = settings["calib_images"]
    calib = [x for x, _ in make_loader(xtr[perm[:n_calib]], ytr[perm[:n_calib]], 250)]
    solver = SolverSettings(seed=seed)
    runs = state.setdefault("runs", {}).setdefault(str(seed), {})

    def record(key, net, stage, **extra):
        pred, labels = predictions(net, test)
        np.save(folder / f"{key}_{stage}.npy", pred.astype(np.int8))
        runs.setdefault(key, {})[stage] = {
            "top1_all": float(100 * (pred == labels).mean()),
            "predictions_sha256": hashlib.sha256(pred.astype(np.int8).tobytes()).hexdigest(),
            **extra}
        save()

    for key in METHODS:
        if key in runs:
            continue
        t0 = time.perf_counter()
        if key == "control":
            net = folded
            rows = None
        elif key in SPLITS:
            net, rep = compress(model, calib, budget(settings, SPLITS[key]), solver=solver,
                                progress=False)
            rows = rep.to_dict()["layers"]
        else:
            like = {"layers": runs["b_alone"]["layers"]}
            kw = dict(method="svd") if key == "svd" else dict(method="rrr", response="linear")
            net, rep = compress_like(model, calib, like, solver=solver, progress=False, **kw)
            rows = rep.to_dict()["layers"]
        seconds = time.perf_counter() - t0
        save_compressed(net, folder / f"{key}.pt", arch=arch)
        record(key, net, "before", seconds=seconds,
               params=count_parameters(net), macs=count_macs(net, (1, 3, 32, 32)))
        if rows is not None:
            runs[key]["layers"] = rows
            save()
    for key in METHODS:
        if "after" in runs[key]:
            continue
        net, _ = load_compressed(folder / f"{key}.pt")
        curve = runs[key].setdefault("curve", [])
        # a loader made anew for each model: every model sees the same images in one order
        train = make_loader(xtr, ytr, 128, train=True, seed=seed)
        t0 = time.perf_counter()
        finetune(net, train, epochs=settings["epochs"], lr=settings["lr"], bf16=True,
                 teacher=folded, seed=seed,
                 checkpoint=folder / f"{key}.finetune.state",
                 on_epoch_end=lambda epoch, stats, c=curve: (c.append(
                     {"epoch": epoch + 1, "train_loss": stats["loss"]}), save()))
        record(key, net, "after", finetune_seconds=time.perf_counter() - t0)
        (folder / f"{key}.finetune.state").unlink(missing_ok=True)


def summarize(state, work, meta, settings, labels, out):
    """Validation scores, the winner among the splits, report-half intervals, records (the
    per-image correctness written to ``<out>_correct.npz``).
    Each stage (before / after fine-tuning) rests on the seeds for which every method
    reached it (a run stopped early has fewer seeds after fine-tuning than before)."""
    name = NAMES[settings.get("model", "nin_bn")]
    n_test = len(labels)
    val, report = split_indices(n_test, n_test // 2, seed=SPLIT_SEED)
    runs = state["runs"]
    seeds = {stage: [s for s in map(str, settings["seeds"]) if s in runs
                     and all(stage in runs[s].get(k, {}) for k in METHODS)]
             for stage in STAGES}
    correct = {(k, stage): np.stack([np.load(work / f"seed{s}" / f"{k}_{stage}.npy")
                                     == labels for s in seeds[stage]]).astype(np.uint8)
               for k in METHODS for stage in STAGES}
    validation = {k: {stage: 100 * float(correct[k, stage][:, val].mean())
                      for stage in STAGES} for k in METHODS}
    winner = max(SPLITS, key=lambda k: validation[k]["after"])
    rep = {key: c[:, report] for key, c in correct.items()}
    intervals = {k: {stage: bootstrap_interval([rep[k, stage]]).to_dict()
                     for stage in STAGES} for k in METHODS}
    comparisons = {}
    pairs = [("control", k) for k in METHODS if k != "control"]  # the drops
    pairs += [("a_plus_b", "b_alone"), ("a_plus_b", "a_alone"), ("b_alone", "a_alone"),
              (winner, "svd"), (winner, "rrr")]
    for first, second in dict.fromkeys(pairs):
        for stage in STAGES:
            iv = bootstrap_interval([rep[first, stage], rep[second, stage]])
            comparisons[f"{first} - {second}, {stage}"] = {
                **iv.to_dict(), "verdict": iv.comparison(f"{first} higher", f"{second} higher"),
                "mcnemar_per_seed": [mcnemar(x, y) for x, y in
                                     zip(rep[first, stage], rep[second, stage])]}
    data = {
        "what": f"ablation of the sparse part at {name}'s headline budget", "model": name,
        "argv": sys.argv, "settings": settings, "code_version": state["code_version"],
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "onednn": torch.backends.mkldnn.version()
                     if hasattr(torch.backends.mkldnn, "version") else None,
                     "numpy": np.__version__},
        "cpu": cpu_model(), "threads": torch.get_num_threads(), "allocator": allocator(),
        "checkpoint_sha256": hashlib.sha256(Path(settings["checkpoint"]).read_bytes()).hexdigest(),
        "baseline_recipe": meta.get("recipe"),
        "split": {"rule": "lrsa.evaluation.split_indices(10000, 5000, seed=0): validation "
                          "first, report the rest", "seed": SPLIT_SEED,
                  "validation": len(val), "report": len(report)},
        "seeds": {stage: [int(s) for s in seeds[stage]] for stage in STAGES},
        "cut": f"{settings['epochs']} epoch(s) of fine-tuning at lr {settings['lr']:g} (the "
               f"{name} headline's 5 epochs did not fit the session); the lr "
               + _lr_provenance(settings)
               + (f"; the compressed models were made by the run in {src['work']} (code "
                  f"{src['code_version']}), only the fine-tuning ran again"
                  if (src := settings.get("compressed_from")) else "")
               + ("" if seeds["after"] == seeds["before"] else
                  f"; after fine-tuning {len(seeds['after'])} seeds, not "
                  f"{len(seeds['before'])}: the rest did not fit the session")
               + (f"; seed(s) {unfinished} not finished yet (the run resumes from its work "
                  "folder)" if (unfinished := [s for s in settings["seeds"]
                                               if str(s) not in seeds["before"]]) else ""),
        "selection": {"candidates": list(SPLITS), "criterion": "mean validation top-1 after "
                      "fine-tuning over the seeds", "validation_top1": validation,
                      "winner": winner},
        "report_top1": intervals, "comparisons": comparisons,
        "params": {k: runs[seeds["before"][0]][k]["before"]["params"] for k in METHODS},
        "macs": {k: runs[seeds["before"][0]][k]["before"]["macs"] for k in METHODS},
        "per_seed": {s: {k: {stage: runs[s][k][stage] for stage in STAGES if stage in runs[s][k]}
                         | {"curve": runs[s][k].get("curve", []),
                            "layers": _layer_summary(runs[s][k].get("layers"))}
                         for k in METHODS} for s in seeds["before"]},
        "correct_file": f"{Path(out).name}_correct.npz",
    }
    np.savez_compressed(f"{out}_correct.npz", validation=val, report=report,
                        **{f"seeds__{stage}": np.array(seeds[stage], dtype=int)
                           for stage in STAGES},
                        **{f"{k}__{stage}": np.packbits(c, axis=1)
                           for (k, stage), c in correct.items()})
    data["markdown"] = _markdown(data)
    return data


def _lr_provenance(settings):
    """Where the fine-tuning lr came from: the validation screen, if one chose it."""
    path = RESULTS / f"lr_screen_{settings.get('model', 'nin_bn').removesuffix('_bn')}.json"
    if path.is_file():
        screen = json.loads(path.read_text())
        if math.isclose(screen["winner"], settings["lr"]):
            scores = ", ".join(f"{lr} {v['top1']:.2f}"
                               for lr, v in screen["validation_top1"].items())
            return (f"won on the validation half ({path.name}: {scores}; standard error "
                    f"{screen['standard_error_points']:.2f})")
    return "was chosen on the test set at an earlier stop, not re-made on validation"


def _layer_summary(rows):
    if not rows:
        return None
    return [{k: r.get(k) for k in ("name", "kind", "choice", "rank", "kept_channels",
                                   "params_compressed", "params_original")} for r in rows]


def _markdown(d):
    n0 = d["params"]["control"]
    rows = [{"method": name, "stored weights": f"{d['params'][k] / 1e6:.3f} M "
             f"({n0 / d['params'][k]:.2f}x)",
             "MACs": f"{d['macs']['control'] / d['macs'][k]:.2f}x fewer",
             "validation top-1 after": f"{d['selection']['validation_top1'][k]['after']:.2f}%",
             "report top-1 before [95 %]": _iv(d["report_top1"][k]["before"]),
             "report top-1 after [95 %]": _iv(d["report_top1"][k]["after"])}
            for k, name in METHODS.items()]
    comps = [{"difference (points, report half)": key, "mean [95 %]": _iv(c),
              "verdict": c["verdict"]} for key, c in d["comparisons"].items()]
    return "\n".join([
        f"Ablation on {d['model']} (CIFAR-10), code {d['code_version']}, "
        f"{d['threads']} threads, "
        f"seeds {d['seeds']['before']} before fine-tuning, {d['seeds']['after']} after; "
        f"{d['cut']}.", "",
        f"Winner among lrsa's splits on validation: **{d['selection']['winner']}**.", "",
        table(rows, list(rows[0])), "", table(comps, list(comps[0]))])


def _iv(iv):
    return f"{iv['mean']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


if __name__ == "__main__":
    main()
