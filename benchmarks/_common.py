"""Shared pieces of the benchmarks: where the reference data and weights are."""

import hashlib
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from lrsa.batchnorm import fold_batchnorm
from lrsa.data import load_cifar10, make_loader
from lrsa.models import get_model, load_checkpoint
from lrsa.pipeline import compress, compress_like, finetune, load_compressed, save_compressed
from lrsa.report import count_parameters
from lrsa.timing import allocator, compare_latency, measure_latency
from lrsa.train import evaluate
from lrsa.utils import atomic_write_text, code_version, format_table

REPO = Path(__file__).resolve().parents[1]


def checkpoint_path(model):
    """Where the trained ``model`` ("vgg16_bn", "nin_bn", ...) a benchmark starts from is
    read when no --checkpoint is given: ``<model>_cifar10.pt`` in the folder
    ``LRSA_CHECKPOINTS`` names, else in this repository's ``runs/models`` (where the
    ``lrsa train`` commands of docs/benchmarks.md write it)."""
    folder = os.environ.get("LRSA_CHECKPOINTS") or REPO / "runs" / "models"
    return Path(folder) / f"{model}_cifar10.pt"


CHECKPOINT = checkpoint_path("vgg16_bn")


def load_pair(model, checkpoint, compressed):
    """(the trained ``model`` at ``checkpoint`` with its BatchNorm folded, the compressed
    model saved at ``compressed``), both in eval mode: the two networks a timing compares."""
    original = get_model(model)
    load_checkpoint(original, checkpoint)
    return fold_batchnorm(original.eval()), load_compressed(compressed)[0].eval()


def require_inputs(checkpoint, model):
    """Exit saying what to do unless the trained ``model`` at ``checkpoint`` and CIFAR-10
    are at hand."""
    if not Path(checkpoint).is_file():
        raise SystemExit(f"needs a trained {model} at {checkpoint}: `lrsa train --model "
                         f"{model} --out {checkpoint}` makes one (docs, Benchmarks, gives "
                         "each network's epochs), or pass --checkpoint, or set "
                         f"LRSA_CHECKPOINTS to a folder holding {Path(checkpoint).name}")
    if cifar_root() is None:
        raise SystemExit("needs CIFAR-10: `lrsa download-cifar10 data` fetches it into "
                         "./data; LRSA_DATA names another folder holding cifar-10-batches-py")


def cifar_root():
    """The official cifar-10-batches-py folder if one is at hand, else None."""
    for root in [os.environ.get("LRSA_DATA"), REPO / "data"]:
        if root and (Path(root) / "cifar-10-batches-py").is_dir() or (
                root and Path(root).name == "cifar-10-batches-py" and Path(root).is_dir()):
            return Path(root)
    return None


def cifar_split(calib_images):
    """CIFAR-10 as the benchmarks use it: (training images, their labels, the test loader
    (batches of 500), a fixed permutation of the training indices, the calibration batches:
    the permutation's first ``calib_images`` images in batches of 250)."""
    xtr, ytr = load_cifar10(cifar_root(), train=True)
    xte, yte = load_cifar10(cifar_root(), train=False)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(0))
    calib = [x for x, _ in make_loader(xtr[idx[:calib_images]], ytr[idx[:calib_images]], 250)]
    return xtr, ytr, make_loader(xte, yte, 500), idx, calib


def table(rows, columns):
    """Format a list of dicts as a markdown table."""
    return format_table(columns, [[_fmt(r.get(c, "")) for c in columns] for r in rows])


def _fmt(v):
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"
    return str(v)


def threads():
    return torch.get_num_threads()


def run_state(work, settings):
    """(state dict, save function) of a resumable benchmark run in folder ``work``.

    The state remembers the run's ``settings``; a folder written with other settings is
    refused rather than silently reused (a state without settings is adopted as is)."""
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    path = work / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    old = state.get("settings")
    if old is not None and old != settings:
        diff = {k: (old.get(k), v) for k, v in settings.items() if old.get(k) != v}
        raise SystemExit(f"{work} holds a run with other settings (old, new): {diff}; "
                         "pass another --work folder or delete this one")
    state["settings"] = settings

    def save():
        atomic_write_text(path, json.dumps(state, indent=1))

    return state, save


