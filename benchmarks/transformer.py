"""Sparse + low-rank on a transformer: a small ViT (torch's own encoder layers) on the
bundled 8 x 8 digits, every linear map approximated at equal stored sizes by seven methods,
before and after the same short fine-tuning, over seeds, with paired 95 % intervals and the
CPU time of each form.

    python benchmarks/transformer.py --work runs/transformer_digits [--seeds 0 1 2]

Protocol (docs/evaluation.md): the ViT is trained once (seed 0) on the digits' training
part, by a recipe picked on test accuracy among four tries (docs: Benchmarks, labelled
there); the sizes, the fine-tuning recipe and the methods' settings are fixed in advance,
and lrsa's split of each layer is chosen on held-out calibration samples; no method is
chosen over another on the 450 test images every figure is read on. A seed fixes the
calibration sample (256 training images), the solver's sampling and the fine-tuning order,
shared by every method. Every approximated layer (the attention projections, the MLP and
the head; not the 4-input patch embedding) is given the same stored fraction
(``Budget(layer_size=size)``). Stored sizes count a sparse A's indices
(:func:`lrsa.decompose.entry_storage`). Resumable: every model's predictions are saved as
they are made.
"""

import argparse
import copy
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from _common import (add_run_options, code_fingerprint, cpu_model, git_version, phase,
                     run_state, saved_state)
from lrsa.data import load_digits_images, make_loader
from lrsa.evaluation import bootstrap_interval
from lrsa.models import tiny_vit
from lrsa.pipeline import (Budget, SolverSettings, compress, finetune, load_compressed,
                           save_compressed)
from lrsa.report import write_report
from lrsa.timing import allocator, compare_latency
from lrsa.train import predictions, train
from lrsa.utils import atomic_torch_save, format_table, load_torch_file

RESULTS = Path(__file__).parent / "results"
#: method key -> (what it is, compress's arguments)
METHODS = {
    "svd": ("truncated SVD (data-free)", dict(method="svd")),
    "rrr": ("reduced-rank regression (activation-whitened low rank)",
            dict(method="rrr", response="linear")),
    "oats_unstructured": ("OATS, unstructured", dict(method="oats", sparsity="unstructured")),
    "oats_2_4": ("OATS, 2:4", dict(method="oats", sparsity="2:4")),
    "lrsa_channel": ("lrsa A + B, channel (the paper's)", dict()),
    "lrsa_unstructured": ("lrsa A + B, unstructured", dict(sparsity="unstructured")),
    "lrsa_2_4": ("lrsa A + B, 2:4", dict(sparsity="2:4")),
}
RECIPE = {"original": dict(epochs=150, lr=0.05, warmup_epochs=5, weight_decay=1e-4, seed=0),
          "finetune": dict(epochs=5, lr=0.01)}
STAGES = ("before", "after")
#: the paired method-against-method differences the results state
PAIRS = [("lrsa_channel", "rrr"), ("lrsa_2_4", "rrr"), ("lrsa_unstructured", "rrr"),
         ("lrsa_2_4", "oats_2_4"), ("lrsa_unstructured", "oats_unstructured"),
         ("lrsa_channel", "lrsa_2_4")]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--sizes", type=float, nargs="+", default=[0.6, 0.7, 0.8])
    p.add_argument("--calib-images", type=int, default=256)
    p.add_argument("--timing-repeats", type=int, default=30)
    add_run_options(p, RESULTS / "transformer_digits")
    a = p.parse_args()
    settings = {k: getattr(a, k) for k in ("seeds", "sizes", "calib_images", "timing_repeats")}
    settings.update(code=code_fingerprint(), recipe=RECIPE)
    digits = load_digits_images()
    work = Path(a.work)
    if a.summarize:
        state = saved_state(work)  # its settings, not this command line's, say what ran
    else:
        state, save = run_state(work, settings)
        phase(state, save, "code_version", git_version)
        test = make_loader(digits.x_test, digits.y_test, 256, mean=None, std=None)
        original = trained_original(work, digits, state, save, test)
        for seed in settings["seeds"]:
            run_seed(settings, seed, state, save, work, original, digits, test)
        timing(settings, state, save, work, original)
    data = summarize(state, work, digits.y_test.numpy(), a.out)
    write_report(a.out, data)
    print(data["markdown"])


