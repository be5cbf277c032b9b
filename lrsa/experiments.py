r"""The loops behind the notebooks: the paper's Section V experiments as functions.

* :func:`single_layer_tradeoff` -- approximate ONE layer at a time (all others untouched)
  with the linear or the ReLU response over a range of lambdas: accuracy drop against
  compression rate (paper Fig. 4).
* :func:`strategy_curve` -- approximate the first k layers, k = 1, 2, ..., with the
  symmetric or the asymmetric strategy: accuracy after each k (paper Fig. 3).
* :func:`lambda_grid` -- solve one layer for a grid of (frac, ratio), record CR(A), CR(B),
  rank, the error and the spectra, cacheable to JSON (the slider explorer of
  :mod:`lrsa.explorer`).
* :func:`objective_along_segment` -- the layer's data term along a segment between two
  weights, for both responses (the ReLU one is not convex, see
  :func:`lrsa.solver.relu_nonconvexity_example`).

Plus what the notebooks share: where the reference data lie (:func:`load_setup`: the real
VGG-16 / CIFAR-10 when ``../shared`` and the data are there and smoke mode is off, else the
embedded default, a small CNN trained for a few seconds on scikit-learn's digits and cached),
and the paper's AlexNet results (:data:`PAPER_TABLE_IV`, :data:`PAPER_ALEXNET`).

Lambdas follow :func:`lrsa.pipeline.compress`: ``lam1 = frac * s`` with ``s`` the layer's
gradient scale, ``lam2 = ratio * lam1``. Compression rates are those of the solved
structure, CR(A+B) = (n nnz_cols(A) + r (n + d)) / (n d) (paper eq. 15): the experiments call
``compress(..., fallback=None)`` so every approximated layer stays factored.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .features import collect_features, find_layers, fold_batchnorm
from .pipeline import LayerPlan, compress
from .train import evaluate

__all__ = ["ALEXNET_LAYER_NAMES", "DIGITS_LAYER_NAMES", "PAPER_ALEXNET", "PAPER_TABLE_IV",
           "Setup", "benchmark_comparison", "cache_folder", "cifar_root", "digits_model",
           "digits_setup", "imagenet_alexnet_setup", "lambda_grid", "load_setup",
           "objective_along_segment", "paper_table_markdown", "relu_output_error", "shared_dir",
           "single_layer_tradeoff", "smoke_mode", "strategy_curve", "tradeoff_curves",
           "vgg16_cifar10_setup"]

#: Paper Table IV (AlexNet, ILSVRC-2012): layer -> (CR(A) %, CR(B) %, CR(A+B) %), verbatim.
#: Note: the text says the first two convolutions are not approximated, the table lists
#: conv2 at 45.0 %; kept as printed.
PAPER_TABLE_IV = {
    "conv1": (0.0, 100.0, 100.0), "conv2": (21.4, 23.6, 45.0), "conv3": (30.0, 22.9, 52.9),
    "conv4": (0.0, 32.6, 32.6), "conv5": (0.0, 26.0, 26.0), "fc1": (12.8, 0.0, 12.8),
    "fc2": (26.2, 0.0, 26.2), "fc3": (18.8, 0.0, 18.8),
}
#: Paper whole-network AlexNet results (Table IV): CR 18.0 %, 5.56x smaller, 1.1x faster,
#: top-5 accuracy 1.27 points lower (after fine-tuning).
PAPER_ALEXNET = {"cr": 18.0, "params_ratio": 5.56, "speedup": 1.1, "top5_drop": 1.27}
#: Our AlexNet module names (torchvision layout) -> the paper's layer names.
ALEXNET_LAYER_NAMES = {
    "features.0": "conv1", "features.3": "conv2", "features.6": "conv3", "features.8": "conv4",
    "features.10": "conv5", "classifier.1": "fc1", "classifier.4": "fc2", "classifier.6": "fc3",
}
#: The small digits CNN's module names -> short names.
DIGITS_LAYER_NAMES = {
    "features.0": "conv1", "features.3": "conv2", "features.7": "conv3",
    "features.10": "conv4", "classifier.0": "fc1", "classifier.2": "fc2",
}
_REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- where things are
def smoke_mode():
    """True when ``LRSA_SMOKE=1``: notebooks and examples use tiny sizes (CI)."""
    return os.environ.get("LRSA_SMOKE") == "1"


def shared_dir():
    """The reference folder (``$LRSA_SHARED``, else ``../shared`` beside the repository), or
    None when it is not there."""
    for cand in (os.environ.get("LRSA_SHARED"), _REPO.parent / "shared"):
        if cand and Path(cand).is_dir():
            return Path(cand)
    return None


def cifar_root():
    """A folder holding ``cifar-10-batches-py`` (``$LRSA_DATA``, else ``../data``), or None."""
    for cand in (os.environ.get("LRSA_DATA"), _REPO.parent / "data"):
        if not cand:
            continue
        p = Path(cand).expanduser()
        if (p / "cifar-10-batches-py" / "test_batch").is_file() or (
                p.name == "cifar-10-batches-py" and (p / "test_batch").is_file()):
            return p
    return None


def cache_folder():
    """Where the notebooks cache what they compute (the digits model, lambda grids, resumable
    runs): ``$LRSA_CACHE/notebooks/<code version>`` if set, else
    ``<temp dir>/lrsa-notebooks/<code version>``. One folder per version of lrsa's code, so
    an upgraded lrsa recomputes instead of meeting layers it must refuse to resume."""
    from .pipeline import code_version
    base = os.environ.get("LRSA_CACHE")
    folder = Path(base) / "notebooks" if base else Path(tempfile.gettempdir()) / "lrsa-notebooks"
    folder = folder / code_version()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _atomic_write_text(path, text):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _fingerprint(model):
    """A short hash of a model's weights (a few KB of every tensor)."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(str(tuple(v.shape)).encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes()[:4096])
    return h.hexdigest()[:12]


