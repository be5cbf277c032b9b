r"""The computations behind notebooks 08 (where the time goes) and 09 (fine-tuning and
distillation): small, tested functions the notebooks call, so that a notebook holds the
argument and the figures, and the arithmetic lives here.

Time (notebook 08)
    :func:`amdahl_bound`, :func:`amdahl_speedup`: what the stages a plan leaves unchanged
    allow; :func:`stage_times`: every stage of a network timed alone on an input of its
    shape; :func:`time_share_table`: the same from a saved ``benchmarks/time_shares.py``
    result; :func:`layer_macs`, :func:`report_macs`: multiply-adds per layer, dense or as a
    compression report stores it; :func:`factored_conv`, :func:`rank_sweep`: a k x k conv to
    rank r followed by a 1 x 1 conv, timed against the dense conv.

Fine-tuning (notebook 09)
    :func:`soft_term_gradient_norms`: the distillation soft term's gradient, through
    :class:`lrsa.train.Distillation` itself, with and without its :math:`T^2`;
    :func:`grad_norm_trace`: the first steps of a fine-tuning with their gradient norms,
    also when they diverge; :func:`recovery_curves`: top-1 per epoch of fine-tuning for
    several compressed networks from the same start; :func:`benchmark_recovery`: before and
    after (every epoch where recorded) from a saved benchmark result.

Transformers (notebook 10)
    :func:`split_errors`, :func:`plot_split_errors`: one layer's held-out error as its size
    is split between A and B; :func:`plot_transformer_benchmark`: the saved benchmark.

Plots take ``ax=None`` and return the Axes. :func:`saved_results` and
:func:`saved_correctness` (from :mod:`lrsa.course.resources`) read the project's saved
measurements, from a clone or an installed wheel; everything else takes what it works on
as arguments.
"""

from __future__ import annotations

import copy
import math
import statistics
import time

import numpy as np
import torch
from torch import nn

from .resources import saved_correctness, saved_results

__all__ = ["saved_results", "saved_correctness", "amdahl_bound", "amdahl_speedup",
           "benchmark_recovery", "digits_fine_tuning_study", "equal_size_runs",
           "factored_conv", "heldout_splits", "plot_equal_size_top1", "plot_frontier",
           "plot_heldout_splits",
           "grad_norm_trace", "layer_macs", "plot_grad_norms", "plot_macs_vs_time",
           "plot_rank_sweep", "plot_recovery", "plot_time_shares", "rank_sweep",
           "recovery_curves", "report_macs", "soft_term_gradient_norms", "stage_times",
           "time_share_table"]


def plot_intervals(intervals, *, ax=None, xlabel="top-1 (%)", title=None, reference=None):
    """Means with their intervals, one row per entry (``intervals``: label ->
    :class:`lrsa.evaluation.Interval` or its dict); ``reference``: a vertical line (e.g. the
    control's mean, or 0 for differences). Returns the Axes."""
    ax = _ax(ax, figsize=(7, 0.45 * len(intervals) + 1.2))
    for y, iv in enumerate(intervals.values()):
        iv = iv if isinstance(iv, dict) else iv.to_dict()
        ax.errorbar(iv["mean"], y, xerr=[[iv["mean"] - iv["low"]], [iv["high"] - iv["mean"]]],
                    fmt="o", capsize=4, color="C0")
    ax.set_yticks(range(len(intervals)), list(intervals))
    ax.invert_yaxis()
    if reference is not None:
        ax.axvline(reference, color="0.5", lw=1, ls="--")
    ax.set(xlabel=xlabel)
    if title:
        ax.set_title(title)
    return ax


# ----------------------------------------------------------------- Amdahl

def amdahl_speedup(unchanged_share, factored_speedup):
    r"""Whole-model speed-up when the stages holding ``1 - unchanged_share`` of the time run
    ``factored_speedup`` times faster and the rest as before (Amdahl's law):

    .. math:: S = \frac{1}{p + (1 - p)/s}.

    Parameters
    ----------
    unchanged_share : float in (0, 1]
        p, the share of the original's time in stages the plan leaves as they are.
    factored_speedup : float > 0
        s, how much faster the changed stages run (``math.inf``: they take no time).

    Returns
    -------
    float
    """
    p, s = float(unchanged_share), float(factored_speedup)
    if not 0 < p <= 1:
        raise ValueError(f"unchanged_share must be in (0, 1], got {p}")
    if not s > 0:
        raise ValueError(f"factored_speedup must be > 0, got {s}")
    return 1.0 / (p + (1.0 - p) / s)


