r"""The computations behind notebooks 07 (against the baselines) and 10 (transformers): small,
tested functions the notebooks call, so that a notebook holds the argument and the figures,
and the arithmetic lives here. Notebook 08's are in :mod:`lrsa.course.speed`, notebook 09's
in :mod:`lrsa.course.fine_tuning`.

Against the baselines (notebook 07)
    :func:`equal_size_runs`: lrsa, truncated SVD and reduced-rank regression at the same
    per-layer sizes; :func:`heldout_splits`, :func:`plot_heldout_splits`: B alone against
    the best split with a sparse part, per layer; :func:`plot_equal_size_top1`,
    :func:`plot_frontier`: the saved VGG-16 grid.

Transformers (notebook 10)
    :func:`split_errors`, :func:`plot_split_errors`: one layer's held-out error as its size
    is split between A and B; :func:`plot_transformer_benchmark`: the saved benchmark.

Plots take ``ax=None`` and return the Axes. :func:`saved_results` (from
:mod:`lrsa.course.resources`) reads the project's saved measurements, from a clone or an
installed wheel; everything else takes what it works on as arguments.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from ._plotting import axes_or_new
from .resources import saved_results

__all__ = ["saved_results", "equal_size_runs", "heldout_splits",
           "plot_equal_size_top1", "plot_frontier", "plot_heldout_splits", "plot_split_errors",
           "plot_transformer_benchmark", "split_errors"]


# ----------------------------------------------------------------- baselines (notebook 07)

def equal_size_runs(model, calibration_data, test, budget, **kwargs):
    """lrsa at ``budget``, then truncated SVD and reduced-rank regression at exactly the
    per-layer stored sizes lrsa chose (:func:`lrsa.pipeline.compress_like`): notebook 07's fair
    comparison, on the same calibration data, with no fine-tuning.

    Returns
    -------
    dict method ("lrsa", "svd", "rrr") -> {"model", "layers" (report rows as dicts),
    "params" (stored weights of the approximated layers), "top1"}
    """
    from ..pipeline import compress, compress_like
    from ..train import evaluate

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


def plot_heldout_splits(splits, labels=None, *, ax=None, title=None):
    """:func:`heldout_splits` as paired bars per layer: the held-out relative error of B
    alone and of the best split keeping a sparse part (hatched where lrsa chose it).

    Returns the Axes.
    """
    ax = axes_or_new(ax, figsize=(7, 3.4))
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
    ax = axes_or_new(ax, figsize=(4.5, 3.4))
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
    ax = axes_or_new(ax, figsize=(6, 3.8))
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


# ----------------------------------------------------------------- transformers (notebook 10)

def split_errors(model, layer, calibration, size, shares, *, sparsity="unstructured", seed=0):
    """One linear layer of ``model`` at the stored fraction ``size``: the held-out relative
    output error of :func:`lrsa.decompose.oats` and :func:`lrsa.decompose.fit_sparse_low_rank`
    for each share of the size given to A (the rest to the rank; 0 is low rank alone).

    The layer's inputs and outputs are sampled on ``calibration`` (every token), fitted on
    80 % of the samples (their least-squares map and second moment) and judged on the rest,
    on the linear response. Returns ``{"shares", "nonzeros", "rank", "oats", "lrsa"}``."""
    from ..attention import split_attention
    from ..batchnorm import fold_batchnorm
    from ..decompose import entry_split, fit_sparse_low_rank, oats
    from ..features import collect_features
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
    ax = axes_or_new(ax)
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
    ax = axes_or_new(ax, figsize=(8, 4))
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