def finetune_phase(state, save, key, model_path, ft_path, train, test, *, arch, **recipe):
    """Fine-tune the model saved at ``model_path`` once with ``lrsa.finetune(**recipe)`` (a
    rerun resumes after it, and mid-run from the epoch checkpoint ``ft_path``.state);
    records ``top1_<key>``, ``finetune_seconds_<key>`` (training only, without the tests
    after each epoch; a resumed run's counts only what ran after the resume) and
    ``curve_<key>``, the test top-1 after each epoch, in ``state``."""
    if f"top1_{key}" not in state:
        model, _ = load_compressed(model_path)
        curve = state.setdefault(f"curve_{key}", [])
        testing = []

        def after_epoch(epoch, stats):  # saved at once, so a resume keeps the epochs done
            t = time.perf_counter()
            curve.append({"epoch": epoch + 1, "top1": evaluate(model, test)["top1"],
                          "train_loss": stats["loss"]})
            save()
            testing.append(time.perf_counter() - t)

        t0 = time.perf_counter()
        finetune(model, train, progress=True, checkpoint=f"{ft_path}.state",
                 on_epoch_end=after_epoch, **recipe)
        state[f"finetune_seconds_{key}"] = time.perf_counter() - t0 - sum(testing)
        save_compressed(model, ft_path, arch=arch)
        done = curve and curve[-1]["epoch"] == recipe["epochs"]  # else it stopped in between
        state[f"top1_{key}"] = curve[-1]["top1"] if done else evaluate(model, test)["top1"]
        save()
        Path(f"{ft_path}.state").unlink()
    print(f"top1_{key}", state[f"top1_{key}"], flush=True)


def finetune_runs(state, save, work, original, new_train, test, *, arch, epochs, lr, distill,
                  baselines=()):
    """lrsa's model, the control (the uncompressed ``original``, BN folded) and the
    ``baselines`` run at lrsa's sizes (keys of :data:`BASELINES`), in this order, each
    fine-tuned with one recipe: ``epochs`` at peak ``lr``, bf16 autocast (measured faster
    on this CPU), and with ``distill`` ("logits", "features" or "none") from the
    uncompressed network. ``new_train()`` makes the training loader, anew for each model so
    that all see the same images in the same order (one loader shared in turn continues its
    shuffling from one model to the next, and a resumed run would start it again).
    Returns the keys it recorded."""
    work = Path(work)
    save_compressed(original, work / "original.pt", arch=arch)
    recipe = dict(epochs=epochs, lr=lr, bf16=True)
    if distill != "none":
        recipe.update(teacher=original, feature_weight=1.0 if distill == "features" else 0.0)
    runs = {"finetuned": "compressed.pt", "baseline_finetuned": "original.pt",
            **{f"{k}_finetuned": f"compressed_{k}.pt" for k in baselines}}
    for key, start in runs.items():
        finetune_phase(state, save, key, work / start, work / f"{key}.pt", new_train(), test,
                       arch=arch, **recipe)
    return {k: state[k] for k in state if k.startswith(("top1_", "finetune_seconds_", "curve_"))
            and k.endswith(tuple(runs))}


def add_run_options(parser, out):
    """The options of a resumable benchmark: ``--work`` (its folder), ``--out`` (the results'
    path without extension, default ``out``) and ``--summarize``."""
    parser.add_argument("--work", required=True, help="the run's folder (resumes from it)")
    parser.add_argument("--out", default=str(out))
    parser.add_argument("--summarize", action="store_true",
                        help="only write the results from what the work folder holds (no new "
                             "computation, so no check that today's code matches the run's)")


def saved_state(work):
    """The state a resumable run left in folder ``work`` (for ``--summarize``: read only)."""
    path = Path(work) / "state.json"
    if not path.is_file():
        raise SystemExit(f"{work} holds no run to summarize (no state.json)")
    return json.loads(path.read_text())


def phase(state, save, key, fn):
    """``state[key]``, computed by ``fn()`` and saved once (a rerun resumes after it)."""
    if key not in state:
        state[key] = fn()
        save()
    value = state[key]
    print(key, "" if isinstance(value, (dict, list)) else value, flush=True)
    return value


def code_fingerprint():
    """sha256 (16 hex digits) of the code a benchmark runs: lrsa's sources and
    benchmarks/*.py. What a resumed run must match (a commit that changes only docs or
    results leaves it, so a run that spans sessions resumes across such commits)."""
    h = hashlib.sha256(code_version().encode())
    for path in sorted(Path(__file__).parent.glob("*.py")):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def faster_layout(original, batch, repeats, sample=(3, 32, 32)):
    """(channels_last?, both medians): the memory format the original runs faster in."""
    med = {cl: measure_latency(original, (batch, *sample), repeats=repeats,
                               channels_last=cl)["median_s"] for cl in (False, True)}
    return med[True] < med[False], {"contiguous_s": med[False], "channels_last_s": med[True]}


