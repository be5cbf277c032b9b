r"""The loops behind the notebooks: the paper's Section V experiments as functions.

* :func:`single_layer_tradeoff` -- approximate ONE layer at a time (all others untouched)
  with the linear or the ReLU response over a range of lambdas: accuracy drop against
  compression rate (paper Fig. 4).
* :func:`strategy_curve` -- approximate the first k layers, k = 1, 2, ..., with the
  symmetric or the asymmetric strategy: accuracy after each k (paper Fig. 3).
* :func:`objective_along_segment` -- the layer's data term along a segment between two
  weights, for both responses (the ReLU one is not convex, see
  :func:`lrsa.solver.relu_nonconvexity_example`); :func:`dead_weight` gives the end point
  where every unit is off, in closed form.
* :func:`executed_macs` -- multiply-adds counted from the convolutions a module really runs.

Plus the tables beside the paper (:func:`paper_table_markdown`, :func:`benchmark_comparison`).
The networks and data they run on come from :mod:`lrsa.course.setups`, the paper's numbers from
:mod:`lrsa.paper`; the lambda grid of the slider explorers is in :mod:`lrsa.course.grids`.

Lambdas follow :func:`lrsa.pipeline.compress`: ``lam1 = relative_lam1 * s`` with ``s`` the layer's
gradient scale, ``lam2 = ratio * lam1``. Compression rates are those of the solved
structure, CR(A+B) = (n nnz_cols(A) + r (n + d)) / (n d) (paper eq. 15): the experiments call
``compress(..., fallback=None)`` so every approximated layer stays factored.
"""

from __future__ import annotations

import copy
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..batchnorm import fold_batchnorm
from ..features import collect_features
from ..pipeline import LayerPlan, SolverSettings, compress
from ..train import evaluate
from ..paper import PAPER_VGG16
from .setups import cache_key
from ..utils import as_numpy, code_version, format_table, progress_bar, weights_fingerprint

__all__ = ["benchmark_comparison", "dead_weight", "executed_macs", "objective_along_segment",
           "paper_table_markdown", "relative_error", "relu_output_error",
           "single_layer_tradeoff", "strategy_curve", "tradeoff_curves"]


PAIRS_SAMPLED = 3000  # (Z, Z-hat) entries kept per single-layer run, for scatter plots


# --------------------------------------------------------------------------- helpers
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


def _pairs(W, b, feats, picked):
    """(2, k) array: the entries ``picked`` (flat indices into n x N) of Z and of
    ``W X + b``, computed for those entries only."""
    rows, cols = picked // feats.N, picked % feats.N
    W, b = W.to(feats.X), b.to(feats.X)
    z_hat = (W[rows] * feats.X[:, cols].T).sum(1) + b[rows]
    return np.stack([as_numpy(feats.Z[rows, cols]), as_numpy(z_hat)])


def relative_error(estimate, target):
    r""":math:`\|\text{estimate} - \text{target}\|_F / \|\text{target}\|_F`, a float (a zero
    target divides by 1e-30, not by 0)."""
    return float(torch.linalg.norm(estimate - target)
                 / max(float(torch.linalg.norm(target)), 1e-30))


def relu_output_error(W, b, X, Z):
    r"""Relative error of the layer's ReLU output,
    :math:`\|\mathrm{relu}(WX + b) - \mathrm{relu}(Z)\|_F / \|\mathrm{relu}(Z)\|_F`.

    The quantity both responses are judged by downstream (the next layer sees the ReLU
    output), whatever response a solution was fitted to.
    """
    return relative_error(torch.relu(W.to(X) @ X + b.to(X)[:, None]), torch.relu(Z))


def _row(report, name):
    return next(r for r in report.layers if r["name"] == name)


def _plan_for(model, names, relative_lam1, ratio, fc_ratio):
    mods = dict(model.named_modules())
    return {n: LayerPlan(relative_lam1=relative_lam1,
                         ratio=fc_ratio if isinstance(mods[n], nn.Linear) else ratio)
            for n in names}