def amdahl_bound(unchanged_share):
    r"""The most a plan can gain: :math:`1/p`, the speed-up with the changed stages free
    (:func:`amdahl_speedup` at :math:`s = \infty`)."""
    return amdahl_speedup(unchanged_share, math.inf)


def time_share_table(run, batch, factored=None):
    """Per-stage times of one run of ``benchmarks/time_shares.py`` (its JSON's
    ``runs[<work folder>]``) at one batch size.

    Parameters
    ----------
    run : dict
        One entry of the saved JSON's ``"runs"``: ``factored`` (stage names) and per batch
        ``"b<B>"`` the ``original_ms`` and ``compressed_ms`` of every stage.
    batch : int
    factored : iterable of str, optional
        Stages the plan changes (default: the run's own list).

    Returns
    -------
    dict
        ``stages`` (names, forward order), ``original_ms``, ``compressed_ms`` (arrays),
        ``factored`` (bool array), ``unchanged_share`` (the original's time in stages not
        factored, over its total), ``bound`` (:func:`amdahl_bound`) and
        ``stage_sum_speedup`` (summed original stage times over summed compressed ones).
    """
    data = run[f"b{int(batch)}"]
    stages = list(data["original_ms"])
    changed = set(run["factored"] if factored is None else factored)
    orig = np.array([data["original_ms"][s] for s in stages], dtype=float)
    comp = np.array([data["compressed_ms"][s] for s in stages], dtype=float)
    mask = np.array([s in changed for s in stages])
    share = float(orig[~mask].sum() / orig.sum())
    return {"stages": stages, "original_ms": orig, "compressed_ms": comp, "factored": mask,
            "unchanged_share": share, "bound": amdahl_bound(share),
            "stage_sum_speedup": float(orig.sum() / comp.sum())}


def _stages(model):
    """The stages of a network: the direct children of its nn.Sequential containers (VGG's
    and the digits CNN's ``features.{i}`` / ``classifier.{i}``), in forward order."""
    seqs = [name for name, m in model.named_modules() if isinstance(m, nn.Sequential)]
    out = []
    for name, m in model.named_modules():
        parent = name.rpartition(".")[0]
        if name and parent in seqs and not isinstance(m, nn.Sequential):
            out.append((name, m))
    if not out:
        raise ValueError("stage_times needs a model built from nn.Sequential containers")
    return out


def stage_times(model, input_shape, *, repeats=5, warmup=1):
    """Every stage of ``model`` (see below) timed alone, on the input it sees in a forward
    pass of a random input of ``input_shape``: median seconds over ``repeats``.

    A stage is a direct child of one of the model's nn.Sequential containers; what the
    model's ``forward`` does between them (a flatten) is not timed. The times of separate
    stages add up to about the whole forward's, not exactly (caches, call overheads).

    Returns
    -------
    dict name -> median seconds, in forward order.
    """
    stages = _stages(model)
    inputs, hooks = {}, []
    for name, m in stages:
        hooks.append(m.register_forward_pre_hook(
            lambda mod, args, name=name: inputs.setdefault(name, args[0].detach().clone())))
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.randn(*input_shape))
        for h in hooks:
            h.remove()
        hooks = []
        out = {}
        with torch.inference_mode():
            for name, m in stages:
                x = inputs[name]
                for _ in range(warmup):
                    m(x)
                times = []
                for _ in range(repeats):
                    t0 = time.perf_counter()
                    m(x)
                    times.append(time.perf_counter() - t0)
                out[name] = statistics.median(times)
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    return out


# ----------------------------------------------------------------- multiply-adds