def _key(*parts):
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- setups
@dataclass
class Setup:
    """A network with its calibration and test data, as the notebooks use it.

    Attributes
    ----------
    name : str
        What it is, for printing.
    model : nn.Module
        The original network, eval mode (BatchNorm not folded).
    calib : list of Tensor
        Calibration input batches (fixed order), for :func:`lrsa.pipeline.compress`.
    test : iterable
        ``(inputs, labels)`` batches for :func:`lrsa.train.evaluate`.
    layers : list of str
        Conv2d/Linear module names in forward order.
    labels : dict
        Module name -> the paper's layer name.
    study_layers : tuple of str
        The layers of the single-layer study (Fig. 4: conv2-1 and conv3-1 on VGG-16).
    input_shape : tuple
        One input, batch first.
    real : bool
        True for the real VGG-16 / CIFAR-10.
    baseline_top1 : float
        Top-1 (%) of ``model`` on ``test``.
    """

    name: str
    model: nn.Module
    calib: list
    test: object
    layers: list
    labels: dict
    study_layers: tuple
    input_shape: tuple
    real: bool
    baseline_top1: float = field(default=float("nan"))

    def label(self, name):
        """The paper's name of a module (the module name when there is none)."""
        return self.labels.get(name, name)


def digits_model(epochs=6, seed=0, progress=False):
    """The embedded default: :func:`lrsa.models.small_cnn` trained on scikit-learn's 8 x 8
    digits (about 10 s on one core), cached in :func:`cache_folder`.

    Parameters
    ----------
    epochs, seed : int
        Training epochs and seed (the cache is per pair and torch version).
    progress : bool
        Training progress bar.

    Returns
    -------
    nn.Module in eval mode.
    """
    from .data import load_digits_images, make_loader
    from .models import load_checkpoint, small_cnn
    from .train import train

    path = cache_folder() / f"small_cnn_digits_e{epochs}_s{seed}_t{torch.__version__}.pt"
    torch.manual_seed(seed)
    model = small_cnn()
    if path.exists():
        try:
            load_checkpoint(model, path)
            return model.eval()
        except (ValueError, RuntimeError):
            pass  # a stale or broken cache file: train again
    d = load_digits_images()
    loader = make_loader(d.x_train, d.y_train, 64, train=True, mean=None, std=None, pad=1,
                         seed=seed)
    train(model, loader, epochs=epochs, lr=0.05, seed=seed, progress=progress)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    torch.save({"arch": "small_cnn", "state_dict": model.state_dict(), "epochs": epochs}, tmp)
    os.replace(tmp, path)
    return model.eval()