def timed_in_faster_layout(state, save, original, compressed, batches, repeats,
                           sample=(3, 32, 32)):
    """For each batch size, under this process's memory allocator
    (:func:`lrsa.timing.allocator`): the layout the original runs faster in (phase
    ``layout_b<batch>``) and the interleaved comparison of both networks in it (phase
    ``latency_b<batch>``). Returns a dict of the keys the results JSON carries:
    ``speedup_b<batch>`` (medians), ``speedup_b<batch>_min`` (minimum times), ``latency``
    and ``realization`` (batch -> "channels_last" or "contiguous", with both medians)."""
    out = {"latency": {}, "realization": {}}
    for b in batches:
        cl, medians = phase(state, save, f"layout_b{b}",
                            lambda b=b: faster_layout(original, b, repeats, sample))
        lat = phase(state, save, f"latency_b{b}", lambda b=b, cl=cl: compare_latency(
            original, compressed, (b, *sample), repeats=repeats, channels_last=cl))
        out["realization"][f"b{b}"] = {"layout": "channels_last" if cl else "contiguous",
                                       "fp32": True, "allocator": allocator(), **medians}
        out["latency"][f"b{b}"] = lat
        out[f"speedup_b{b}"] = lat["speedup"]
        out[f"speedup_b{b}_min"] = lat["original_min_s"] / lat["compressed_min_s"]
    return out


def cpu_model():
    """The CPU's model name (Linux's /proc/cpuinfo), else what platform reports."""
    cpuinfo = Path("/proc/cpuinfo")
    for line in cpuinfo.read_text().splitlines() if cpuinfo.is_file() else ():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def git_version():
    """The commit the benchmark runs at, "-dirty" when the code (lrsa/, benchmarks/*.py)
    differs from it (results files do not count)."""
    root = Path(__file__).resolve().parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "lrsa", ":(glob)benchmarks/*.py"],
                           cwd=root, capture_output=True, text=True).stdout.strip()
    return head + ("-dirty" if dirty else "")


def compress_and_evaluate(model, calib, test, like=None, save_as=None, arch=None,
                          **kwargs):
    """(compressed model, summary dict): compress(**kwargs), or compress_like(``like``) at
    the per-layer sizes of an earlier run's report, then top-1 on ``test``; the model is
    written to ``save_as`` (with ``arch``) when given."""
    kwargs.setdefault("progress", True)  # a long run: show where it is
    compressed, rep = (compress(model, calib, **kwargs) if like is None
                       else compress_like(model, calib, like, **kwargs))
    if save_as is not None:
        save_compressed(compressed, save_as, arch=arch)
    return compressed, {"seconds": rep.seconds, "layers": rep.to_dict()["layers"],
                        "budget": rep.budget,
                        "speed": rep.speed,
                        "params": count_parameters(compressed),
                        "top1": evaluate(compressed, test)["top1"]}


#: the runs compared with lrsa at its per-layer stored sizes: key -> (name, compress args)
BASELINES = {"svd": ("truncated SVD (data-free)", dict(method="svd")),
             "rrr": ("reduced-rank regression (linear response)",
                     dict(method="rrr", response="linear")),
             "lrsa_linear": ("lrsa, linear response", dict(method="lrsa", response="linear"))}


def baselines_phase(state, save, model, calib, test, lrsa_layers, strategy="asymmetric",
                    work=None, arch=None, keys=tuple(BASELINES)):
    """Each of :data:`BASELINES` named in ``keys`` at exactly the per-layer sizes of an lrsa
    run (layers it left as they were stay so; no speed fall-back, so the sizes hold).
    Returns key -> summary; each model is saved as ``work/compressed_<key>.pt`` when
    ``work`` is given."""
    return {key: phase(state, save, f"run_{key}", lambda key=key, kw=kw: compress_and_evaluate(
        model, calib, test, like={"layers": lrsa_layers}, strategy=strategy, progress=False,
        save_as=None if work is None else Path(work) / f"compressed_{key}.pt", arch=arch,
        **kw)[1]) for key, (_, kw) in BASELINES.items() if key in keys}


def comparison_table(lrsa_run, others, params_original):
    """Markdown: each method's stored parameters, reduction, top-1 and time."""
    runs = [(name, others[k]) for k, (name, _) in BASELINES.items() if k in others]
    runs.append(("**lrsa (defaults: ReLU response)**", lrsa_run))
    return table([{"method": name, "stored parameters": r["params"],
                   "x fewer": f"{params_original / r['params']:.2f}",
                   "top-1 before fine-tuning": f"{r['top1']:.2f}%",
                   "approximation s": f"{r['seconds']:.0f}"}
                  for name, r in runs],
                 ["method", "stored parameters", "x fewer", "top-1 before fine-tuning",
                  "approximation s"])