def layer_macs(model, input_shape=(1, 3, 32, 32)):
    """Multiply-adds per image of every Conv2d and Linear layer of a dense ``model``
    (:func:`lrsa.report.layer_macs`, one traced input), and each layer's output positions.

    Returns
    -------
    dict name -> {"macs": int, "positions": int, "n": int, "d": int}
        ``n`` x ``d`` the lowered weight (outputs x c k_h k_w); MACs = positions n d.
    """
    from ..report import layer_macs as traced

    found = {}
    for name, macs in traced(model, (1, *input_shape[1:])).items():
        weight = model.get_submodule(name).weight
        n, d = weight.shape[0], weight[0].numel()
        found[name] = {"macs": macs, "positions": macs // (n * d), "n": n, "d": d}
    return found


def report_macs(row, positions):
    r"""Multiply-adds per image of one layer as a compression report row stores it:
    ``positions`` x (:math:`n\,d` dense, or :math:`n\cdot\mathrm{cols}(A) + r(d + n)`
    factored: the sparse part over its kept columns, then :math:`V` and :math:`U`).

    Parameters
    ----------
    row : mapping with ``kind``, ``n``, ``d``, ``rank``, ``nonzero_columns``
        A :class:`lrsa.pipeline.results.LayerReport` or its saved dict.
    positions : int
        Output positions per image (1 for a Linear layer).
    """
    n, d = int(row["n"]), int(row["d"])
    if row["kind"] != "factored":
        return positions * n * d
    return positions * (n * int(row["nonzero_columns"]) + int(row["rank"]) * (d + n))


# ----------------------------------------------------------------- rank steps

def factored_conv(in_channels, out_channels, rank, kernel_size=3, *, seed=0):
    """A k x k convolution of ``in_channels`` to ``rank`` filters followed by a 1 x 1
    convolution to ``out_channels`` (B = U V, no sparse part), as
    :class:`lrsa.layers.SparseLowRankConv2d`, with its dense original (random weights; time
    does not depend on them).

    Returns
    -------
    (dense nn.Conv2d, factored SparseLowRankConv2d)
    """
    from ..layers import SparseLowRankConv2d

    g = torch.Generator().manual_seed(seed)
    dense = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
    d = in_channels * kernel_size ** 2
    U = torch.randn(out_channels, rank, generator=g)
    V = torch.randn(rank, d, generator=g)
    return dense, SparseLowRankConv2d.from_factors(dense, torch.zeros(out_channels, d), U, V)


def rank_sweep(in_channels, out_channels, size, ranks, *, batch=4, repeats=5,
               kernel_size=3, channels_last=False, threads=None):
    """Dense against factored (:func:`factored_conv`) at each rank, timed interleaved with
    :func:`lrsa.timing.compare_latency` on a ``batch`` x ``in_channels`` x ``size`` x
    ``size`` input.

    Returns
    -------
    dict
        ``ranks``, ``dense_ms``, ``factored_ms``, ``speedup`` (median over median, per
        rank) and ``mac_speedup`` (dense MACs over factored MACs, what the multiply-adds
        predict: :math:`n c k^2 / (r(c k^2 + n))`).
    """
    from ..layers import estimate_macs
    from ..timing import compare_latency

    shape = (batch, in_channels, size, size)
    out = {"ranks": [], "dense_ms": [], "factored_ms": [], "speedup": [], "mac_speedup": []}
    for r in ranks:
        dense, fact = factored_conv(in_channels, out_channels, int(r), kernel_size)
        t = compare_latency(dense, fact, shape, repeats=repeats, channels_last=channels_last,
                            warmup=1, threads=threads)
        out["ranks"].append(int(r))
        out["dense_ms"].append(1e3 * t["original_median_s"])
        out["factored_ms"].append(1e3 * t["compressed_median_s"])
        out["speedup"].append(t["speedup"])
        out["mac_speedup"].append(estimate_macs(dense, shape) / estimate_macs(fact, shape))
    return out


# ----------------------------------------------------------------- distillation

def soft_term_gradient_norms(student_logits, teacher_logits, temperatures):
    r"""Norm of the gradient, with respect to the student's logits, of the soft term of
    :class:`lrsa.train.Distillation` (``alpha=1``, so the loss is that term alone), for each
    temperature: with the :math:`T^2` factor the class uses, and without it (its loss divided
    by :math:`T^2`).

    The teacher is an ``nn.Identity`` fed the teacher's logits as its input, so the loss and
    its gradient are the library's own.

    Returns
    -------
    dict
        ``temperatures``, ``with_t2`` and ``without_t2`` (Frobenius norms, floats).
    """
    from ..train import Distillation

    s0 = torch.as_tensor(student_logits, dtype=torch.float64)
    t = torch.as_tensor(teacher_logits, dtype=torch.float64)
    y = torch.zeros(s0.shape[0], dtype=torch.long)
    out = {"temperatures": [float(T) for T in temperatures], "with_t2": [], "without_t2": []}
    for T in out["temperatures"]:
        crit = Distillation(nn.Identity(), alpha=1.0, temperature=T)
        s = s0.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(crit(s, t, y), s)
        out["with_t2"].append(float(g.norm()))
        out["without_t2"].append(float(g.norm()) / T ** 2)
    return out


def grad_norm_trace(student, teacher, batches, *, lr, max_grad_norm=None, temperature=4.0,
                    alpha=0.5, seed=0):
    r"""The first steps of :func:`lrsa.finetune` with logit distillation, one step per batch,
    recording the loss and the gradients' total norm at every step, and going on recording
    when the loss stops being finite (where ``finetune`` raises).

    Runs :func:`lrsa.train.train` (SGD, momentum 0.9, Nesterov, weight decay 5e-4, cosine
    schedule over these steps) with a :class:`lrsa.train.Distillation` criterion and the
    structure kept, as ``finetune`` does; ``max_grad_norm=None`` caps nothing.

    Parameters
    ----------
    student : nn.Module
        Fine-tuned in place (pass a copy).
    teacher : nn.Module
    batches : list of (inputs, labels)
    lr, max_grad_norm, temperature, alpha, seed
        As in :func:`lrsa.finetune`.

    Returns
    -------
    dict
        ``loss`` per step (the last one not finite where the run diverged); ``grad_norm``
        per step taken, the norm before any cap (if a capped run diverges, the norms after
        the cap: train returns no history then); ``applied_norm``, the norm of the
        gradient each step applied (after the cap); ``diverged_at`` (the step whose loss
        was not finite, or None) and ``capped`` (steps whose norm exceeded the cap).
    """
    from ..layers import keep_structure_hook
    from ..train import Distillation, train

    losses, applied = [], []
    crit = Distillation(teacher, student, alpha=alpha, temperature=temperature)
    keep = keep_structure_hook(student)

    def criterion(logits, x, y):
        loss = crit(logits, x, y)
        losses.append(float(loss.detach()))
        return loss

    def hook(model):
        # after the step the gradients are still there, capped in place if they were
        applied.append(math.sqrt(sum(float(p.grad.double().pow(2).sum())
                                     for p in model.parameters() if p.grad is not None)))
        keep(model)

    hist = None
    try:
        # an infinite cap rescales nothing, and makes train record every step's norm
        hist = train(student, list(batches), epochs=1, lr=lr, seed=seed, criterion=criterion,
                     param_hook=hook,
                     max_grad_norm=math.inf if max_grad_norm is None else max_grad_norm)
    except ValueError as exc:
        if "non-finite" not in str(exc):
            raise
    finally:
        crit.close()
    # train returns no history when it stops at a non-finite loss; without a cap the norms
    # of the steps taken are the ones recorded after each step (nothing rescaled them)
    cap = math.inf if max_grad_norm is None else float(max_grad_norm)
    norms = list(hist.grad_norm) if hist is not None else applied
    diverged = next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)
    return {"loss": losses, "grad_norm": norms, "applied_norm": applied,
            "diverged_at": diverged, "capped": [i for i, g in enumerate(norms) if g > cap]}