def digits_setup(epochs=6, seed=0, calib_images=384):
    """The embedded default :class:`Setup`: the small CNN on the digits (no files needed).

    Parameters
    ----------
    epochs, seed : int
        See :func:`digits_model`.
    calib_images : int
        Training images used for calibration (batches of 128).

    Returns
    -------
    Setup
    """
    from .data import load_digits_images, make_loader

    model = digits_model(epochs=epochs, seed=seed)
    d = load_digits_images()
    test = make_loader(d.x_test, d.y_test, 256, mean=None, std=None)
    calib = [d.x_train[i:i + 128] for i in range(0, min(calib_images, len(d.x_train)), 128)]
    layers = [n for n, _ in find_layers(model, calib[0][:1])]
    return Setup(name="small_cnn / digits (embedded default)", model=model, calib=calib,
                 test=test, layers=layers, labels=dict(DIGITS_LAYER_NAMES),
                 study_layers=("features.3", "features.7"), input_shape=(1, 1, 8, 8),
                 real=False, baseline_top1=evaluate(model, test)["top1"])


def vgg16_cifar10_setup(calib_images=500, test_images=2000, seed=0):
    """The real :class:`Setup`: the shared VGG-16 baseline on CIFAR-10.

    Parameters
    ----------
    calib_images : int
        Random training images for calibration (the paper: 1000), batches of 250.
    test_images : int or None
        First test images evaluated (None: all 10,000).
    seed : int
        Choice of the calibration images.

    Raises
    ------
    FileNotFoundError
        When ``shared/models/vgg16_bn_cifar10.pt`` or CIFAR-10 is missing.
    """
    from .data import load_cifar10, make_loader
    from .models import load_checkpoint, vgg16_bn
    from .report import VGG16_LAYER_NAMES

    shared, root = shared_dir(), cifar_root()
    ckpt = shared / "models" / "vgg16_bn_cifar10.pt" if shared is not None else None
    if ckpt is None or not ckpt.is_file():
        raise FileNotFoundError("no VGG-16 baseline (shared/models/vgg16_bn_cifar10.pt; set "
                                "LRSA_SHARED to the folder holding models/)")
    if root is None:
        raise FileNotFoundError("no CIFAR-10 (set LRSA_DATA to the folder holding "
                                "cifar-10-batches-py)")
    model = vgg16_bn()
    load_checkpoint(model, ckpt)
    model.eval()
    xtr, ytr = load_cifar10(root, train=True)
    xte, yte = load_cifar10(root, train=False)
    if test_images is not None:
        xte, yte = xte[:test_images], yte[:test_images]
    test = make_loader(xte, yte, 500)
    idx = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(seed))[:calib_images]
    calib = [x for x, _ in make_loader(xtr[idx], ytr[idx], 250)]
    layers = [n for n, _ in find_layers(model, calib[0][:1])]
    return Setup(name=f"vgg16_bn / CIFAR-10 ({len(yte)} test images)", model=model,
                 calib=calib, test=test, layers=layers, labels=dict(VGG16_LAYER_NAMES),
                 study_layers=("features.7", "features.14"), input_shape=(1, 3, 32, 32),
                 real=True, baseline_top1=evaluate(model, test)["top1"])


