r"""The network loop: approximate layer after layer (paper sections IV-V), resumably.

For each layer, in the order a traced forward pass calls them, :func:`compress` samples
lowered inputs X and pre-activation responses Z on calibration images, solves the layer
(:func:`lrsa.pipeline.approximate_layer`) and stores it factored, or keeps it dense
where the fall-back rule says so (``lrsa.pipeline.speed.realize``). BatchNorm is folded
first. Strategies (paper Fig. 3): ``"symmetric"`` takes X from the original network,
``"asymmetric"`` from the network approximated so far (targets always from the original).

A run with ``workdir`` writes each solved layer atomically, with the code version, weights
and settings that computed it; started again it reuses those files, refuses files that
other code, weights or settings computed, and recomputes a file it cannot read.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..attention import split_attention
from ..batchnorm import fold_batchnorm
from ..features import batch_input, collect_features, find_layers
from ..parallel import submit_all
from ..utils import (atomic_torch_save, code_version, load_torch_file, progress_bar,
                     set_module, weights_fingerprint)
from .budget import Budget, matching_plan, network_plan
from .layer import (METHODS, SolverSettings, approximate_layer, cannot_take, check_sparsity,
                    columns_per_channel, layer_bias, lowered_weight)
from .results import CompressionReport, LayerReport
from .speed import FALLBACKS, realize, revert_until_faster, with_speedup_target
from .trace import trace


def compress(model, calibration_data, budget=None, *, method="lrsa", response="relu",
             strategy="asymmetric", solver=None, fallback="macs", workdir=None,
             progress=False, client=None, sparsity="channel"):
    """Compress ``model`` by layer-wise sparse + low-rank approximation.

    Parameters
    ----------
    model : nn.Module (not modified). Conv2d (groups=1) and Linear layers are approximated,
        and the four projections of every ``nn.MultiheadAttention`` (in the compressed
        model it becomes the equivalent :class:`lrsa.attention.SplitProjectionAttention`;
        one with ``add_bias_kv`` or ``add_zero_attn`` is kept, with the reason in the
        report).
    calibration_data : a tensor of inputs (split into batches of 128), or an iterable of
        input batches or (inputs, labels) pairs, re-iterated once per layer (a list of
        tensors or a loader with a fixed order). Token inputs (batch, tokens, features)
        are sampled token by token, like image positions.
    budget : :class:`Budget` (default ``Budget()``: the lambdas set each layer's size), or a
        dict name -> :class:`LayerPlan` (layers it does not name are kept as they are).
        E.g. ``Budget(size=0.2)``: 5x fewer stored weights over the whole network.
    method : "lrsa" (sparse + low-rank, see :func:`lrsa.pipeline.approximate_layer`),
        or a baseline at the same per-layer sizes: "svd" (truncated SVD, data-free), "rrr"
        (reduced-rank regression, linear response) or "oats" (OATS, single-weight
        sparsity only, :func:`lrsa.decompose.oats`); all need a size.
    response : "relu" (paper: the response after the ReLU, where one follows) or "linear".
    strategy : "asymmetric" (paper) or "symmetric".
    solver : :class:`SolverSettings` (sampling, ADMM limits, seed); default ``SolverSettings()``.
    fallback : where a solved layer is stored dense (its original weights, ``kind="dense"``)
        instead of factored. "macs" (default): where the factored form needs no fewer
        multiply-adds; deterministic, so the same command gives the same model on every
        run. "time": timed in place against the dense layer at batch 1 and the calibration
        batch size, on the model's device (see ``lrsa.pipeline.speed.realize``), then the
        whole model against the original, reverting the layers that gain least while it is
        not faster (``report.speed``); for speed on a quiet machine, not reproducible under
        load. None: always factored.
    workdir : folder for resumable runs (None: no files).
    progress : a progress bar over the layers (off by default, as everywhere in lrsa).
    client : dask.distributed.Client, optional. With ``strategy="symmetric"`` the layers are
        solved in parallel on its workers (:func:`lrsa.parallel.dask_client`); the results
        are the serial ones.
    sparsity : what A keeps. "channel" (the paper: whole input channels, which a CPU
        skips), "unstructured" (single weights) or "N:M" such as "2:4" (N of every M
        consecutive inputs of a row); the last two need a size and apply to nn.Linear
        layers (others are kept, with the reason in the report) and are stored as a masked
        dense A (:class:`lrsa.layers.EntrySparseLowRankLinear`): smaller, not faster on a
        CPU.

    Returns
    -------
    (compressed model, :class:`CompressionReport`)
    """
    budget, solver = _check_options(budget, method, response, strategy, solver, fallback,
                                    client, sparsity)
    batches = _as_batches(calibration_data)
    first = batch_input(batches[0])
    start = time.perf_counter()
    original = fold_batchnorm(copy.deepcopy(model).eval())
    attention_kept = split_attention(original).kept
    layers = find_layers(original, first[:1])
    in_shapes, relu_after = trace(original, first[:1])
    plan, predicted = network_plan(layers, in_shapes, budget, original=original,
                                   batch_shape=tuple(first.shape))
    run = _Run(original=original, compressed=copy.deepcopy(original), batches=batches,
               solver=solver, response=response, strategy=strategy, method=method,
               in_shapes=in_shapes, relu_after=relu_after, fallback=fallback,
               batch_sizes=sorted({1, int(first.shape[0])}), sparsity=sparsity)
    if workdir is not None:
        run.work = Path(workdir)
        run.work.mkdir(parents=True, exist_ok=True)
        run.provenance = {"code": code_version(), "weights": weights_fingerprint(model)}
    if client is not None:
        run.pending = _submit_layers(client, run, layers, plan)
    report = CompressionReport(strategy=strategy, response=response, method=method,
                               fallback=fallback,
                               budget=budget.to_dict() if isinstance(budget, Budget) else None)
    report.layers += [_attention_row(original, name, why) for name, why in attention_kept]
    with progress_bar(progress, len(layers), "compress", unit="layer") as bar:
        for idx, (name, mod) in enumerate(layers):
            row = _compress_layer(run, idx, name, mod, plan[name])
            report.layers.append(row)
            bar.update(1)
            bar.set_postfix(layer=name,
                            size=f"{row['params_compressed'] / row['params_original']:.2f}")
    if fallback == "time":
        report.speed = revert_until_faster(original, run.compressed, run.factored, report,
                                           tuple(first.shape[1:]), run.batch_sizes)
        if isinstance(budget, Budget) and budget.speedup is not None:
            report.speed = with_speedup_target(report.speed, budget.speedup, predicted,
                                               int(first.shape[0]))
    report.seconds = time.perf_counter() - start
    return run.compressed, report


def compress_like(model, calibration_data, report, **kwargs):
    """``compress`` at exactly the per-layer stored sizes of ``report`` (see
    :func:`lrsa.pipeline.matching_plan`), with no fall-back so that the sizes hold;
    e.g. ``method="rrr", response="linear"`` for reduced-rank regression at lrsa's sizes."""
    return compress(model, calibration_data, matching_plan(report), fallback=None, **kwargs)


def _check_options(budget, method, response, strategy, solver, fallback, client, sparsity):
    """(budget, solver) with their defaults; a ValueError naming a wrong value or
    combination."""
    check_sparsity(sparsity, method)
    if response not in ("relu", "linear"):
        raise ValueError(f"response must be 'relu' or 'linear', got {response!r}")
    if strategy not in ("asymmetric", "symmetric"):
        raise ValueError(f"strategy must be 'asymmetric' or 'symmetric', got {strategy!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be 'macs', 'time' or None, got {fallback!r}")
    if client is not None and strategy != "symmetric":
        raise ValueError("client solves the symmetric strategy's layers in parallel; the "
                         "asymmetric strategy needs each layer's predecessors first")
    budget = Budget() if budget is None else budget
    if not isinstance(budget, (Budget, dict)):
        raise ValueError(f"budget must be an lrsa.Budget or a dict of LayerPlan, got "
                         f"{budget!r} (for a whole-network size: Budget(size={budget!r}))")
    sized = isinstance(budget, dict) or any(
        v is not None for v in (budget.size, budget.macs, budget.speedup, budget.layer_size))
    if sparsity != "channel" and not sized:
        raise ValueError(f"sparsity={sparsity!r} needs a size to fill: a Budget with a size, "
                         "or per-layer plans")
    if method != "lrsa" and not sized:
        raise ValueError(f"method={method!r} needs a size to match: a Budget with a size, or "
                         "per-layer plans (compress_like does that)")
    solver = SolverSettings() if solver is None else solver
    if not isinstance(solver, SolverSettings):
        raise ValueError(f"solver must be an lrsa.SolverSettings, got {type(solver).__name__}")
    return budget, solver


def _as_batches(calibration_data, batch_size=128):
    """A list of batches; a single tensor of images is split along its first dimension."""
    if isinstance(calibration_data, torch.Tensor):
        if calibration_data.dim() < 2:
            raise ValueError("calibration_data as one tensor must hold a batch of inputs "
                             f"(first dimension = images), got shape "
                             f"{tuple(calibration_data.shape)}")
        return list(calibration_data.split(batch_size))
    batches = calibration_data if isinstance(calibration_data, list) else list(calibration_data)
    if not batches:
        raise ValueError("calibration_data is empty")
    return batches


@dataclass
class _Run:
    """What every layer of one :func:`compress` call shares."""

    original: torch.nn.Module
    compressed: torch.nn.Module
    batches: list
    solver: SolverSettings
    response: str
    strategy: str
    method: str
    in_shapes: dict
    relu_after: set
    fallback: str | None
    batch_sizes: list
    sparsity: str = "channel"
    work: Path | None = None
    provenance: dict | None = None
    factored: dict = field(default_factory=dict)  # name -> its worst in-place speed-up
    pending: dict = field(default_factory=dict)  # name -> a Dask future of _layer's result

    @functools.cached_property
    def key_settings(self):
        """What computed a layer, for its work-folder key (fallback is left out: it decides
        how A + U V is stored, not what A, U, V are)."""
        settings = dict(response=self.response, strategy=self.strategy, method=self.method,
                        **asdict(self.solver),
                        calibration_images=sum(len(batch_input(b)) for b in self.batches))
        if self.sparsity != "channel":  # so that older work folders' layer keys stay valid
            settings["sparsity"] = self.sparsity
        return settings


def _compress_layer(run, idx, name, mod, p):
    """One layer: kept as it is, resumed from the work folder, or solved (and saved); then
    stored in ``run.compressed`` factored, or dense where the fall-back says so. Returns its
    report row."""
    row = _initial_row(name, mod, p)
    if _kept(p):
        return row
    why_not = cannot_take(mod, run.sparsity)
    if why_not is not None:
        return dataclasses.replace(row, decision=why_not)
    done = _layer_file(run, idx)
    expected = None if done is None else {
        **run.provenance, "settings": _layer_key(name, p, run.key_settings)}
    saved = _read_layer_file(done, name, expected) if done is not None else None
    if saved is not None:
        A, U, V, b = (saved[k] for k in ("A", "U", "V", "bias"))
        row = LayerReport(**saved["row"])
    else:
        row, (A, U, V, b) = (run.pending[name].result() if name in run.pending else
                             _layer(run, name, mod, p, row))
        if done is not None:
            atomic_torch_save({"row": dict(row), "A": A.cpu(), "U": U.cpu(), "V": V.cpu(),
                               "bias": b.cpu(), "provenance": expected}, done)
    stored = realize(mod, A, U, V, b, run.in_shapes[name], run.fallback, run.batch_sizes,
                     row.sparsity or "channel")
    if stored.kind != "factored" and row.choice == "A+B" and run.fallback == "time" \
            and row.sparsity == "channel":
        row, stored = _low_rank_instead(run, name, mod, p, row, stored)
    set_module(run.compressed, name, stored.module)
    if stored.kind != "factored":
        return dataclasses.replace(row.stored_dense(stored.decision),
                                   layer_speedups=stored.speedups)
    run.factored[name] = min((stored.speedups or {0: 0}).values())
    return dataclasses.replace(row, kind="factored", decision=stored.decision,
                               layer_speedups=stored.speedups)


def _layer_file(run, idx):
    return run.work / f"layer_{idx:03d}.pt" if run.work is not None else None


def _read_layer_file(path, name, expected):
    """The saved solution of layer ``name``, or None where there is none or it cannot be
    read (a UserWarning names the file; the layer is then recomputed and the file
    rewritten). A readable file that other code, weights or settings computed is refused."""
    if not path.exists():
        return None
    try:
        saved = load_torch_file(path, f"layer {name}'s saved solution")
        if not (isinstance(saved, dict) and {"row", "A", "U", "V", "bias", "provenance"}
                <= set(saved)):
            raise ValueError(f"{path} does not hold layer {name}'s saved solution")
    except ValueError as exc:
        warnings.warn(f"{exc}; recomputing layer {name} and rewriting the file", stacklevel=4)
        return None
    _check_resumed(path, saved, expected)
    return saved


def _layer_key(name, plan, settings):
    return hashlib.sha256(json.dumps({"layer": name, "plan": asdict(plan), **settings},
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_resumed(path, saved, expected):
    """A saved layer is reused only if the same code, weights and settings computed it."""
    got = saved.get("provenance") or {}
    stale = [k for k in ("code", "weights", "settings") if got.get(k) != expected[k]]
    if stale:
        what = {"code": "another version of lrsa's code", "weights": "other model weights",
                "settings": "other settings or plan"}
        raise ValueError(f"{path} was computed by {' and '.join(what[k] for k in stale)}; "
                         "it cannot be resumed: use a new workdir or delete it")


def _low_rank_instead(run, name, mod, p, row, stored):
    """(row, stored) of B alone at the same stored size where A + B ran no faster than the
    dense layer (``fallback="time"``): the sparse part is a convolution of its own over few
    input channels, which costs a CPU more time than its multiply-adds (VGG-16's conv2-2
    under a multiply-add budget: rank 48 and 17 kept channels not faster, rank 48 alone
    2.3x faster timed alone). Kept only if it is stored factored; else the dense layer."""
    alone = dataclasses.replace(p, ratio=0.0, size=row.params_compressed / (row.n * row.d))
    new_row, (A, U, V, b) = _layer(run, name, mod, alone, _initial_row(name, mod, alone),
                                   method="lrsa")
    new = realize(mod, A, U, V, b, run.in_shapes[name], run.fallback, run.batch_sizes)
    if new.kind != "factored":
        return row, stored
    return dataclasses.replace(new_row, choice="B only (A+B not faster)",
                               seconds=row.seconds + new_row.seconds), new


def _attention_row(model, name, why):
    """The report row of an attention module kept whole (its projections are not modules:
    the four d x d weights count as one 4d x d matrix)."""
    mha = model.get_submodule(name)
    return LayerReport.original(name, type(mha).__name__, 4 * mha.embed_dim, mha.embed_dim,
                                decision=f"kept as it is: {why}")


def _initial_row(name, mod, p):
    """The report row of a layer kept as it is (with why its plan sized it so)."""
    return LayerReport.original(name, type(mod).__name__, *lowered_weight(mod).shape,
                                sized_by=p.sized_by)


def _kept(p):
    """Whether a plan keeps its layer as it is."""
    return p.skip or (p.size is not None and p.size >= 1)


def _response(run, name):
    """The response a layer is fitted to: the run's where a ReLU follows, else linear."""
    return run.response if name in run.relu_after else "linear"


def _submit_layers(client, run, layers, plan):
    """Every layer that needs a solve, submitted to ``client`` (symmetric strategy: the
    features come from the original network, so the solves are independent)."""
    todo = [(name, mod) for idx, (name, mod) in enumerate(layers)
            if not _kept(plan[name])
            and not (run.work is not None and _layer_file(run, idx).exists())]
    solo = dataclasses.replace(run, compressed=None, pending={}, work=None)  # what a worker needs
    items = [(name, mod, plan[name], _initial_row(name, mod, plan[name]))
             for name, mod in todo]
    futures = submit_all(client, _layer, (solo,), items)
    return {name: f for (name, _), f in zip(todo, futures)}


def _layer(run, name, mod, p, row, method=None):
    """Approximate one layer: features, solve, the report row. Returns (row, factors)."""
    t0 = time.perf_counter()
    s = run.solver
    method = method or run.method
    W, b = lowered_weight(mod), layer_bias(mod)
    n, d = W.shape
    group = columns_per_channel(mod)
    resp = _response(run, name)
    if method == "svd":  # data-free: no features needed
        X, Z = torch.zeros(d, 1, dtype=W.dtype), torch.zeros(n, 1, dtype=W.dtype)
    else:
        feats = collect_features(
            run.original, [name], run.batches, samples_per_image=s.samples_per_image,
            max_samples=s.max_samples, seed=s.seed,
            inputs_from=run.compressed if run.strategy == "asymmetric" else None)[name]
        X, Z = feats.X, feats.Z
        W, b = W.to(X), b.to(X)
    fit = approximate_layer(X, Z, W, b, p, resp, group, method, s, run.sparsity)
    rel = None
    if method != "svd":  # fit.objective is the data term ||Y - r(W X + b)||^2 / 2N
        Y = torch.relu(Z) if resp == "relu" else Z
        rel = math.sqrt(2 * X.shape[1] * fit.objective) / max(float(torch.linalg.norm(Y)),
                                                               1e-30)
    row = row.solved(fit, response=resp, rel_error=rel, seconds=time.perf_counter() - t0)
    return row, (fit.A, fit.U, fit.V, fit.bias)