# ----------------------------------------------------------------- recovery

def recovery_curves(models, loader, test, *, teacher, epochs, lr, evaluate_every=1,
                    max_grad_norm=10.0, seed=0):
    """Top-1 before and after every epoch of :func:`lrsa.finetune` (logit distillation from
    ``teacher``), for several compressed networks from the same start.

    Parameters
    ----------
    models : dict name -> nn.Module
        Fine-tuned copies are made; the originals are left as they are.
    loader : training batches (with ``len``), e.g. :func:`lrsa.data.make_loader`.
    test : ``(inputs, labels)`` batches for :func:`lrsa.train.evaluate`.
    teacher : nn.Module
    epochs : int
    lr, max_grad_norm, seed : as in :func:`lrsa.finetune`.

    Returns
    -------
    dict name -> list of top-1 (%), ``epochs + 1`` values (before, after epoch 1, ...).
    """
    from ..pipeline import finetune
    from ..train import evaluate

    curves = {}
    for name, model in models.items():
        m = copy.deepcopy(model)
        top1 = [evaluate(m, test)["top1"]]

        def after(epoch, stats, m=m, top1=top1):
            top1.append(evaluate(m, test)["top1"])
            m.train()

        finetune(m, loader, epochs=epochs, lr=lr, teacher=teacher, seed=seed,
                 max_grad_norm=max_grad_norm, on_epoch_end=after)
        curves[name] = top1
    return curves