def imagenet_alexnet_setup(root, *, calib_images=1500, eval_images=None, calib_root=None,
                           batch_size=50, model=None, seed=0, workers=None):
    """AlexNet on an ImageNet-style folder (paper Sec. V-C): the user's machine only.

    Parameters
    ----------
    root : path
        Evaluation images in class subfolders named by WordNet id (``n01440764/...``), e.g.
        the ILSVRC-2012 validation set sorted into its 1000 classes: sorted wnids give
        torchvision's class indices, which the pretrained weights use.
    calib_images : int
        Calibration images (the paper: 1500 training images).
    eval_images : int or None
        Evaluated images (None: all that are not used for calibration).
    calib_root : path, optional
        A separate folder (say a part of the training set) to draw calibration images from;
        without it they are drawn from ``root`` and left out of the evaluation.
    batch_size : int
        Batch size of both.
    model : nn.Module, optional
        The network; default :func:`lrsa.models.alexnet` with ``pretrained=True`` (downloads
        torchvision's weights once, checked).
    seed : int
        Choice of the calibration images.
    workers : int, optional
        DataLoader workers for the evaluation (default: up to 4).

    Returns
    -------
    Setup
        ``baseline_top1`` is left NaN (evaluating takes a while: call
        ``lrsa.train.evaluate(setup.model, setup.test, topk=(1, 5))``).
    """
    from torch.utils.data import DataLoader, Subset

    from .data import load_image_folder
    from .models import alexnet

    data = load_image_folder(root)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data), generator=gen).tolist()
    if calib_root is not None:
        cdata = load_image_folder(calib_root)
        cperm = torch.randperm(len(cdata), generator=gen).tolist()
        calib_set, eval_idx = Subset(cdata, cperm[:calib_images]), perm
    else:
        calib_set, eval_idx = Subset(data, perm[:calib_images]), perm[calib_images:]
    if eval_images is not None:
        eval_idx = eval_idx[:eval_images]
    if not eval_idx:
        raise ValueError(f"no images left to evaluate in {root} after {calib_images} "
                         "calibration images")
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    calib = [x for x, _ in DataLoader(calib_set, batch_size=batch_size)]
    test = DataLoader(Subset(data, eval_idx), batch_size=batch_size, num_workers=workers)
    model = (alexnet(pretrained=True) if model is None else model).eval()
    layers = [n for n, _ in find_layers(model, calib[0][:1])]
    return Setup(name=f"AlexNet / {root} ({len(eval_idx)} images evaluated)", model=model,
                 calib=calib, test=test, layers=layers, labels=dict(ALEXNET_LAYER_NAMES),
                 study_layers=("features.6", "features.8", "features.10"),
                 input_shape=(1, 3, 224, 224), real=True)


def load_setup(smoke=None, **kwargs):
    """The real VGG-16 / CIFAR-10 setup when at hand and not in smoke mode, else the digits.

    Prints which one it uses and why.

    Parameters
    ----------
    smoke : bool or None
        None: :func:`smoke_mode`.
    **kwargs
        For :func:`vgg16_cifar10_setup`.

    Returns
    -------
    Setup
    """
    smoke = smoke_mode() if smoke is None else smoke
    if smoke:
        print("smoke mode (LRSA_SMOKE=1): using the embedded default, a small CNN on the "
              "8x8 digits")
        return digits_setup()
    try:
        setup = vgg16_cifar10_setup(**kwargs)
    except FileNotFoundError as exc:
        print(f"{exc}.\nFalling back to the embedded default: a small CNN trained for a few "
              "seconds on the 8x8 digits (cached in " f"{cache_folder()}).")
        return digits_setup()
    print(f"full mode: {setup.name}, baseline top-1 {setup.baseline_top1:.2f}%")
    return setup


# --------------------------------------------------------------------------- helpers
def _bar(total, progress, desc):
    if not progress:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc)


def _lowered(mod):
    """(W n x d, bias n) of a Conv2d/Linear or a SparseLowRank module (its A + U V)."""
    if hasattr(mod, "to_dense_weight"):
        W = mod.to_dense_weight()
        b = mod.bias
    else:
        W, b = mod.weight, mod.bias
    W = W.detach().reshape(W.shape[0], -1)
    b = torch.zeros(W.shape[0], dtype=W.dtype) if b is None else b.detach()
    return W, b


def relu_output_error(W, b, X, Z):
    r"""Relative error of the layer's ReLU output,
    :math:`\|\mathrm{relu}(WX + b) - \mathrm{relu}(Z)\|_F / \|\mathrm{relu}(Z)\|_F`.

    The quantity both responses are judged by downstream (the next layer sees the ReLU
    output), whatever response a solution was fitted to.
    """
    Y = torch.relu(Z)
    out = torch.relu(W.to(X) @ X + b.to(X)[:, None])
    return float(torch.linalg.norm(out - Y) / max(float(torch.linalg.norm(Y)), 1e-30))


def _row(report, name):
    return next(r for r in report.layers if r["name"] == name)


def _plan_for(model, names, frac, ratio, fc_ratio):
    mods = dict(model.named_modules())
    return {n: LayerPlan(frac=frac, ratio=fc_ratio if isinstance(mods[n], nn.Linear) else ratio)
            for n in names}


