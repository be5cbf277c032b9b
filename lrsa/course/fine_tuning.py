r"""Fine-tuning and distillation: the computations and figures of notebook 09, small tested
functions the notebook calls, so that it holds the argument and the figures.

Distillation
    :func:`soft_gradient`: the gradient of :class:`lrsa.train.Distillation`'s soft term,
    through the class itself; :func:`soft_term_gradient_norms`: its norm with and without
    the :math:`T^2`, per temperature; :func:`grad_norm_trace`: the first steps of a
    fine-tuning with their gradient norms, also when they diverge; :func:`plot_grad_norms`.
Recovery
    :func:`recovery_curves`: top-1 per epoch of fine-tuning for several compressed networks
    from the same start; :func:`digits_fine_tuning_study`: the notebook's digits experiment
    in one call; :func:`plot_recovery`, :func:`plot_intervals`.
The ablation (``benchmarks/ablation.py``)
    :func:`ablation_intervals`: the winner on validation and every method's top-1 and drop
    with 95 % intervals on the report images; :func:`ablation_recovery`: top-1 before and
    after fine-tuning; :func:`plot_ablation`.

Plots take ``ax=None`` and return the Axes. The saved measurements the notebook reads come
from :func:`lrsa.course.resources.saved_results` and
:func:`~lrsa.course.resources.saved_correctness`.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn

from ..evaluation import Interval, bootstrap_interval
from ..utils import as_numpy
from ._plotting import axes_or_new

__all__ = ["ABLATION_METHODS", "ablation_intervals", "ablation_recovery",
           "digits_fine_tuning_study", "grad_norm_trace",
           "plot_ablation", "plot_grad_norms", "plot_intervals", "plot_recovery", "recovery_curves",
           "soft_gradient", "soft_term_gradient_norms"]


# ----------------------------------------------------------------- distillation

def soft_gradient(student_logits, teacher_logits, temperature):
    r"""The gradient, with respect to the student's logits, of the soft term of
    :class:`lrsa.train.Distillation` (``alpha=1``, so the loss is that term alone, with the
    :math:`T^2` factor the class uses), in float64.

    The teacher is an ``nn.Identity`` fed the teacher's logits as its input, so the loss and
    its gradient are the library's own (autograd through the class).

    Returns
    -------
    torch.Tensor of the shape of ``student_logits``.
    """
    from ..train import Distillation

    s = torch.as_tensor(as_numpy(student_logits), dtype=torch.float64).requires_grad_(True)
    t = torch.as_tensor(as_numpy(teacher_logits), dtype=torch.float64)
    crit = Distillation(nn.Identity(), alpha=1.0, temperature=float(temperature))
    (g,) = torch.autograd.grad(crit(s, t, torch.zeros(s.shape[0], dtype=torch.long)), s)
    return g


def soft_term_gradient_norms(student_logits, teacher_logits, temperatures):
    r"""Norm of :func:`soft_gradient` for each temperature: with the :math:`T^2` factor the
    class uses, and without it (its loss divided by :math:`T^2`).

    Returns
    -------
    dict
        ``temperatures``, ``with_t2`` and ``without_t2`` (Frobenius norms, floats).
    """
    out = {"temperatures": [float(T) for T in temperatures], "with_t2": [], "without_t2": []}
    for T in out["temperatures"]:
        norm = float(soft_gradient(student_logits, teacher_logits, T).norm())
        out["with_t2"].append(norm)
        out["without_t2"].append(norm / T ** 2)
    return out


def grad_norm_trace(student, teacher, batches, *, lr, max_grad_norm=None, temperature=4.0,
                    alpha=0.5, seed=0):
    r"""The first steps of :func:`lrsa.pipeline.finetune` with logit distillation, one step
    per batch, recording the loss and the gradients' total norm at every step, and going on
    recording when the loss stops being finite (where ``finetune`` raises).

    Runs :func:`lrsa.train.train` (SGD, momentum 0.9, Nesterov, weight decay 5e-4, cosine
    schedule over these steps) with a :class:`lrsa.train.Distillation` criterion and the
    structure kept, as ``finetune`` does; ``max_grad_norm=None`` caps nothing.

    Parameters
    ----------
    student : nn.Module
        Left as it is: a copy is fine-tuned.
    teacher : nn.Module
    batches : list of (inputs, labels)
    lr, max_grad_norm, temperature, alpha, seed
        As in :func:`lrsa.pipeline.finetune`.

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
    student = copy.deepcopy(student)
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