def digits_fine_tuning_study(setup, *, size=0.3, epochs=4, lr=1e-3, max_grad_norm=10.0,
                             blowup_lr=1e-2, blowup_steps=10, seed=0):
    """Notebook 09's digits experiment, in one call (minutes on 2 cores): the digits CNN
    compressed by lrsa at ``Budget(size=size)``, truncated SVD and reduced-rank regression
    at the same per-layer sizes (:func:`lrsa.compress_like`), each fine-tuned from its start
    (:func:`recovery_curves`, logit distillation from the original); then the first
    ``blowup_steps`` steps from lrsa's start at ``blowup_lr`` without and with the cap
    (:func:`grad_norm_trace`).

    Parameters
    ----------
    setup : :class:`lrsa.course.setups.Setup`
        :func:`lrsa.course.setups.digits_setup` (its model, calibration and test data).

    Returns
    -------
    dict, JSON-able: the settings, ``code_version``, ``baseline_top1``, ``curves``
    (:func:`recovery_curves`), ``traces`` (name -> :func:`grad_norm_trace` result) and
    ``seconds``.
    """
    from ..data import load_digits_images, make_loader
    from ..pipeline import Budget, compress, compress_like
    from ..utils import code_version

    start = time.perf_counter()
    lrsa_model, report = compress(setup.model, setup.calib, Budget(size=size), progress=False)
    svd, _ = compress_like(setup.model, setup.calib, report, method="svd", progress=False)
    rrr, _ = compress_like(setup.model, setup.calib, report, method="rrr", response="linear",
                           progress=False)
    d = load_digits_images()
    loader = make_loader(d.x_train, d.y_train, 64, train=True, mean=None, std=None, pad=1,
                         seed=seed)
    curves = recovery_curves({"lrsa": lrsa_model, "truncated SVD": svd,
                              "reduced-rank regression": rrr}, loader, setup.test,
                             teacher=setup.model, epochs=epochs, lr=lr,
                             max_grad_norm=max_grad_norm, seed=seed)
    batches = [b for _, b in zip(range(blowup_steps), loader)]
    traces = {f"lr {blowup_lr:g}, {'cap ' + format(cap, 'g') if cap else 'no cap'}":
              grad_norm_trace(copy.deepcopy(lrsa_model), setup.model, batches, lr=blowup_lr,
                              max_grad_norm=cap, seed=seed)
              for cap in (None, max_grad_norm)}
    for tr in traces.values():  # JSON has no NaN: a non-finite loss is written as null
        tr["loss"] = [v if math.isfinite(v) else None for v in tr["loss"]]
    return {"code_version": code_version(), "network": setup.name,
            "baseline_top1": setup.baseline_top1, "size": size, "epochs": epochs, "lr": lr,
            "max_grad_norm": max_grad_norm, "distillation": "logits", "blowup_lr": blowup_lr,
            "train_images": len(d.x_train), "stored_parameters": {
                "lrsa": sum(r["params_compressed"] for r in report.layers),
                "original": sum(r["params_original"] for r in report.layers)},
            "curves": curves, "traces": traces, "seconds": time.perf_counter() - start}


def equal_size_runs(model, calibration_data, test, budget, **kwargs):
    """lrsa at ``budget``, then truncated SVD and reduced-rank regression at exactly the
    per-layer stored sizes lrsa chose (:func:`lrsa.compress_like`): notebook 07's fair
    comparison, on the same calibration data, with no fine-tuning.

    Returns
    -------
    dict method ("lrsa", "svd", "rrr") -> {"model", "layers" (report rows as dicts),
    "params" (stored weights of the approximated layers), "top1"}
    """
    from ..pipeline import compress, compress_like
    from ..train import evaluate

    kwargs.setdefault("progress", False)
    lrsa_model, report = compress(model, calibration_data, budget, **kwargs)
    runs = {"lrsa": (lrsa_model, report)}
    runs["svd"] = compress_like(model, calibration_data, report, method="svd", **kwargs)
    runs["rrr"] = compress_like(model, calibration_data, report, method="rrr",
                                response="linear", **kwargs)
    out = {}
    for method, (net, rep) in runs.items():
        rows = rep.to_dict()["layers"]
        out[method] = {"model": net, "layers": rows, "top1": evaluate(net, test)["top1"],
                       "params": sum(r["params_compressed"] for r in rows)}
    return out


def heldout_splits(layers):
    """Per solved layer, B alone against the best split with a sparse part, on held-out
    error (the ``heldout`` field of lrsa's report rows: one ``[kept channels, rank, error]``
    per split tried at the layer's stored size).

    Returns
    -------
    list of dict: ``name``, ``b_only`` (error of B alone, None if not tried), ``with_a``
    (lowest error among splits keeping channels, None if none tried), ``kept`` (channels of
    the split lrsa chose: its lowest error).
    """
    out = []
    for row in layers:
        tried = row.get("heldout")
        if not tried:
            continue
        b_only = [e for kept, _, e in tried if kept == 0]
        with_a = [e for kept, _, e in tried if kept > 0]
        best = min(tried, key=lambda t: t[2])
        out.append({"name": row["name"], "b_only": min(b_only) if b_only else None,
                    "with_a": min(with_a) if with_a else None, "kept": best[0]})
    return out


