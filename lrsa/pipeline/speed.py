"""Speed: where a solved layer is stored factored or dense, the whole-model check, and the
spread of a speed-up budget over the layers by measured times.

Fewer multiply-adds is not less time: a factored convolution runs as two (three with a
sparse part) convolutions, and a CPU computes output channels in blocks of its vector
width. The default rule (``fallback="macs"``) decides on multiply-adds, which do not jitter,
so the same command gives the same model on every run; ``fallback="time"`` decides on
timings measured in place, which is what a quiet machine should use for speed.
"""

from __future__ import annotations

import copy
import warnings
from typing import NamedTuple

import torch
from torch import nn

from ..layers import (EntrySparseLowRankLinear, SparseLowRankConv2d, SparseLowRankLinear,
                      estimate_macs)
from ..timing import compare_latency, measure_latency
from ..utils import set_module
from .layer import log_energy, lowered_weight, rank_at

FALLBACKS = ("macs", "time", None)
TIME_REPEATS = 7  # median of this many forward passes per layer for a speed-up budget
CHECK_REPEATS = 10  # interleaved repeats per batch size when fallback="time" decides


class Realization(NamedTuple):
    """How a solved layer is stored: ``module``, ``kind`` (``"factored"`` or ``"dense"``),
    the ``decision`` in words with its figures, and the measured ``speedups`` per batch
    size (``fallback="time"``, else None)."""

    module: nn.Module
    kind: str
    decision: str
    speedups: dict | None = None


def factored_module(mod, A, U, V, b, sparsity="channel"):
    """``mod``'s A + U V as a SparseLowRank module (bias ``b``); an A of single weights
    (``sparsity`` not ``"channel"``) as an :class:`~lrsa.layers.EntrySparseLowRankLinear`."""
    if sparsity != "channel":
        return EntrySparseLowRankLinear.from_factors(mod, A, U, V, b)
    cls = SparseLowRankLinear if isinstance(mod, nn.Linear) else SparseLowRankConv2d
    return cls.from_factors(mod, A, U, V, b)


def realize(mod, A, U, V, b, x_shape, fallback, batch_sizes, sparsity="channel"):
    """Store the solved layer factored, or keep ``mod`` (its original weights: a dense
    A + U V would cost the same and only add the approximation's error).

    ``fallback``: ``"macs"`` factored where it needs fewer multiply-adds than ``mod``
    (deterministic); ``"time"`` timed in place against ``mod``, interleaved, at each of
    ``batch_sizes``: dense where it is slower at some batch size by both the median and the
    minimum times, factored where it is faster at all by both, and where the two disagree
    (the difference is inside the timing noise) the multiply-adds decide; None: factored.
    """
    factored = factored_module(mod, A, U, V, b, sparsity)
    if fallback is None:
        return Realization(factored, "factored", "factored: no fall-back asked for")
    ratio = estimate_macs(factored, x_shape) / estimate_macs(mod, x_shape)
    by_macs = f"{ratio:.2f} of the dense layer's multiply-adds"
    if fallback == "macs":
        return Realization(factored, "factored", f"factored: {by_macs}") if ratio < 1 else \
            Realization(copy.deepcopy(mod), "dense", f"dense: {by_macs}")
    runs = {int(bs): compare_latency(mod, factored, (int(bs), *x_shape[1:]),
                                     repeats=CHECK_REPEATS) for bs in batch_sizes}
    speedups = {bs: r["speedup"] for bs, r in runs.items()}
    fastest = {bs: r["original_min_s"] / r["compressed_min_s"] for bs, r in runs.items()}
    timed = ", ".join(f"batch {bs} {speedups[bs]:.2f}x (minimum times {fastest[bs]:.2f}x)"
                      for bs in runs)
    if any(speedups[bs] < 1 and fastest[bs] < 1 for bs in runs):
        return Realization(copy.deepcopy(mod), "dense", f"dense: slower, {timed}", speedups)
    if all(speedups[bs] > 1 and fastest[bs] > 1 for bs in runs):
        return Realization(factored, "factored", f"factored: faster, {timed}", speedups)
    verdict = f"within the timing noise ({timed}), so by multiply-adds: {by_macs}"
    return Realization(factored, "factored", f"factored: {verdict}", speedups) if ratio < 1 \
        else Realization(copy.deepcopy(mod), "dense", f"dense: {verdict}", speedups)


def revert_until_faster(original, compressed, factored, report, sample_shape, batch_sizes,
                        repeats=CHECK_REPEATS):
    """Time the whole compressed model against the original (interleaved, each batch size);
    while it is not faster at all of them, put back in ``compressed`` the original layer
    where the factored one gained least, and mark its row of ``report`` dense
    (``fallback="time"``). Returns the measured ``speedups``, whether it is ``faster``, and
    the layers ``reverted``: what this changed."""
    index = {r["name"]: i for i, r in enumerate(report.layers)}
    reverted = []
    order = sorted(factored, key=factored.get)  # least gain first
    while True:
        speedups = {f"b{b}": compare_latency(original, compressed, (b, *sample_shape),
                                             repeats=repeats)["speedup"] for b in batch_sizes}
        if min(speedups.values()) > 1 or not order:
            return {"speedups": speedups, "faster": min(speedups.values()) > 1,
                    "reverted": reverted}
        name = order.pop(0)
        set_module(compressed, name, copy.deepcopy(original.get_submodule(name)))
        i = index[name]
        report.layers[i] = report.layers[i].stored_dense(
            "dense: the whole model was not faster than the original ("
            + ", ".join(f"{k} {v:.2f}x" for k, v in speedups.items())
            + "), and this layer gained least")
        reverted.append(name)