def recovery_curves(models, loader, test, *, teacher, epochs, lr, max_grad_norm=10.0,
                    seed=0):
    """Top-1 before and after every epoch of :func:`lrsa.pipeline.finetune` (logit distillation from
    ``teacher``), for several compressed networks from the same start.

    Parameters
    ----------
    models : dict name -> nn.Module
        Fine-tuned copies are made; the originals are left as they are.
    loader : training batches (with ``len``), e.g. :func:`lrsa.data.make_loader`.
    test : ``(inputs, labels)`` batches for :func:`lrsa.train.evaluate`.
    teacher : nn.Module
    epochs : int
    lr, max_grad_norm, seed : as in :func:`lrsa.pipeline.finetune`.

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
    at the same per-layer sizes (:func:`lrsa.pipeline.compress_like`), each fine-tuned from
    its start (:func:`recovery_curves`, logit distillation from the original); then the first
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
    lrsa_model, report = compress(setup.model, setup.calib, Budget(size=size))
    svd, _ = compress_like(setup.model, setup.calib, report, method="svd")
    rrr, _ = compress_like(setup.model, setup.calib, report, method="rrr", response="linear")
    d = load_digits_images()
    loader = make_loader(d.x_train, d.y_train, 64, train=True, mean=None, std=None, pad=1,
                         seed=seed)
    curves = recovery_curves({"lrsa": lrsa_model, "truncated SVD": svd,
                              "reduced-rank regression": rrr}, loader, setup.test,
                             teacher=setup.model, epochs=epochs, lr=lr,
                             max_grad_norm=max_grad_norm, seed=seed)
    batches = [b for _, b in zip(range(blowup_steps), loader)]
    traces = {f"lr {blowup_lr:g}, {'cap ' + format(cap, 'g') if cap else 'no cap'}":
              grad_norm_trace(lrsa_model, setup.model, batches, lr=blowup_lr,
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


# ----------------------------------------------------------------- plots

def plot_recovery(curves, *, x=None, ax=None, xlabel="epochs of fine-tuning", title=None):
    """Top-1 against fine-tuning progress, one line per method (``curves``: name -> list of
    top-1, the first value before fine-tuning; ``x``: where each value sits on the x axis,
    default 0, 1, 2, ...). Returns the Axes."""
    ax = axes_or_new(ax)
    for name, top1 in curves.items():
        ax.plot(range(len(top1)) if x is None else x, top1, marker="o", label=name)
    ax.set(xlabel=xlabel, ylabel="top-1 (%)")
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return ax


def plot_grad_norms(traces, cap=None, *, ax=None):
    """Gradient norm per step, log scale, one line per trace (name -> :func:`grad_norm_trace`
    result), a cross where a run's loss stopped being finite. Returns the Axes."""
    ax = axes_or_new(ax)
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


def plot_intervals(intervals, *, ax=None, xlabel="top-1 (%)", title=None, reference=None):
    """Means with their intervals, one row per entry (``intervals``: label ->
    :class:`lrsa.evaluation.Interval` or its dict); ``reference``: a vertical line (e.g. the
    control's mean, or 0 for differences). Returns the Axes."""
    ax = axes_or_new(ax, figsize=(7, 0.45 * len(intervals) + 1.2))
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


# ----------------------------------------------------------------- the ablation

#: the ablation's methods (keys of its saved correctness) -> their labels; the first three
#: are lrsa's splits of the budget, among which validation chooses
ABLATION_METHODS = {"b_alone": "B alone (low rank)", "a_plus_b": "A + B (Algorithm 1)",
                    "a_alone": "A alone (channels)", "svd": "truncated SVD",
                    "rrr": "reduced-rank regression", "control": "uncompressed (control)"}


def ablation_intervals(correct, validation, report, *, stage="after"):
    """The ablation's figures, from per-image correctness
    (:func:`lrsa.course.resources.saved_correctness`).

    Returns ``(winner, top1, drops)``: the key of lrsa's split with the highest mean
    validation top-1 at ``stage``; for every method, its top-1 on the ``report`` images and
    (but the control) its paired drop against the control, each a
    :class:`lrsa.evaluation.Interval` (seeds, then images resampled; 95 %), keyed by the
    labels of :data:`ABLATION_METHODS`."""
    splits = list(ABLATION_METHODS)[:3]
    winner = max(splits, key=lambda k: correct[k, stage][:, validation].mean())
    on_report = {k: correct[k, stage][:, report] for k in ABLATION_METHODS}
    top1 = {label: bootstrap_interval([on_report[k]]) for k, label in ABLATION_METHODS.items()}
    drops = {label: bootstrap_interval([on_report["control"], on_report[k]])
             for k, label in ABLATION_METHODS.items() if k != "control"}
    return winner, top1, drops


def ablation_recovery(result, methods=("b_alone", "svd", "rrr", "control")):
    """Top-1 on the report images before fine-tuning and after it, for each of ``methods``
    (keys of :data:`ABLATION_METHODS`), as a saved ``benchmarks/ablation.py`` result (its
    JSON's ``report_top1``) records them: the mean over seeds and images and its 95 %
    interval over 10,000 bootstrap replicates. (Recomputing them takes seconds per
    interval; the notebook's checks recompute the means from the per-image correctness.)

    Returns
    -------
    dict label -> (before, after)
        Each a :class:`lrsa.evaluation.Interval`.
    """
    missing = [k for k in methods if k not in result["report_top1"]]
    if missing:
        raise ValueError(f"this ablation result has no {missing}; it has "
                         f"{sorted(result['report_top1'])}")
    return {ABLATION_METHODS[k]: tuple(Interval(**result["report_top1"][k][stage])  # to_dict's
                                       for stage in ("before", "after"))
            for k in methods}


def plot_ablation(top1, drops, *, axes=None, network=""):
    """Two panels from :func:`ablation_intervals`: top-1 with intervals, and the paired drop
    against the control (0 dashed). Returns the two Axes."""
    if axes is None:
        import matplotlib.pyplot as plt
        _, axes = plt.subplots(1, 2, figsize=(13, 3.8), constrained_layout=True)
    plot_intervals(top1, ax=axes[0], title=f"{network} top-1, 95 % interval".lstrip(": "))
    plot_intervals(drops, ax=axes[1], xlabel="drop against the control (points)",
                   reference=0, title=f"{network} paired drop".lstrip(": "))
    return axes
