r"""Where a compressed network's time goes: the computations and figures of notebook 08,
small tested functions the notebook calls, so that it holds the argument and the figures.

Amdahl's law
    :func:`amdahl_bound`, :func:`amdahl_speedup`: what the stages a plan leaves unchanged
    allow; :func:`stage_times`: every stage of a network timed alone on an input of its
    shape; :func:`time_share_table`: the same from a saved ``benchmarks/time_shares.py``
    result; :func:`plot_time_shares`.
Multiply-adds
    :func:`mac_table`: multiply-adds per layer of a dense network;
    :func:`plot_macs_vs_time`: time against them.
Rank steps
    :func:`factored_conv`, :func:`rank_sweep`: a k x k conv to rank r followed by a 1 x 1
    conv, timed against the dense conv; :func:`plot_rank_sweep`.

Plots take ``ax=None`` and return the Axes. The saved measurements the notebook reads come
from :func:`lrsa.course.resources.saved_results`.
"""

from __future__ import annotations

import math
import statistics
import time

import numpy as np
import torch
from torch import nn

from ._plotting import axes_or_new

__all__ = ["amdahl_bound", "amdahl_speedup", "factored_conv", "mac_table",
           "plot_macs_vs_time", "plot_rank_sweep", "plot_time_shares", "rank_sweep",
           "stage_times", "time_share_table"]


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

def mac_table(model, input_shape=(1, 3, 32, 32)):
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


# ----------------------------------------------------------------- plots

def plot_macs_vs_time(macs, ms, labels=None, *, ax=None, title=None, **scatter):
    """Measured time against multiply-adds, one point per layer, log-log, with the line
    "time proportional to MACs" through the layers' total (where every layer would sit if
    time were MACs times one rate).

    Returns the Axes.
    """
    ax = axes_or_new(ax)
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
    ax = axes_or_new(ax)
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
    ax = axes_or_new(ax, figsize=(9, 3.4))
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
