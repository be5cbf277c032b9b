"""VGG-16 on CIFAR-10: top-1 against measured speed for lrsa, truncated SVD and reduced-rank
regression at several whole-network sizes, each size spread over the layers two ways.

    python benchmarks/frontier.py [--sizes 0.33 0.2 0.1] [--spreads energy sqrt] [--work DIR]

For every size and spread (``Budget(size=..., spread=...)``): lrsa with its defaults
(asymmetric, ReLU response, 1000 calibration images, fall-back "macs"), then truncated SVD and
reduced-rank regression at exactly the per-layer stored sizes lrsa chose; top-1 on the 10,000
test images before any fine-tuning; per layer, its stored size and (lrsa) the held-out
error of each sparse/low-rank split tried. Then, for the "energy" spread (the default),
each model's batch-1 and batch-128 time against the BN-folded original, interleaved, in
the realization (contiguous or channels_last, fp32) that is faster for the original at that
batch size.
Needs a trained VGG-16-BN (``_common.checkpoint_path``) and CIFAR-10 (LRSA_DATA). Every
phase is saved as it ends; a rerun resumes only a run of the same code version and
settings. Writes
benchmarks/results/frontier.json and .md; notebook 07 reads the JSON.
"""

import argparse
import copy
import time
from pathlib import Path

import torch

from _common import (CHECKPOINT, baselines_phase, cifar_split, compress_and_evaluate,
                     faster_layout, git_version, phase, require_inputs, run_state, table)
from lrsa.batchnorm import fold_batchnorm
from lrsa.models import load_checkpoint, vgg16_bn
from lrsa.pipeline import Budget, load_compressed, save_compressed
from lrsa.report import count_parameters, write_report
from lrsa.timing import compare_latency
from lrsa.train import evaluate

RESULTS = Path(__file__).parent / "results"
METHODS = {"lrsa": "compressed.pt", "svd": "compressed_svd.pt", "rrr": "compressed_rrr.pt"}


def accuracy_phase(state, save, model, calib, test, work, size, spread):
    """lrsa at ``Budget(size, spread)``, then SVD and RRR at its per-layer sizes."""
    key = f"{spread}_{size}"
    folder = work / key

    def run_lrsa():
        compressed, summary = compress_and_evaluate(
            model, calib, test, budget=Budget(size=size, spread=spread), progress=False,
            workdir=folder / "layers_lrsa")
        save_compressed(compressed, folder / METHODS["lrsa"], arch="vgg16_bn")
        return summary
    lrsa = phase(state, save, f"{key}_lrsa", run_lrsa)
    sub, sub_save = run_state(folder, state["settings"])
    others = baselines_phase(sub, sub_save, model, calib, test, lrsa["layers"], work=folder,
                             arch="vgg16_bn", keys=("svd", "rrr"))
    return {"lrsa": lrsa, **others}


def layer_rows(layers):
    """Per layer what notebook 07 reads: kind, stored weights, rank, kept input channels and
    (lrsa) the held-out error of each split tried, B alone among them."""
    keys = ("name", "kind", "params_compressed", "params_original", "rank", "kept_channels",
            "heldout")
    return [{k: x.get(k) for k in keys} for x in layers]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=float, nargs="+", default=[0.33, 0.2, 0.1])
    p.add_argument("--spreads", nargs="+", choices=["energy", "sqrt"],
                   default=["energy", "sqrt"])
    p.add_argument("--calib-images", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=20, help="interleaved timing repeats")
    p.add_argument("--work", default=str(RESULTS / "frontier_work"))
    p.add_argument("--out", default=str(RESULTS / "frontier"))
    a = p.parse_args()
    require_inputs(CHECKPOINT, "vgg16_bn")
    work = Path(a.work)
    settings = {"sizes": a.sizes, "spreads": a.spreads, "calib_images": a.calib_images,
                "repeats": a.repeats, "code_version": git_version()}
    state, save = run_state(work, settings)
    t_start = time.perf_counter()

    model = vgg16_bn()
    load_checkpoint(model, CHECKPOINT)
    model.eval()
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    _, _, test, _, calib = cifar_split(a.calib_images)
    top1_original = phase(state, save, "top1_original", lambda: evaluate(model, test)["top1"])
    params_original = count_parameters(folded)

    rows = []
    for size in a.sizes:
        for spread in a.spreads:
            runs = accuracy_phase(state, save, model, calib, test, work, size, spread)
            for method, r in runs.items():
                rows.append({"size": size, "spread": spread, "method": method,
                             "params": r["params"], "ratio": params_original / r["params"],
                             "top1": r["top1"], "approx_seconds": r["seconds"],
                             "layers": layer_rows(r["layers"])})

    layouts = {}
    for b in (1, 128):
        cl, medians = phase(state, save, f"layout_b{b}",
                            lambda b=b: faster_layout(folded, b, a.repeats))
        layouts[f"b{b}"] = {"channels_last": cl, **medians}
    for row in rows:
        if row["spread"] != "energy":
            continue
        path = work / f"{row['spread']}_{row['size']}" / METHODS[row["method"]]
        for b in (1, 128):
            key = f"time_{row['spread']}_{row['size']}_{row['method']}_b{b}"
            cl = layouts[f"b{b}"]["channels_last"]
            lat = phase(state, save, key, lambda b=b, cl=cl, path=path: compare_latency(
                folded, load_compressed(path)[0].eval(), (b, 3, 32, 32), repeats=a.repeats,
                channels_last=cl))
            row[f"speedup_b{b}"] = lat["speedup"]
            row[f"speedup_b{b}_min"] = lat["original_min_s"] / lat["compressed_min_s"]

    data = {"code_version": settings["code_version"], "threads": torch.get_num_threads(),
            "top1_original": top1_original, "params_original": params_original,
            "calib_images": a.calib_images, "repeats": a.repeats, "layouts": layouts,
            "rows": rows, "wall_seconds_this_invocation": time.perf_counter() - t_start}
    shown = [{"size": r["size"], "spread": r["spread"], "method": r["method"],
              "x fewer": f"{r['ratio']:.2f}", "top-1": f"{r['top1']:.2f}%",
              "b128 speed-up (min)": (f"{r['speedup_b128']:.2f}x ({r['speedup_b128_min']:.2f}x)"
                                      if "speedup_b128" in r else "-"),
              "b1 speed-up (min)": (f"{r['speedup_b1']:.2f}x ({r['speedup_b1_min']:.2f}x)"
                                    if "speedup_b1" in r else "-")} for r in rows]
    lay = ", ".join(f"batch {b[1:]}: {'channels_last' if v['channels_last'] else 'contiguous'}"
                    for b, v in layouts.items())
    data["markdown"] = "\n".join([
        f"VGG-16 on CIFAR-10, code {data['code_version']}, {data['threads']} threads; original "
        f"top-1 {top1_original:.2f}%; before fine-tuning; speed medians of {a.repeats} "
        f"interleaved repeats against the BN-folded original ({lay}, the faster for the "
        "original).", "", table(shown, list(shown[0]))])
    write_report(a.out, data)
    print(data["markdown"])


if __name__ == "__main__":
    main()