def _train_loader(digits, seed):
    return make_loader(digits.x_train, digits.y_train, 64, train=True, mean=None, std=None,
                       pad=0, seed=seed)


def trained_original(work, digits, state, save, test):
    """The ViT, trained once by the fixed recipe (reloaded when the work folder holds it)."""
    path = work / "original.pt"
    model = tiny_vit()
    if path.exists():
        model.load_state_dict(load_torch_file(path, "the trained ViT"))
        return model.eval()
    recipe = RECIPE["original"]
    torch.manual_seed(recipe["seed"])
    model = tiny_vit()
    t0 = time.perf_counter()
    train(model, _train_loader(digits, recipe["seed"]), **recipe)
    atomic_torch_save(model.state_dict(), path)
    pred, labels = predictions(model.eval(), test)
    state["original"] = {"top1": float(100 * (pred == labels).mean()),
                         "train_seconds": time.perf_counter() - t0,
                         "params": sum(p.numel() for p in model.parameters())}
    save()
    return model


def run_seed(settings, seed, state, save, work, original, digits, test):
    """Every method at every size of ``settings``, before and after fine-tuning, and the
    control."""
    perm = torch.randperm(len(digits.x_train), generator=torch.Generator().manual_seed(seed))
    calib = digits.x_train[perm[:settings["calib_images"]]]
    runs = state.setdefault("runs", {}).setdefault(str(seed), {})
    folder = work / f"seed{seed}"
    folder.mkdir(exist_ok=True)

    def record(key, net, stage, **extra):
        pred, _ = predictions(net, test)
        np.save(folder / f"{key}_{stage}.npy", pred.astype(np.int8))
        runs.setdefault(key, {})[stage] = extra
        save()

    def tuned(net):
        finetune(net, _train_loader(digits, seed), teacher=original, seed=seed,
                 **RECIPE["finetune"])
        return net.eval()

    if "after" not in runs.get("control", {}):
        record("control", tuned(copy.deepcopy(original)), "after")
    for size in settings["sizes"]:
        for key, (_, kwargs) in METHODS.items():
            name = f"{key}@{size}"
            if "after" in runs.get(name, {}):
                continue
            t0 = time.perf_counter()
            net, rep = compress(original, calib, Budget(layer_size=size), progress=False,
                                solver=SolverSettings(seed=seed), **kwargs)
            record(name, net, "before", seconds=time.perf_counter() - t0,
                   stored=rep.params_compressed, original=rep.params_original,
                   choices=[r.choice for r in rep.layers if r.kind == "factored"])
            if seed == settings["seeds"][0]:
                save_compressed(net, folder / f"{name}.model.pt", arch="tiny_vit")  # timed
            record(name, tuned(net), "after", **runs[name]["before"])


def timing(settings, state, save, work, original):
    """CPU time of each compressed form against the original (torch's own attention, its
    fast path in eval mode), interleaved, at batch 1 and 256, on the first seed's models."""
    times = state.setdefault("timing", {})
    folder = work / f"seed{settings['seeds'][0]}"
    for size in settings["sizes"]:
        for key in METHODS:
            name = f"{key}@{size}"
            if name in times:
                continue
            net = load_compressed(folder / f"{name}.model.pt")[0].eval()
            times[name] = {str(b): compare_latency(original, net, (b, 1, 8, 8),
                                                   repeats=settings["timing_repeats"])
                           for b in (1, 256)}
            save()