def with_speedup_target(speed, target, predicted, batch):
    """``speed`` (from :func:`revert_until_faster`) with the ``target_speedup`` and the
    ``predicted_speedup`` beside it (a new dict); warns when the measured speed-up at the
    calibration batch size falls more than 5 % short of ``target``."""
    reached = speed["speedups"][f"b{batch}"]
    if reached < 0.95 * target:
        warnings.warn(f"Budget(speedup={target}): the compressed model measured {reached:.2f}x "
                      f"at batch {batch}, though its layers timed alone predicted "
                      f"{predicted:.2f}x (they do not add up exactly in the whole model); a "
                      "higher target_speedup gets closer", stacklevel=3)
    return {**speed, "target_speedup": target, "predicted_speedup": predicted}


def spread_by_speedup(plan, layers, in_shapes, original, batch_shape, speedup):
    """Set the per-layer sizes in ``plan`` (changed in place) for a whole-model ``speedup`` at
    ``batch_shape``, chosen greedily on measured times (adapted from the rank selection of Zhang
    et al. 2016, which also steps layers down greedily from full rank, but on multiply-adds and
    the energy of the layers' responses; here on timings and the weights' singular values;
    reference: X. Zhang, J. Zou, K. He, J. Sun, "Accelerating Very Deep Convolutional Networks
    for Classification and Detection", IEEE TPAMI 38(10), 2016).

    The model and each approximable layer (dense) are timed on the model's device, and each
    layer's factored form U V (random factors, in place) at the stored fractions
    :data:`TIME_GRID` against the dense layer, interleaved (the ratio is what a slow spell
    on a shared machine leaves intact), at the calibration batch size and at batch 1; a
    size counts only where it is faster at both, as the speed fall-back demands. Every
    layer starts dense; while the summed time misses the goal, the layer whose
    next smaller size loses the least weight energy per second saved steps down, where a
    layer's energy at rank r is the share of ||W||_F^2 its r leading singular values hold
    (data-free), and the objective is the product of the layers' shares. A layer that never
    steps down stays as it is. Returns ``(plan, predicted speed-up)``.
    """
    def seconds(module, shape):
        return measure_latency(module, shape, repeats=TIME_REPEATS)["median_s"]

    batch = batch_shape[0]
    before = seconds(original, batch_shape)
    free = [(n, m) for n, m in layers if not plan[n].skip]
    options = {n: _size_options(m, (batch, *in_shapes[n][1:]), seconds) for n, m in free}
    # timed before and after the layers: a slow spell on a shared machine during one
    # measurement would otherwise count as work the layers cannot save (seen: 34 % of the
    # time in the layers in one run, 70-80 % in others)
    total = min(before, seconds(original, batch_shape))
    at = {n: 0 for n in options}  # each layer's current option
    goal = total / speedup
    spent = total
    while spent > goal:
        moves = [((opts[at[n]][2] - opts[i][2]) / (opts[at[n]][1] - opts[i][1]), n, i)
                 for n, opts in options.items()
                 for i in [_next_faster(opts, at[n])] if i is not None]
        if not moves:
            raise ValueError(f"Budget(speedup={speedup}) is out of reach here: at batch {batch} "
                             f"the layers that may be approximated take "
                             f"{sum(o[0][1] for o in options.values()) / total:.0%} of the "
                             f"model's time, and at the smallest sizes timed their factored "
                             f"forms give at most {total / spent:.2f}x")
        _, n, i = min(moves)
        spent -= options[n][at[n]][1] - options[n][i][1]
        at[n] = i
    for n, opts in options.items():
        plan[n].size, plan[n].skip = opts[at[n]][0], at[n] == 0
    return plan, total / spent


def _size_options(mod, shape, seconds):
    """[(stored fraction, seconds, log energy)] of ``mod`` at input ``shape``: dense first,
    then the sizes of :data:`TIME_GRID` that run faster factored, largest first."""
    dense = seconds(mod, shape)
    energy = log_energy(mod)
    return [(1.0, dense, 0.0)] + [(size, dense * f, energy(size)) for size, f in
                                  zip(TIME_GRID, _factored_time_ratios(mod, shape)) if f < 1][::-1]


def _next_faster(options, i):
    """Index of the largest size after ``i`` that runs faster than option ``i`` (or None)."""
    return next((j for j in range(i + 1, len(options)) if options[j][1] < options[i][1]), None)


#: stored fractions of a layer at which :func:`spread_by_speedup` times its factored form
TIME_GRID = (0.02, 0.05, 0.1, 0.15, 0.22, 0.32, 0.45, 0.6)


def _factored_time_ratios(mod, shape):
    """Time of ``mod``'s factored form U V (random factors) over its own, timed interleaved
    in place, at each stored fraction of :data:`TIME_GRID`, at batch ``shape[0]``; made
    non-decreasing (a larger rank is never assumed faster). Where the form is not faster at
    batch 1 too, the fraction is 1 (the speed fall-back would keep the layer dense)."""
    W = lowered_weight(mod)
    n, d = W.shape
    fractions = []
    for size in TIME_GRID:
        r = rank_at(size, n, d)
        layer = factored_module(mod, torch.zeros_like(W), torch.randn(n, r), torch.randn(r, d),
                                None)
        ratios = [1 / compare_latency(mod, layer, (b, *shape[1:]),
                                      repeats=TIME_REPEATS)["speedup"]
                  for b in sorted({1, shape[0]})]
        f = ratios[-1] if max(ratios) < 1 else 1.0
        fractions.append(max(f, fractions[-1] if fractions else 0.0))
    return fractions