# --------------------------------------------------------------------------- Fig. 4
def single_layer_tradeoff(model, layer_name, calib, test_loader, relative_lam1s,
                          responses=("linear", "relu"), *, ratio=3.0, sizes=None,
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
    relative_lam1s : sequence of float
        ``lam1`` relative to the layer's gradient scale; larger means smaller CR.
    responses : sequence of str
        ``"linear"`` (reconstruct W X + b) and/or ``"relu"`` (the paper: relu(W X + b)).
    ratio : float
        ``lam2 / lam1`` (math.inf: sparse only).
    sizes : sequence of float, optional
        Instead of ``relative_lam1s``: CR(A+B) targets. Both responses then share the
        structure found by the linear search and differ only in the refit (see ``compress``).
    baseline_top1 : float, optional
        Top-1 of ``model`` on ``test_loader`` (evaluated when None).
    samples_per_image, max_samples, max_iter, tol
        As in :func:`lrsa.pipeline.compress`.
    progress : bool
        A tqdm bar over the runs.

    Returns
    -------
    list of dict
        One per (response, value): ``layer``, ``response``, ``relative_lam1`` (the one used),
        ``planned_size`` (the size asked, None with ``relative_lam1s``), ``size_a``,
        ``size_b``, ``size`` (stored, fractions), ``rank``, ``nonzero_columns``,
        ``rel_error`` (relative error of the response it was fitted to, on the calibration
        samples), ``relu_error`` (:func:`relu_output_error`, the same measure for both
        responses), ``top1`` (%), ``drop`` (baseline - top1, points) and
        ``pre_activations``: a (2, k) array of the same ``PAIRS_SAMPLED`` entries in every
        row (k fewer when the layer has fewer), the original pre-activation ``Z`` and the
        approximation's ``(A + B) X + b``, for scatter plots.
    """
    if sizes is None and relative_lam1s is None:
        raise ValueError("give relative_lam1s or sizes")
    values = list(sizes if sizes is not None else relative_lam1s)
    base = evaluate(model, test_loader)["top1"] if baseline_top1 is None else baseline_top1
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    feats = collect_features(folded, [layer_name], calib, samples_per_image=samples_per_image,
                             max_samples=max_samples, seed=0)[layer_name]
    picked = torch.randperm(feats.Z.numel(), generator=torch.Generator().manual_seed(0))
    picked = picked[:PAIRS_SAMPLED]
    rows, bar = [], progress_bar(progress, len(values) * len(responses), f"{layer_name}")
    for response in responses:
        for v in values:
            plan = {layer_name: LayerPlan(ratio=ratio, size=v) if sizes is not None
                    else LayerPlan(relative_lam1=v, ratio=ratio)}
            comp, rep = compress(model, calib, plan, response=response, fallback=None,
                                 solver=SolverSettings(samples_per_image, max_samples,
                                                       max_iter, tol),
                                 progress=False)
            r = _row(rep, layer_name)
            W, b = _lowered(comp.get_submodule(layer_name))
            top1 = evaluate(comp, test_loader)["top1"]
            rows.append({"layer": layer_name, "response": response,
                         "relative_lam1": r["relative_lam1"],
                         "planned_size": v if sizes is not None else None,
                         "size_a": r["size_a"], "size_b": r["size_b"], "size": r["size"],
                         "rank": r["rank"],
                         "nonzero_columns": r["nonzero_columns"], "rel_error": r["rel_error"],
                         "relu_error": relu_output_error(W, b, feats.X, feats.Z),
                         "top1": top1, "drop": base - top1,
                         "pre_activations": _pairs(W, b, feats, picked)})
            bar.update(1)
            bar.set_postfix(response=response, size=f"{r['size']:.2f}", top1=f"{top1:.1f}")
    bar.close()
    return rows


def tradeoff_curves(rows, y="drop", layer=None):
    """``{response: (CR in %, y)}`` sorted by CR, from :func:`single_layer_tradeoff` rows,
    ready for :func:`lrsa.viz.plot_tradeoff`."""
    curves = {}
    for resp in dict.fromkeys(r["response"] for r in rows):
        pts = sorted((100 * r["size"], r[y]) for r in rows
                     if r["response"] == resp and (layer is None or r["layer"] == layer))
        curves[f"{resp} response"] = ([p[0] for p in pts], [p[1] for p in pts])
    return curves


# --------------------------------------------------------------------------- Fig. 3
def strategy_curve(model, calib, test_loader, strategy, layer_names, relative_lam1, *, ratio=3.0,
                   fc_ratio=math.inf, response="relu", baseline_top1=None, workdir=None,
                   samples_per_image=10, max_samples=10_000, max_iter=200, tol=1e-3,
                   progress=True):
    """Accuracy after approximating the first k layers, k = 1 .. len(layer_names) (Fig. 3).

    Point k is ``compress`` with a plan covering ``layer_names[:k]``. ``compress``'s run key
    includes the plan, so a workdir does not resume across points by itself; each point
    gets its own workdir seeded with the finished layer files of point k - 1 (layer j's
    solution depends only on layers < j, with either strategy), so every point solves one
    new layer. ``tests/course/test_experiments.py`` checks the result against a fresh run.

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
    relative_lam1 : float
        ``lam1`` relative to each layer's gradient scale.
    ratio, fc_ratio : float
        ``lam2 / lam1`` for Conv2d and for Linear layers (default: FC sparse only, as the
        paper).
    response : str
        ``"relu"`` or ``"linear"``.
    baseline_top1 : float, optional
        Top-1 of ``model`` (evaluated when None).
    workdir : path, optional
        Keep the per-point runs there, in a folder keyed by the arguments, the weights and
        the version of lrsa's code (a rerun with all three the same resumes; other code
        starts a folder of its own); None: a temporary folder, removed at the end.
    samples_per_image, max_samples, max_iter, tol
        As in :func:`lrsa.pipeline.compress`.
    progress : bool
        A tqdm bar over the points.

    Returns
    -------
    list of dict
        One per k: ``k``, ``layer`` (the k-th), ``strategy``, ``top1``, ``drop`` (points),
        ``size`` and ``rel_error`` of layer k, ``size_so_far`` (compressed / original size of
        the k layers).
    """
    names = list(layer_names)
    if not names:
        raise ValueError("layer_names is empty")
    base = evaluate(model, test_loader)["top1"] if baseline_top1 is None else baseline_top1
    settings = dict(strategy=strategy, relative_lam1=relative_lam1, ratio=ratio, fc_ratio=fc_ratio,
                    response=response, names=names, spi=samples_per_image,
                    max_samples=max_samples, max_iter=max_iter, tol=tol)
    tmp = None
    if workdir is None:
        tmp = tempfile.TemporaryDirectory(prefix="lrsa-strategy-")
        root = Path(tmp.name)
    else:
        key = cache_key(weights_fingerprint(model), settings, code_version())
        root = Path(workdir) / f"{strategy}-{key}"
    rows, prev, bar = [], None, progress_bar(progress, len(names), f"{strategy} strategy")
    try:
        for k in range(1, len(names) + 1):
            run = root / f"k{k:03d}"
            if prev is not None and not (run / "run.json").exists():
                run.mkdir(parents=True, exist_ok=True)
                for f in prev.glob("layer_*.pt"):
                    shutil.copy2(f, run / f.name)
            plan = _plan_for(model, names[:k], relative_lam1, ratio, fc_ratio)

            # the root is keyed by the code version, so every file here is this code's own
            comp, rep = compress(model, calib, plan, response=response, strategy=strategy,
                                 solver=SolverSettings(samples_per_image, max_samples,
                                                       max_iter, tol),
                                 workdir=run, fallback=None, progress=False)
            top1 = evaluate(comp, test_loader)["top1"]
            done = [r for r in rep.layers if r["name"] in plan]
            r = _row(rep, names[k - 1])
            rows.append({"k": k, "layer": names[k - 1], "strategy": strategy, "top1": top1,
                         "drop": base - top1, "size": r["size"], "rel_error": r["rel_error"],
                         "size_so_far": sum(x["params_compressed"] for x in done)
                         / sum(x["params_original"] for x in done)})
            prev = run
            bar.update(1)
            bar.set_postfix(layer=names[k - 1], top1=f"{top1:.1f}")
    finally:
        bar.close()
        if tmp is not None:
            tmp.cleanup()
    return rows


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
    from ..solver import LayerProblem

    out = {"s": torch.linspace(0, 1, steps).tolist()}
    for response, Y in (("linear", Z), ("relu", torch.relu(Z))):
        prob = LayerProblem(X, Y, bias, response)
        f = [prob.f_and_grad((1 - s) * W0 + s * W1, grad=False)[0] for s in out["s"]]
        chord = [(1 - s) * f[0] + s * f[-1] for s in out["s"]]
        out[response] = f
        out[f"max_gap_{response}"] = max(a - c for a, c in zip(f, chord))
    return out


def dead_weight(X, bias, scale=1.0):
    r"""A weight that switches every unit off on the inputs ``X`` (>= 0, e.g. outputs of a
    ReLU), in closed form: no search, so it always returns.

    :math:`W = -c\,\mathbf 1\mathbf 1^\top` gives :math:`(WX + b)_{ji} = b_j - c\,s_i` with
    :math:`s_i = \sum_k X_{ki} \ge 0`. With :math:`c = \max(\text{scale},\
    2\max_j (b_j)_+ / \min_{s_i > 0} s_i)` every unit is off on every sample with
    :math:`s_i > 0`. A sample whose lowered input is all zero (:math:`s_i = 0`) sees only the
    bias: where some :math:`b_j > 0` no weight at all switches that unit off there, so such
    samples are reported, not searched for (a doubling search on c never ends on them).

    Returns
    -------
    (W_dead, off) : the (n, d) weight and a (N,) bool mask of the samples on which every
        unit is off at W_dead (all of them unless the case above occurs).
    """
    X = torch.as_tensor(X)
    b = torch.as_tensor(bias).to(X)
    if bool((X < 0).any()):
        raise ValueError("dead_weight needs inputs X >= 0 (outputs of a ReLU)")
    s = X.double().sum(0)
    b_max = max(float(b.max()), 0.0)
    c = float(scale)
    if b_max > 0 and bool((s > 0).any()):
        c = max(c, 2 * b_max / float(s[s > 0].min()))
    W = torch.full((b.numel(), X.shape[0]), -c, dtype=X.dtype)
    off = ((W @ X + b[:, None]) <= 0).all(0)
    return W, off


def executed_macs(module, x_shape):
    """Multiply-adds of one forward of ``module`` on zeros of ``x_shape``, counted from the
    convolutions and linear maps it really runs (forward hooks on every nn.Conv2d / nn.Linear
    inside it: output elements times the inputs each one reads), not from a formula."""
    total, hooks = [0], []

    def count(mod, args, out):
        per_output = mod.weight[0].numel()  # (in / groups) k_h k_w, or in_features
        total[0] += out.numel() * per_output

    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            hooks.append(m.register_forward_hook(count))
    try:
        with torch.no_grad():
            module(torch.zeros(x_shape))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


# --------------------------------------------------------------------------- tables
def paper_table_markdown(table, title="paper"):
    """A markdown table of a paper table dict ``layer -> (CR(A), CR(B), CR(A+B))`` in %."""
    return format_table([f"layer ({title})", "size(A) %", "size(B) %", "size(A+B) %"],
                        [[k, f"{a:.1f}", f"{b:.1f}", f"{c:.1f}"] for k, (a, b, c) in table.items()])


def benchmark_comparison(ablation, timing):
    """Ours beside the paper's VGG-16 figures: the validation winner of the saved ablation
    (``benchmarks/ablation.py``'s JSON: its sizes, its drop against the fine-tuned control on
    the report half, 95 % interval) and its speed (``benchmarks/timing.py``'s JSON of the same
    model: median ratio over processes with its interval, glibc's default allocator).

    Returns
    -------
    (markdown str, dict of the numbers used)

    Raises
    ------
    ValueError
        If ``timing`` timed another model than the ablation's winner.
    """
    winner = ablation["selection"]["winner"]
    if not str(timing["compressed"]).endswith(f"/{winner}.pt"):
        raise ValueError(f"the timing is of {timing['compressed']}, not of the ablation's "
                         f"winner {winner!r}: time that model (benchmarks/timing.py)")
    speed = timing["allocators"]["glibc default"]
    settings = ablation["settings"]
    nums = {"method": winner, "params_ratio": ablation["params"]["control"]
            / ablation["params"][winner],
            "speedup_b128": speed["b128"]["median_ratio"],
            "speedup_b1": speed["b1"]["median_ratio"],
            "top1_control": ablation["report_top1"]["control"]["after"],
            "top1_after": ablation["report_top1"][winner]["after"],
            "drop": ablation["comparisons"][f"control - {winner}, after"],
            "epochs": settings["epochs"], "lr": settings["lr"],
            "seeds": len(ablation["seeds"]["after"]), "code_version": ablation["code_version"]}

    def iv(d, unit=""):
        return f"{d['mean']:.2f}{unit} [{d['low']:.2f}, {d['high']:.2f}]"

    md = "\n".join([
        f"| | ours: {winner} ({nums['seeds']} seeds, report half, 95 %) | paper |",
        "|---|---:|---:|",
        f"| parameters, original / compressed | {nums['params_ratio']:.2f}x | "
        f"{PAPER_VGG16['params_ratio']:.2f}x |",
        f"| CPU speed-up, batch 128 | {iv(nums['speedup_b128'], 'x')} | "
        f"{PAPER_VGG16['speedup']:.1f}x |",
        f"| CPU speed-up, batch 1 | {iv(nums['speedup_b1'], 'x')} | - |",
        f"| top-1 of the uncompressed network | {iv(nums['top1_control'], '%')} "
        f"(fine-tuned control) | {PAPER_VGG16['baseline_top1']:.2f}% |",
        f"| top-1 compressed, fine-tuned | {iv(nums['top1_after'], '%')} | - |",
        f"| top-1 drop | {iv(nums['drop'], ' pt')} after {nums['epochs']} epoch(s) | "
        f"{PAPER_VGG16['accuracy_drop']:.2f} pt after 5 |"])
    return md, nums