# --------------------------------------------------------------------------- Fig. 4
def single_layer_tradeoff(model, layer_name, calib, test_loader, fracs,
                          responses=("linear", "relu"), *, ratio=3.0, target_crs=None,
                          baseline_top1=None, samples_per_image=10, max_samples=10_000,
                          max_iter=200, tol=1e-3, progress=True):
    """Approximate one layer alone, all others untouched, over a range of lambdas (Fig. 4).

    Parameters
    ----------
    model : nn.Module
        The original network (not modified).
    layer_name : str
        The Conv2d/Linear module approximated.
    calib : list
        Calibration batches (see :func:`lrsa.pipeline.compress`).
    test_loader : iterable
        ``(inputs, labels)`` batches for the accuracy.
    fracs : sequence of float
        ``lam1`` relative to the layer's gradient scale; larger means smaller CR.
    responses : sequence of str
        ``"linear"`` (reconstruct W X + b) and/or ``"relu"`` (the paper: relu(W X + b)).
    ratio : float
        ``lam2 / lam1`` (math.inf: sparse only).
    target_crs : sequence of float, optional
        Instead of ``fracs``: CR(A+B) targets. Both responses then share the structure found
        by the linear search and differ only in the refit (see ``compress``).
    baseline_top1 : float, optional
        Top-1 of ``model`` on ``test_loader`` (evaluated when None).
    samples_per_image, max_samples, max_iter, tol
        As in :func:`lrsa.pipeline.compress`.
    progress : bool
        A tqdm bar over the runs.

    Returns
    -------
    list of dict
        One per (response, value): ``layer``, ``response``, ``frac`` (the one used),
        ``target_cr``, ``cr_a``, ``cr_b``, ``cr`` (fractions), ``rank``, ``nonzero_columns``,
        ``rel_error`` (relative error of the response it was fitted to, on the calibration
        samples), ``relu_error`` (:func:`relu_output_error`, the same measure for both
        responses), ``top1`` (%) and ``drop`` (baseline - top1, points).
    """
    if target_crs is None and fracs is None:
        raise ValueError("give fracs or target_crs")
    values = list(target_crs if target_crs is not None else fracs)
    base = evaluate(model, test_loader)["top1"] if baseline_top1 is None else baseline_top1
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    feats = collect_features(folded, [layer_name], calib, samples_per_image=samples_per_image,
                             max_samples=max_samples, seed=0)[layer_name]
    rows, bar = [], _bar(len(values) * len(responses), progress, f"{layer_name}")
    for response in responses:
        for v in values:
            plan = {layer_name: LayerPlan(ratio=ratio, target_cr=v) if target_crs is not None
                    else LayerPlan(frac=v, ratio=ratio)}
            comp, rep = compress(model, calib, plan=plan, response=response, fallback=None,
                                 samples_per_image=samples_per_image, max_samples=max_samples,
                                 max_iter=max_iter, tol=tol, progress=False)
            r = _row(rep, layer_name)
            W, b = _lowered(comp.get_submodule(layer_name))
            top1 = evaluate(comp, test_loader)["top1"]
            rows.append({"layer": layer_name, "response": response, "frac": r["frac"],
                         "target_cr": v if target_crs is not None else None,
                         "cr_a": r["cr_a"], "cr_b": r["cr_b"], "cr": r["cr"], "rank": r["rank"],
                         "nonzero_columns": r["nonzero_columns"], "rel_error": r["rel_error"],
                         "relu_error": relu_output_error(W, b, feats.X, feats.Z),
                         "top1": top1, "drop": base - top1})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(response=response, cr=f"{r['cr']:.2f}", top1=f"{top1:.1f}")
    if bar is not None:
        bar.close()
    return rows


def tradeoff_curves(rows, y="drop", layer=None):
    """``{response: (CR in %, y)}`` sorted by CR, from :func:`single_layer_tradeoff` rows,
    ready for :func:`lrsa.viz.plot_tradeoff`."""
    curves = {}
    for resp in dict.fromkeys(r["response"] for r in rows):
        pts = sorted((100 * r["cr"], r[y]) for r in rows
                     if r["response"] == resp and (layer is None or r["layer"] == layer))
        curves[f"{resp} response"] = ([p[0] for p in pts], [p[1] for p in pts])
    return curves