def benchmark_recovery(result):
    """Top-1 before fine-tuning and after it, per method, from a saved
    ``benchmarks/vgg16_cifar10.py`` or ``benchmarks/nin_cifar10.py`` result (its JSON).

    Returns
    -------
    dict label -> list of top-1 (%), for those of "lrsa", "truncated SVD", "reduced-rank
    regression" and "uncompressed (control)" that the run has: the value before fine-tuning,
    then the value after every epoch where the run recorded them (its ``curve_<key>``), else
    the final value alone.
    """
    keys = {"lrsa": ("top1_compressed", "finetuned"),
            "truncated SVD": ("top1_svd", "svd_finetuned"),
            "reduced-rank regression": ("top1_rrr", "rrr_finetuned"),
            "uncompressed (control)": ("top1_baseline", "baseline_finetuned")}

    def top1s(before, key):
        after = ([e["top1"] for e in result[f"curve_{key}"]] if f"curve_{key}" in result
                 else [result[f"top1_{key}"]])
        return [float(v) for v in (result[before], *after)]
    return {label: top1s(before, key) for label, (before, key) in keys.items()
            if f"top1_{key}" in result}


# ----------------------------------------------------------------- plots

def _ax(ax, figsize=(5.5, 3.6)):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=figsize, constrained_layout=True)
    return ax


def plot_macs_vs_time(macs, ms, labels=None, *, ax=None, title=None, **scatter):
    """Measured time against multiply-adds, one point per layer, log-log, with the line
    "time proportional to MACs" through the layers' total (where every layer would sit if
    time were MACs times one rate).

    Returns the Axes.
    """
    ax = _ax(ax)
    macs, ms = np.asarray(macs, dtype=float), np.asarray(ms, dtype=float)
    pts = ax.scatter(macs, ms, zorder=3, **scatter)
    rate = ms.sum() / macs.sum()
    xs = np.array([macs.min() / 1.5, macs.max() * 1.5])
    ax.plot(xs, rate * xs, ls="--", lw=1, color=pts.get_facecolor()[0],
            label=f"{scatter.get('label', 'time')} if proportional to MACs")
    for x, y, s in zip(macs, ms, labels or []):
        ax.annotate(s, (x, y), fontsize=7, xytext=(3, 2), textcoords="offset points")
    ax.set(xscale="log", yscale="log", xlabel="multiply-adds per image", ylabel="time (ms)")
    if title:
        ax.set_title(title)
    return ax


def plot_rank_sweep(ranks, speedup, mac_speedup=None, *, ax=None, label="measured",
                    marker="o", step=16, **style):
    """Speed-up of a factored convolution over the dense one against its rank, with the
    multiply-adds' prediction and dotted lines at multiples of ``step``.

    Returns the Axes.
    """
    ax = _ax(ax)
    ranks = np.asarray(ranks)
    ax.plot(ranks, speedup, marker=marker, label=label, **style)
    if mac_speedup is not None:
        ax.plot(ranks, mac_speedup, color="0.5", ls="--", lw=1, label="MACs predict")
    for k in range(step, int(ranks.max()) + 1, step):
        ax.axvline(k + 0.5, color="0.85", lw=0.8, zorder=0)
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set(xlabel="rank r", ylabel="speed-up over the dense conv")
    return ax


def plot_time_shares(table, labels=None, *, ax=None, title=None):
    """The original's time per stage (ms), bars coloured by whether the plan changes the
    stage, with the unchanged share and the Amdahl bound in the title.

    ``table`` is :func:`time_share_table`'s result. Returns the Axes.
    """
    ax = _ax(ax, figsize=(9, 3.4))
    x = np.arange(len(table["stages"]))
    colors = np.where(table["factored"], "C0", "C1")
    ax.bar(x, table["original_ms"], color=colors)
    ax.set_xticks(x, labels or table["stages"], rotation=90, fontsize=7)
    ax.set_ylabel("original's time (ms)")
    from matplotlib.patches import Patch

    ax.legend(handles=[Patch(color="C0", label="changed by the plan"),
                       Patch(color="C1", label="left as it was")], fontsize=8)
    ax.set_title(title or f"unchanged share {100 * table['unchanged_share']:.0f} %: at most "
                          f"{table['bound']:.2f}x")
    return ax