def summarize(state, work, labels, out):
    """Top-1 intervals per method, size and stage of the run in ``state``; the drop against
    the fine-tuned control; the median speed-up; records (the per-image correctness written
    to ``<out>_correct.npz``)."""
    settings = state["settings"]
    seeds = [str(s) for s in settings["seeds"]]

    def correct(name, stage):
        return np.stack([np.load(work / f"seed{s}" / f"{name}_{stage}.npy") == labels
                         for s in seeds]).astype(np.uint8)

    control = correct("control", "after")
    rows, results, packed = [], {}, {"control__after": np.packbits(control, axis=1)}
    for size in settings["sizes"]:
        for key, (label, _) in METHODS.items():
            name = f"{key}@{size}"
            runs = [state["runs"][s][name]["before"] for s in seeds]
            c = {stage: correct(name, stage) for stage in STAGES}
            packed.update({f"{name}__{stage}": np.packbits(c[stage], axis=1)
                           for stage in STAGES})
            iv = {stage: bootstrap_interval([c[stage]]) for stage in STAGES}
            drop = bootstrap_interval([control, c["after"]])
            speed = {b: state["timing"][name][b]["speedup"] for b in ("1", "256")}
            results[name] = {
                "method": key, "label": label, "size": size,
                "stored_fraction": runs[0]["stored"] / runs[0]["original"],
                "compress_seconds": [r["seconds"] for r in runs],
                "choices_seed0": runs[0]["choices"],
                **{f"top1_{stage}": iv[stage].to_dict() for stage in STAGES},
                "drop_after": drop.to_dict(), "speedup": speed,
                "times": state["timing"][name]}
            rows.append([f"{size:.1f}", label, f"{results[name]['stored_fraction']:.3f}",
                         str(iv["before"]), str(iv["after"]), str(drop),
                         f"{speed['1']:.2f}x / {speed['256']:.2f}x"])
    comparisons, lines = {}, []
    for size in settings["sizes"]:
        for first, second in PAIRS:
            for stage in STAGES:
                iv = bootstrap_interval([correct(f"{first}@{size}", stage),
                                         correct(f"{second}@{size}", stage)])
                key = f"{first} - {second} @ {size}, {stage}"
                verdict = iv.comparison(f"{first} higher", f"{second} higher")
                comparisons[key] = {**iv.to_dict(), "verdict": verdict}
                lines.append([key, str(iv), verdict])
    np.savez_compressed(f"{out}_correct.npz", **packed, seeds=np.array(settings["seeds"]),
                        images=np.array(len(labels)))
    head = (f"TinyViT on the bundled digits (450 test images), code {state['code_version']}, "
            f"{torch.get_num_threads()} threads, {cpu_model()}, allocator {allocator()}; "
            f"original {state['original']['top1']:.2f} % top-1; seeds {settings['seeds']}; "
            f"fine-tuning {RECIPE['finetune']['epochs']} epochs at lr "
            f"{RECIPE['finetune']['lr']} with distillation; control after fine-tuning "
            f"{bootstrap_interval([control])}.")
    table = format_table(["size", "method", "stored / original", "top-1 before [95 %]",
                          "top-1 after [95 %]", "drop vs control [95 %]",
                          "speed-up batch 1 / 256"], rows)
    return {"what": "benchmarks/transformer.py", "argv": sys.argv,
            "settings": state["settings"], "code_version": state["code_version"],
            "versions": {"python": platform.python_version(), "torch": torch.__version__,
                         "numpy": np.__version__},
            "cpu": cpu_model(), "threads": torch.get_num_threads(), "allocator": allocator(),
            "original": state["original"], "control_after": bootstrap_interval([control]).to_dict(),
            "results": results, "comparisons": comparisons,
            "markdown": head + "\n\n" + table + "\n\nPaired differences (points, 95 %):\n\n"
            + format_table(["difference", "mean [95 %]", "verdict"], lines)}


if __name__ == "__main__":
    main()