# --------------------------------------------------------------------------- Fig. 3
def strategy_curve(model, calib, test_loader, strategy, layer_names, frac, *, ratio=3.0,
                   fc_ratio=math.inf, response="relu", baseline_top1=None, workdir=None,
                   samples_per_image=10, max_samples=10_000, max_iter=200, tol=1e-3,
                   progress=True):
    """Accuracy after approximating the first k layers, k = 1 .. len(layer_names) (Fig. 3).

    Point k is ``compress`` with a plan covering ``layer_names[:k]``. ``compress``'s run key
    includes the plan, so a workdir does not resume across points by itself; each point
    gets its own workdir seeded with the finished layer files of point k - 1 (layer j's
    solution depends only on layers < j, with either strategy), so every point solves one
    new layer. ``tests/test_experiments.py`` checks the result against a fresh run.

    Parameters
    ----------
    model : nn.Module
        The original network (not modified).
    calib, test_loader
        As in :func:`single_layer_tradeoff`.
    strategy : str
        ``"asymmetric"`` (inputs from the network approximated so far) or ``"symmetric"``
        (inputs from the original network).
    layer_names : sequence of str
        Layers in forward order.
    frac : float
        ``lam1`` relative to each layer's gradient scale.
    ratio, fc_ratio : float
        ``lam2 / lam1`` for Conv2d and for Linear layers (default: FC sparse only, as the
        paper).
    response : str
        ``"relu"`` or ``"linear"``.
    baseline_top1 : float, optional
        Top-1 of ``model`` (evaluated when None).
    workdir : path, optional
        Keep the per-point runs there (a rerun with the same arguments resumes); None: a
        temporary folder, removed at the end.
    samples_per_image, max_samples, max_iter, tol
        As in :func:`lrsa.pipeline.compress`.
    progress : bool
        A tqdm bar over the points.

    Returns
    -------
    list of dict
        One per k: ``k``, ``layer`` (the k-th), ``strategy``, ``top1``, ``drop`` (points),
        ``cr`` and ``rel_error`` of layer k, ``cr_so_far`` (compressed / original size of
        the k layers).
    """
    names = list(layer_names)
    if not names:
        raise ValueError("layer_names is empty")
    base = evaluate(model, test_loader)["top1"] if baseline_top1 is None else baseline_top1
    settings = dict(strategy=strategy, frac=frac, ratio=ratio, fc_ratio=fc_ratio,
                    response=response, names=names, spi=samples_per_image,
                    max_samples=max_samples, max_iter=max_iter, tol=tol)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lrsa-strategy-")
        root = Path(tmp.name)
    else:
        root = Path(workdir) / f"{strategy}-{_key(_fingerprint(model), settings)}"
    rows, prev, bar = [], None, _bar(len(names), progress, f"{strategy} strategy")
    try:
        for k in range(1, len(names) + 1):
            run = root / f"k{k:03d}"
            if prev is not None and not (run / "run.json").exists():
                run.mkdir(parents=True, exist_ok=True)
                for f in prev.glob("layer_*.pt"):
                    shutil.copy2(f, run / f.name)
            plan = _plan_for(model, names[:k], frac, ratio, fc_ratio)
            comp, rep = compress(model, calib, plan=plan, response=response, strategy=strategy,
                                 samples_per_image=samples_per_image, max_samples=max_samples,
                                 max_iter=max_iter, tol=tol, workdir=run, fallback=None,
                                 progress=False)
            top1 = evaluate(comp, test_loader)["top1"]
            done = [r for r in rep.layers if r["name"] in plan]
            r = _row(rep, names[k - 1])
            rows.append({"k": k, "layer": names[k - 1], "strategy": strategy, "top1": top1,
                         "drop": base - top1, "cr": r["cr"], "rel_error": r["rel_error"],
                         "cr_so_far": sum(x["params_compressed"] for x in done)
                         / sum(x["params_original"] for x in done)})
            prev = run
            if bar is not None:
                bar.update(1)
                bar.set_postfix(layer=names[k - 1], top1=f"{top1:.1f}")
    finally:
        if bar is not None:
            bar.close()
        if tmp is not None:
            tmp.cleanup()
    return rows