def plot_recovery(curves, *, x=None, ax=None, xlabel="epochs of fine-tuning", title=None):
    """Top-1 against fine-tuning progress, one line per method (``curves``: name -> list of
    top-1, the first value before fine-tuning; ``x``: where each value sits on the x axis,
    default 0, 1, 2, ...). Returns the Axes."""
    ax = _ax(ax)
    for name, top1 in curves.items():
        ax.plot(range(len(top1)) if x is None else x, top1, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel="top-1 (%)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_heldout_splits(splits, labels=None, *, ax=None, title=None):
    """:func:`heldout_splits` as paired bars per layer: the held-out relative error of B
    alone and of the best split keeping a sparse part (hatched where lrsa chose it).

    Returns the Axes.
    """
    ax = _ax(ax, figsize=(7, 3.4))
    x = np.arange(len(splits))
    names = [labels.get(s["name"], s["name"]) if labels else s["name"] for s in splits]
    nan = float("nan")
    b = [s["b_only"] if s["b_only"] is not None else nan for s in splits]
    a = [s["with_a"] if s["with_a"] is not None else nan for s in splits]
    ax.bar(x - 0.2, b, 0.4, label="B alone (low rank)", color="C0")
    bars = ax.bar(x + 0.2, a, 0.4, label="best A + B (kept channels)", color="C1")
    for bar, s in zip(bars, splits):
        if s["kept"] > 0:
            bar.set_hatch("//")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="held-out relative error", title=title)
    ax.legend(fontsize=8, title="hatched: lrsa's choice", title_fontsize=8)
    return ax


def plot_equal_size_top1(rows, size, spread, *, original=None, ax=None):
    """Top-1 of lrsa, truncated SVD and reduced-rank regression at one whole-network
    ``size`` and ``spread`` (rows of ``benchmarks/results/frontier.json``), bars with their
    values; the original's top-1 as a line.

    Returns the Axes.
    """
    ax = _ax(ax, figsize=(4.5, 3.4))
    names = {"lrsa": "lrsa", "svd": "truncated SVD", "rrr": "reduced-rank\nregression"}
    pick = {r["method"]: r for r in rows if r["size"] == size and r["spread"] == spread}
    top1 = [pick[m]["top1"] for m in names]
    bars = ax.bar(range(3), top1, color=["C3", "C0", "C2"])
    ax.bar_label(bars, fmt="%.2f", fontsize=8)
    if original is not None:
        ax.axhline(original, color="k", lw=1, ls="--", label=f"original {original:.2f}")
        ax.legend(fontsize=8, loc="lower right")
    shown = top1 + ([original] if original is not None else [])
    ax.set_ylim(min(shown) - 4, max(shown) + 1.5)
    ax.set_xticks(range(3), list(names.values()), fontsize=8)
    ax.set(ylabel="top-1 (%) before fine-tuning",
           title=f"{pick['lrsa']['ratio']:.1f}x fewer weights, spread {spread!r}")
    return ax


def plot_frontier(rows, *, x="ratio", ax=None):
    """Top-1 before fine-tuning against ``x`` ("ratio": times fewer stored weights, one line
    per method and spread; or "speedup_b128": one point per network, labelled with its size)
    from the rows of ``frontier.json`` (rows without ``x`` are left out).

    Returns the Axes.
    """
    ax = _ax(ax, figsize=(6, 3.8))
    colors = {"lrsa": "C3", "svd": "C0", "rrr": "C2"}
    names = {"lrsa": "lrsa", "svd": "truncated SVD", "rrr": "reduced-rank regression"}
    for spread, style in (("energy", "-"), ("sqrt", ":")):
        for method, color in colors.items():
            pts = sorted((r[x], r["top1"], r["ratio"]) for r in rows if r["method"] == method
                         and r["spread"] == spread and r.get(x) is not None)
            if not pts:
                continue
            xs, ys, _ = zip(*pts)
            ax.plot(xs, ys, ls=style if x == "ratio" else "none", marker="o", color=color,
                    label=f"{names[method]}, {spread}")
            if x != "ratio":  # the sizes, since the points are not in size order
                for px, py, ratio in pts:
                    ax.annotate(f"{ratio:.0f}x", (px, py), fontsize=7, color=color,
                                xytext=(4, 2), textcoords="offset points")
    label = {"ratio": "times fewer stored weights",
             "speedup_b128": "measured speed-up, batch 128"}.get(x, x)
    ax.set(xlabel=label, ylabel="top-1 (%) before fine-tuning")
    ax.legend(fontsize=7)
    return ax


def plot_grad_norms(traces, cap=None, *, ax=None):
    """Gradient norm per step, log scale, one line per trace (name -> :func:`grad_norm_trace`
    result), a cross where a run's loss stopped being finite. Returns the Axes."""
    ax = _ax(ax)
    for name, tr in traces.items():
        line, = ax.plot(range(1, len(tr["grad_norm"]) + 1), tr["grad_norm"], marker="o",
                        label=name)
        if tr["diverged_at"] is not None:  # x in data units, y as a fraction of the axes
            ax.axvline(tr["diverged_at"] + 1, color=line.get_color(), ls=":", lw=1)
            ax.text(tr["diverged_at"] + 1, 0.97, "loss not finite", color=line.get_color(),
                    fontsize=8, ha="right", va="top", rotation=90,
                    transform=ax.get_xaxis_transform())
    if cap is not None:
        ax.axhline(cap, color="k", lw=0.8, ls="--", label=f"cap {cap:g}")
    ax.set(yscale="log", xlabel="step", ylabel="gradient norm (before the cap)")
    ax.legend(fontsize=8)
    return ax


# ----------------------------------------------------------------- transformers (notebook 10)

def split_errors(model, layer, calibration, size, shares, *, sparsity="unstructured", seed=0):
    """One linear layer of ``model`` at the stored fraction ``size``: the held-out relative
    output error of :func:`lrsa.decompose.oats` and :func:`lrsa.decompose.fit_sparse_low_rank`
    for each share of the size given to A (the rest to the rank; 0 is low rank alone).

    The layer's inputs and outputs are sampled on ``calibration`` (every token), fitted on
    80 % of the samples (their least-squares map and second moment) and judged on the rest,
    on the linear response. Returns ``{"shares", "nonzeros", "rank", "oats", "lrsa"}``."""
    from ..attention import split_attention
    from ..decompose import entry_split, fit_sparse_low_rank, oats
    from ..features import collect_features, fold_batchnorm
    from ..pipeline.layer import HeldOut
    from ..structured_fit import StructuredFit

    net = fold_batchnorm(copy.deepcopy(model).eval())
    split_attention(net)
    feats = collect_features(net, [layer], [calibration], samples_per_image=None)[layer]
    X, Z = feats.X.double(), feats.Z.double()
    n, d = Z.shape[0], X.shape[0]
    bias = net.get_submodule(layer).bias.detach().double()
    held = HeldOut(X, Z, bias, False, seed)
    fit = StructuredFit(held.part)
    scale = float(torch.linalg.norm(held.Y - bias[:, None]))  # the response without its bias
    out = {"shares": list(shares), "nonzeros": [], "rank": [], "oats": [], "lrsa": []}
    for share in shares:
        k, r = entry_split(sparsity, size * n * d, share, n, d)
        out["nonzeros"].append(k)
        out["rank"].append(r)
        for name, fitter in (("oats", oats), ("lrsa", fit_sparse_low_rank)):
            A, U, V = fitter(fit.W_full, fit.G, r, sparsity, k)
            out[name].append(held.error(A, U, V, bias) / scale)
    return out


def plot_split_errors(errors, share=None, *, ax=None, title=None):
    """:func:`split_errors`'s curves, the chosen ``share`` marked. Returns the Axes."""
    ax = _ax(ax)
    for name, label in (("oats", "OATS (diagonal scaling, thresholding)"),
                        ("lrsa", "lrsa (whitened, exact blocks)")):
        ax.plot(errors["shares"], errors[name], marker="o", label=label)
    if share is not None:
        ax.axvline(share, color="0.5", ls="--", lw=1)
    ax.set(xlabel="share of the stored size given to the sparse part A",
           ylabel="held-out relative output error", title=title)
    ax.legend(fontsize=8)
    return ax


def plot_transformer_benchmark(results, *, stage="after", ax=None, title=None):
    """Top-1 with 95 % intervals per method at each stored size, from
    ``benchmarks/results/transformer_digits.json``'s ``results``. Returns the Axes."""
    ax = _ax(ax, figsize=(8, 4))
    methods = list(dict.fromkeys(r["method"] for r in results.values()))
    sizes = sorted({r["size"] for r in results.values()})
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        rows = [next(r for r in results.values() if r["method"] == method and r["size"] == s)
                for s in sizes]
        x = np.arange(len(sizes)) + (i - (len(methods) - 1) / 2) * width
        iv = [r[f"top1_{stage}"] for r in rows]
        mean = np.array([v["mean"] for v in iv])
        ax.errorbar(x, mean, yerr=[mean - [v["low"] for v in iv], [v["high"] for v in iv] - mean],
                    fmt="o", capsize=3, label=rows[0]["label"])
    ax.set_xticks(range(len(sizes)), [f"{s:.0%} of the weights" for s in sizes])
    ax.set(ylabel=f"top-1 {stage} fine-tuning (%)", title=title)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    return ax


__all__ += ["plot_split_errors", "plot_transformer_benchmark", "split_errors"]