# --------------------------------------------------------------------------- slider grid
def lambda_grid(model, layer_name, calib, fracs, ratios, *, response="relu",
                samples_per_image=10, max_samples=10_000, max_iter=200, tol=1e-3,
                cache=None, progress=True):
    """Solve one layer for every (frac, ratio) of a grid, for an instant slider explorer.

    The solves are exactly those of ``compress`` for ``plan={layer_name: LayerPlan(frac,
    ratio)}``, on features collected once.

    Parameters
    ----------
    model : nn.Module
        The original network (not modified).
    layer_name : str
        The Conv2d/Linear module.
    calib : list
        Calibration batches.
    fracs, ratios : sequence of float
        Grid axes (``ratio`` may be math.inf: sparse only).
    response : str
        ``"relu"`` or ``"linear"``.
    samples_per_image, max_samples, max_iter, tol
        As in :func:`lrsa.pipeline.compress`.
    cache : path, optional
        JSON file: read when it holds this very grid (same weights, layer and settings),
        else computed and written (atomically; an infinite ratio is written as Python's
        ``Infinity``).
    progress : bool
        A tqdm bar over the grid.

    Returns
    -------
    dict
        ``layer``, ``response``, ``n``, ``d``, ``fracs``, ``ratios``, ``key`` and ``points``:
        one dict per (frac, ratio) with ``frac``, ``ratio``, ``lam1``, ``lam2``, ``cr_a``,
        ``cr_b``, ``cr``, ``rank``, ``nonzero_columns``, ``rel_error`` (fitted response),
        ``relu_error``, ``column_norms`` (of A, length d) and ``singular_values`` (of B,
        descending), ``converged``.
    """
    from .pipeline import _bias, _group, _solve, _weight

    fracs = [float(f) for f in fracs]
    ratios = [float(r) for r in ratios]
    settings = dict(layer=layer_name, response=response, fracs=fracs, ratios=ratios,
                    spi=samples_per_image, max_samples=max_samples, max_iter=max_iter,
                    tol=tol, n_calib=sum(len(b) for b in calib))
    key = _key(_fingerprint(model), settings)
    if cache is not None and Path(cache).is_file():
        try:
            got = json.loads(Path(cache).read_text())
            if got.get("key") == key:
                return got
        except (OSError, ValueError):
            pass
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    mod = folded.get_submodule(layer_name)
    feats = collect_features(folded, [layer_name], calib, samples_per_image=samples_per_image,
                             max_samples=max_samples, seed=0)[layer_name]
    W, b = _weight(mod).to(feats.X), _bias(mod).to(feats.X)
    n, d = W.shape
    Y = feats.targets(response)
    points, bar = [], _bar(len(fracs) * len(ratios), progress, f"lambda grid {layer_name}")
    for ratio in ratios:
        for frac in fracs:
            sol, extra = _solve(feats.X, feats.Z, W, b, LayerPlan(frac=frac, ratio=ratio),
                                response, _group(mod), "lrsa", max_iter, tol)
            cr_a = extra["kept_channels"] * _group(mod) / d
            cr_b = sol.rank * (n + d) / (n * d)
            out = sol.W @ feats.X + b[:, None]
            out = torch.relu(out) if response == "relu" else out
            rel = float(torch.linalg.norm(Y - out) / max(float(torch.linalg.norm(Y)), 1e-30))
            sv = torch.linalg.svdvals(sol.B.double()) if sol.rank else torch.zeros(0)
            points.append({
                "frac": frac, "ratio": ratio, "lam1": sol.lam1, "lam2": sol.lam2,
                "cr_a": cr_a, "cr_b": cr_b, "cr": cr_a + cr_b, "rank": sol.rank,
                "nonzero_columns": sol.nonzero_columns, "rel_error": rel,
                "relu_error": relu_output_error(sol.W, b, feats.X, feats.Z),
                "column_norms": [float(f"{v:.6g}") for v in
                                 torch.linalg.vector_norm(sol.A, dim=0).tolist()],
                "singular_values": [float(f"{v:.6g}") for v in sv[:sol.rank].tolist()],
                "converged": bool(sol.converged)})
            if bar is not None:
                bar.update(1)
                bar.set_postfix(frac=frac, ratio=ratio, cr=f"{cr_a + cr_b:.2f}")
    if bar is not None:
        bar.close()
    grid = {"key": key, "layer": layer_name, "response": response, "n": n, "d": d,
            "fracs": fracs, "ratios": ratios,
            "points": points}
    if cache is not None:
        _atomic_write_text(cache, json.dumps(grid))
    return grid


# --------------------------------------------------------------------------- non-convexity
def objective_along_segment(X, Z, bias, W0, W1, steps=41):
    r"""The data term :math:`f(W) = \frac1{2N}\|Y - r(WX + b)\|_F^2` along
    :math:`W(s) = (1 - s) W_0 + s W_1`, s in [0, 1], for both responses.

    Parameters
    ----------
    X : (d, N) lowered inputs; Z : (n, N) pre-activations of the original layer.
    bias : (n,)
    W0, W1 : (n, d) end points.
    steps : number of points.

    Returns
    -------
    dict
        ``s`` (list), ``linear`` and ``relu`` (f along the segment, targets Z and relu(Z)),
        and per response the largest excess over the chord,
        ``max_gap_linear`` / ``max_gap_relu``: :math:`\max_s f(W(s)) - ((1-s) f(W_0) + s
        f(W_1))`; positive means not convex on this segment.
    """
    from .solver import LayerProblem

    out = {"s": torch.linspace(0, 1, steps).tolist()}
    for response, Y in (("linear", Z), ("relu", torch.relu(Z))):
        prob = LayerProblem(X, Y, bias, response)
        f = [prob.f_and_grad((1 - s) * W0 + s * W1, grad=False)[0] for s in out["s"]]
        chord = [(1 - s) * f[0] + s * f[-1] for s in out["s"]]
        out[response] = f
        out[f"max_gap_{response}"] = max(a - c for a, c in zip(f, chord))
    return out


# --------------------------------------------------------------------------- tables
def paper_table_markdown(table, title="paper"):
    """A markdown table of a paper table dict ``layer -> (CR(A), CR(B), CR(A+B))`` in %."""
    lines = [f"| layer ({title}) | CR(A) % | CR(B) % | CR(A+B) % |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {a:.1f} | {b:.1f} | {c:.1f} |" for k, (a, b, c) in table.items()]
    return "\n".join(lines)


def benchmark_comparison(path=None):
    """Ours beside the paper from the VGG-16 benchmark's JSON
    (``benchmarks/results/vgg16_cifar10.json`` by default), or None when it is missing.

    Returns
    -------
    (markdown str, dict of the numbers used) or None
    """
    from .report import PAPER_VGG16

    path = Path(path) if path is not None else _REPO / "benchmarks" / "results" / \
        "vgg16_cifar10.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None

    def fmt(v, spec, unit=""):
        return "-" if v is None else f"{v:{spec}}{unit}"

    nums = {"params_ratio": data.get("params_ratio"), "speedup_b128": data.get("speedup_b128"),
            "speedup_b1": data.get("speedup_b1"), "top1_baseline": data.get("top1_baseline"),
            "top1_compressed": data.get("top1_compressed"),
            "top1_finetuned": data.get("top1_finetuned"), "top1_drop": data.get("top1_drop")}
    md = "\n".join([
        "| | ours (benchmark) | paper |", "|---|---:|---:|",
        f"| parameters, original / compressed | {fmt(nums['params_ratio'], '.2f', 'x')} | "
        f"{PAPER_VGG16['params_ratio']:.2f}x |",
        f"| CPU speed-up, batch 128 | {fmt(nums['speedup_b128'], '.2f', 'x')} | "
        f"{PAPER_VGG16['speedup']:.1f}x |",
        f"| CPU speed-up, batch 1 | {fmt(nums['speedup_b1'], '.2f', 'x')} | - |",
        f"| top-1 baseline | {fmt(nums['top1_baseline'], '.2f', '%')} | 92.05% |",
        f"| top-1 compressed, before fine-tuning | {fmt(nums['top1_compressed'], '.2f', '%')}"
        " | - |",
        f"| top-1 compressed, fine-tuned | {fmt(nums['top1_finetuned'], '.2f', '%')} | - |",
        f"| top-1 drop | {fmt(nums['top1_drop'], '.2f', ' pt')} | "
        f"{PAPER_VGG16['accuracy_drop']:.2f} pt |"])
    return md, nums
