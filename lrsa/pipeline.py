r"""Whole networks: approximate layer after layer (paper sections IV-V).

For each layer, in the order a traced forward pass calls them, :func:`compress` samples
lowered inputs X and pre-activation responses Z on calibration images, solves the layer
(:func:`approximate_layer`) and swaps in a :class:`lrsa.layers.SparseLowRankConv2d` (or
``...Linear``), or keeps the layer as it was where the factored form runs no faster.
BatchNorm is folded first.

Strategies (paper Fig. 3): ``"symmetric"`` takes X from the original network,
``"asymmetric"`` from the network approximated so far (targets always from the original).

Sizes: a per-layer stored-size target (``target_cr``, a fraction of n d) or one for the
whole network (``network_cr``, spread over the layers by :func:`_spread_network_target`);
the budget is then split between kept input channels (A) and rank (B) as exact fits judge
best on held-out samples, the ADMM ranking the channels. Without a target, the lambdas
decide: ``lam1 = frac * s`` where ``s`` is the mean column norm of
:math:`(Z - b)X^\top/N` (the data term's gradient at 0), so one ``frac`` means the same on
every layer whatever its scale; ``lam2 = ratio * lam1`` (paper: 2.5-3); the ADMM's own
structure then sets the layer's size.

A run with ``workdir`` writes each finished layer atomically, with the code version,
weights and settings that computed it; started again it continues after the last finished
layer, and refuses layers computed by other code, weights or settings.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import heapq
import json
import math
import time
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from .features import batch_input, collect_features, find_layers, fold_batchnorm
from .baselines import truncated_svd
from .layers import (ImplementationChoice, SparseLowRankConv2d, SparseLowRankLinear,
                     choose_implementation, estimate_macs, keep_structure_hook)
from .parallel import submit_all
from .timing import compare_latency, measure_latency
from .train import Distillation, train
from .utils import (atomic_torch_save, code_version, format_table, progress_bar,
                    weights_fingerprint)
from .solver import LayerProblem, LayerSolution, StructuredFit, layer_objective

__all__ = ["CompressionReport", "LayerPlan", "LayerReport", "approximate_layer",
           "columns_per_channel", "compress", "compress_like", "default_plan", "finetune",
           "layer_bias", "load_compressed", "lowered_weight", "matching_plan",
           "save_compressed"]


@dataclass
class LayerPlan:
    """How one layer is approximated.

    frac : lam1 relative to the layer's gradient scale (with target_cr, the ADMM that ranks
    the input channels runs at it).
    ratio : lam2 / lam1 (math.inf: sparse only, no low-rank part; 0: low-rank only, no
    sparse part, which needs a target_cr).
    target_cr : stored size of this layer as a fraction of n d, in (0, 1]; >= 1 keeps it.
    skip : leave the layer as it is.
    rank_multiple : the low-rank part's rank is a multiple of this where it is at least
    this (what a budget cannot buy in whole multiples goes to kept channels, or is left
    unspent by B alone). A CPU convolution computes its output channels in blocks of the
    vector width, so a rank just above a multiple of 16 costs the next block's time.
    """

    frac: float = 0.03
    ratio: float = 3.0
    target_cr: float | None = None
    skip: bool = False
    rank_multiple: int = 1


def compress_like(model, calibration_data, report, **kwargs):
    """``compress`` at exactly the per-layer stored sizes of ``report`` (see
    :func:`matching_plan`), with no speed fall-back so that the sizes hold; e.g.
    ``method="rrr", response="linear"`` for reduced-rank regression at lrsa's sizes."""
    return compress(model, calibration_data, plan=matching_plan(report), fallback=None,
                    **kwargs)


def matching_plan(report):
    """Per-layer plans that give each layer the stored size it has in ``report`` (a
    :class:`CompressionReport` or its ``to_dict()``): what compares another method with an
    lrsa run at equal size, layer by layer (layers it kept stay kept)."""
    rows = report.layers if isinstance(report, CompressionReport) else report["layers"]
    return {r["name"]: LayerPlan(skip=True) if r["kind"] != "factored" else
            LayerPlan(target_cr=r["params_compressed"] / r["params_original"]) for r in rows}


def default_plan(layers, *, frac=0.03, ratio=3.0, target_cr=None, rank_multiple=1,
                 exclude=()):
    """The paper's defaults: skip the first conv and 1x1 convs; every other layer A + B.

    The paper keeps its FC layers sparse only; here they get A + B like the convolutions,
    since dropping whole input features of an FC layer costs more accuracy per stored
    weight than a low-rank part (with a size target, A alone only where a plan asks for it
    with ``ratio=math.inf``).

    layers : ordered (name, module) pairs (see :func:`lrsa.features.find_layers`).
    """
    plan, first_conv = {}, True
    for name, mod in layers:
        conv = isinstance(mod, nn.Conv2d)
        skip = (name in exclude or (conv and first_conv)
                or (conv and tuple(mod.kernel_size) == (1, 1)))
        first_conv = first_conv and not conv
        plan[name] = LayerPlan(frac=frac, ratio=ratio, target_cr=target_cr, skip=skip,
                               rank_multiple=rank_multiple)
    return plan


@dataclass
class LayerReport(Mapping):
    """One layer's row of :attr:`CompressionReport.layers` (paper Table I). Read its fields as
    attributes or by key (``row["cr"]``, ``row.get("choice")``, ``dict(row)``).

    Attributes
    ----------
    name : str
        Module name.
    type : str
        ``"Conv2d"`` or ``"Linear"``.
    n, d : int
        Rows and columns of the lowered weight W (outputs; k_h k_w c inputs).
    params_original : int
        n d.
    kind : str
        ``"factored"`` (runs A + U V), ``"dense"`` (solved, but kept its original weights:
        the factored form ran no faster), ``"original"`` (not approximated by the plan).
    cr_a, cr_b, cr : float
        Stored sizes of A (kept columns x n), B (r (n + d)) and of both, over n d
        (paper eq. 15); for a dense layer those of the solution it did not use.
    rank : int
        r, the rank of B.
    nonzero_columns : int
        Columns of A kept (kept channels x k_h k_w).
    params_compressed : int
        Parameters the layer stores as it runs (n d when dense or original).
    rel_error : float or None
        ||Y - r(W X + b)||_F / ||Y||_F on the calibration samples (None for the data-free SVD).
    seconds : float
        Time to sample and solve the layer.
    converged : bool
        The ADMM's convergence flag (True where no ADMM ran).
    response : str or None
        The response fitted: ``"relu"`` where a ReLU follows the layer, else ``"linear"``.
    choice : str or None
        ``"A+B"``, ``"A only"`` or ``"B only"``: the split of the budget chosen on held-out
        samples; ``"B only (A+B not faster)"`` where the chosen A + B ran no faster than the
        dense layer and B alone at the same size did (``fallback="time"``).
    kept_channels : int or None
        Input channels (columns for a Linear layer) the sparse part keeps.
    frac : float or None
        lam1 relative to the layer's gradient scale (lrsa only).
    method : str or None
        ``"lrsa"``, ``"svd"`` or ``"rrr"``.
    refined : bool
        The ReLU refinement was kept (it lowered the held-out error).
    ranked_by : str or None
        What ranked the input channels: ``"admm"`` or ``"energy"`` (very large layers).
    layer_speedups : dict or None
        Batch size -> the factored layer's measured speed-up in place.
    """

    name: str
    type: str
    n: int
    d: int
    params_original: int
    kind: str = "original"
    cr_a: float = 0.0
    cr_b: float = 1.0
    cr: float = 1.0
    rank: int = 0
    nonzero_columns: int = 0
    params_compressed: int = 0
    rel_error: float | None = 0.0
    seconds: float = 0.0
    converged: bool = True
    response: str | None = None
    choice: str | None = None
    kept_channels: int | None = None
    frac: float | None = None
    method: str | None = None
    refined: bool = False
    ranked_by: str | None = None
    layer_speedups: dict | None = None

    def __getitem__(self, key):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self.__dataclass_fields__)

    def __len__(self):
        return len(self.__dataclass_fields__)


@dataclass
class CompressionReport:
    """Per-layer results (paper Table I) and totals. CR = approximated / original size.

    Attributes
    ----------
    layers : list of LayerReport
        In the order the forward pass calls the layers.
    strategy, response, method : str
        The settings of the run.
    seconds : float
        Wall time of :func:`compress`.
    speed : dict or None
        The whole-model check of ``fallback="time"``: measured ``speedups`` per batch size,
        ``faster``, and the layers ``reverted`` to their original weights.
    """

    layers: list = field(default_factory=list)
    strategy: str = "asymmetric"
    response: str = "relu"
    method: str = "lrsa"
    seconds: float = 0.0
    speed: dict | None = None

    @property
    def params_original(self):
        return sum(r["params_original"] for r in self.layers)

    @property
    def params_compressed(self):
        return sum(r["params_compressed"] for r in self.layers)

    def to_dict(self):
        """Plain JSON-able dict (layers as dicts) with the totals."""
        d = asdict(self)
        d.update(params_original=self.params_original, params_compressed=self.params_compressed)
        return d

    def markdown(self):
        return format_table(
            ["layer", "kind", "structure", "CR(A) %", "CR(B) %", "CR(A+B) %", "rank",
             "kept channels", "rel. error", "s"],
            [[r["name"], r["kind"], r.get("choice"), f"{100 * r['cr_a']:.1f}",
              f"{100 * r['cr_b']:.1f}", f"{100 * r['cr']:.1f}", r["rank"],
              r.get("kept_channels"),
              None if r["rel_error"] is None else f"{r['rel_error']:.3f}",
              f"{r['seconds']:.1f}"] for r in self.layers])


def lowered_weight(mod):
    """The (n, k_h k_w c) lowered weight W of a conv (or the (n, d) weight of a linear layer),
    detached; columns ordered channel-major as :func:`lrsa.features.collect_features` lowers
    the inputs."""
    return mod.weight.detach().reshape(mod.weight.shape[0], -1)


def layer_bias(mod):
    """The layer's (n,) bias, detached; zeros for a layer without one."""
    return (mod.bias.detach() if mod.bias is not None
            else torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))


def columns_per_channel(mod):
    """Columns of the lowered weight per input channel: what the sparse part keeps or drops
    together (k_h k_w for a convolution, 1 for a linear layer)."""
    return mod.weight[0, 0].numel() if isinstance(mod, nn.Conv2d) else 1


METHODS = ("lrsa", "svd", "rrr")


HELD_OUT = 0.2  # share of the samples that judges the structure and the ReLU refinement
LOOSE_ITERATIONS = 40  # ADMM iterations for ranking channels under a size target
TIME_REPEATS = 7  # median of this many forward passes per layer for a target_speedup
ADMM_MAX_MACS = 2e12  # above this (about 2 min on 2 cores) the ranking uses the energy


def approximate_layer(X, Z, W, b, p, response, group, method="lrsa", max_iter=200, tol=1e-3,
                      seed=0):
    """Solve one layer for its plan.

    group : columns per input channel (k_h k_w for a conv, 1 for a linear layer): the
        sparse part is stored per kept input channel, so channels are what it keeps.

    Returns a :class:`lrsa.solver.LayerSolution` and the row fields it adds to the report
    (``choice``, ``kept_channels``, ``params_compressed``, ``frac``, ``refined``).

    ``method="lrsa"``: the ADMM (Algorithm 1, linear response, where the problem is convex)
    ranks the input channels by the l2 norm of their columns of A (:func:`_rank_channels`);
    candidate splits of the budget between kept channels and rank (B only, A only, the
    ADMM's channels in quarters) are fitted exactly (:class:`lrsa.solver.StructuredFit`)
    on 80 % of the samples and judged on the other 20 % (:func:`_choose`); the winner is
    refitted on all samples and, for the ReLU response, refined on the post-ReLU targets
    where that lowered the held-out error. With ``target_cr`` the budget is
    ``target_cr n d`` stored weights; without, the ADMM's own structure sets it.
    With a ``target_cr``, A alone is not a candidate unless the plan's ``ratio`` is inf: it
    can win on held-out layer error and still lose in the network (VGG-16 at equal
    per-layer sizes, code `6f86205`: A only on conv4-2 .. conv5-3, as chosen, 85.35 % top-1
    before fine-tuning; the same layers with rank 45-146 instead, 86.42 %; reduced-rank
    regression 86.16 %). Without one (the ADMM's own structure, the paper's lambda mode)
    all candidates stay.
    ``"svd"``: truncated SVD of W (data-free); ``"rrr"``: reduced-rank regression (B
    only, linear response). Both need ``target_cr``.
    """
    n, d = W.shape
    # the small margin: a size given as params / (n d) must not floor to one weight less
    budget = None if p.target_cr is None else int(p.target_cr * n * d + 1e-6)
    if method != "lrsa" and budget is None:
        raise ValueError(f"method={method!r} needs a target_cr (a size to match)")
    sparse_only = method == "lrsa" and math.isinf(p.ratio)  # the plan asks for A alone
    low_rank_only = method == "lrsa" and p.ratio == 0  # B alone: RRR + the ReLU refit
    if low_rank_only and budget is None:
        raise ValueError("ratio=0 (low-rank only) needs a target_cr (a size to fill)")
    r_max = 0 if sparse_only else min(n, d)
    lin = LayerProblem(X, Z, b, "linear")
    admm, refined = None, False
    if method == "svd":
        A, (U, V), m = torch.zeros_like(W), truncated_svd(W, budget // (n + d)), 0
    else:
        fit = StructuredFit(lin)
        cands, order = {0}, torch.arange(d // group)
        if method == "lrsa" and not low_rank_only:
            admm, order, kept_admm = _rank_channels(lin, fit, W, p, group, budget is not None,
                                                    max_iter, tol)
            if budget is None:
                budget = kept_admm * group * n + admm.rank * (n + d)
            m_only = min(d // group, budget // (group * n))
            cands = {m_only} if sparse_only else \
                {0, m_only} | {kept_admm * q // 4 for q in range(1, 5)}
        splits = sorted({_split(budget, m, n, d, group, r_max, p.rank_multiple)
                         for m in cands if m * group * n <= budget})
        if p.target_cr is not None and not sparse_only:  # A alone: see the docstring
            splits = [(m, r) for m, r in splits if r > 0 or m == 0] or splits
        (m, r), refine = _choose(X, Z, b, splits, order, group,
                                 response == "relu" and method == "lrsa", seed)
        A, U, V, _ = fit.fit(_columns(order, m, group), r)
        if refine:
            A, U, V, b = fit.refine_relu(lin.retarget(torch.relu(Z), "relu"), A, U, V)
            refined = True
    r = U.shape[1]
    base = admm if admm is not None else LayerSolution(
        A=A, B=A, U=U, V=V, bias=b, objective=math.nan, history={}, converged=True,
        iterations=0, message=method, response="linear", lam1=0.0, lam2=0.0, t=0.0)
    Y = Z if response == "linear" else torch.relu(Z)
    sol = dataclasses.replace(base, A=A, B=U @ V, U=U, V=V, bias=b, response=response,
                              objective=layer_objective(X, Y, A, U @ V, 0.0, 0.0,
                                                        response=response, bias=b))
    extra = {"choice": "A+B" if m and r else ("A only" if m else "B only"),
             "kept_channels": m, "frac": p.frac if method == "lrsa" else None,
             "method": method, "refined": refined,
             "ranked_by": None if method != "lrsa" else "admm" if admm is not None else "energy",
             "params_compressed": m * group * n + r * (n + d)}
    return sol, extra


def _split(budget, m, n, d, group, r_max, multiple):
    """(kept channels, rank) spending ``budget`` weights with at least ``m`` channels: the
    rank rounded down to a multiple of ``multiple`` (once it reaches one), what that frees
    going to more channels unless ``m`` is 0 (B alone stays B alone)."""
    r = max(0, min(r_max, (budget - m * group * n) // (n + d)))
    if r >= multiple:
        r -= r % multiple
        if m:
            m = min(d // group, (budget - r * (n + d)) // (group * n))
    return m, r


def _columns(order, m, group):
    """The lowered columns of the first ``m`` channels of ``order``."""
    return (order[:m, None] * group + torch.arange(group)).flatten().tolist()


def _rank_channels(lin, fit, W, p, group, loose, max_iter, tol):
    """The ADMM at the plan's lambdas (loosely converged when a budget is given: the
    ranking and the rank are sought, not digits). Returns (solution, channel order, number
    of channels it keeps): first the channels A keeps, by the l2 norm of their columns,
    then the rest by their share of the full least-squares fit's energy. Where the loose
    ADMM alone would cost more than ``ADMM_MAX_MACS`` multiply-adds (its M-step is n d^2),
    the energy ranks all channels and no solution is returned."""
    n, d = W.shape
    energy = (fit.W_full.pow(2) * torch.diagonal(fit.G)).sum(0).reshape(-1, group).sum(1)
    if loose and LOOSE_ITERATIONS * n * d * d > ADMM_MAX_MACS:  # e.g. AlexNet's fc6, fc7
        return None, torch.argsort(energy, descending=True), 0
    scale = max(float(torch.linalg.vector_norm(lin.C, dim=0).mean()), 1e-12)
    lam1 = p.frac * scale
    lam2 = math.inf if math.isinf(p.ratio) else p.ratio * lam1
    admm = lin.solve(lam1, lam2, W0=W, max_iter=LOOSE_ITERATIONS if loose else max_iter,
                     tol=1e-2 if loose else tol)
    norms = torch.linalg.vector_norm(admm.A.reshape(n, -1, group), dim=(0, 2)).double()
    order = torch.argsort(norms * energy.max() * 1e3 + energy, descending=True)
    return admm, order, int((norms > 0).sum())


def _choose(X, Z, b, splits, order, group, relu, seed):
    """Pick the (kept channels, rank) split whose exact fit on 80 % of the samples has the
    smallest error on the other 20 % (post-ReLU error when ``relu``), and whether the ReLU
    refinement lowers that held-out error too. One split and no refinement to judge: no
    split is made."""
    if len(splits) == 1 and not relu:
        return splits[0], False
    N = X.shape[1]
    perm = torch.randperm(N, generator=torch.Generator().manual_seed(seed))
    held, used = perm[:max(1, int(HELD_OUT * N))], perm[max(1, int(HELD_OUT * N)):]
    part = LayerProblem(X[:, used], Z[:, used], b, "linear")
    fit = StructuredFit(part)
    Xh, Yh = X[:, held], (torch.relu(Z[:, held]) if relu else Z[:, held])

    def error(A, U, V, bias):
        out = (A + U @ V) @ Xh + bias[:, None]
        return float(torch.linalg.norm(Yh - (torch.relu(out) if relu else out)))

    scored = []
    for m, r in splits:
        A, U, V, _ = fit.fit(_columns(order, m, group), r)
        scored.append((error(A, U, V, b), (m, r), (A, U, V)))
    err, best, (A, U, V) = min(scored, key=lambda t: t[0])
    refine = relu and error(*fit.refine_relu(part.retarget(torch.relu(Z[:, used]), "relu"),
                                             A, U, V)) < err
    return best, refine


def _set_module(model, name, new):
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _layer_key(name, plan, settings):
    return hashlib.sha256(json.dumps({"layer": name, "plan": asdict(plan), **settings},
                                     sort_keys=True, default=str).encode()).hexdigest()[:16]


def _check_resumed(path, saved, expected):
    """A saved layer is reused only if the same code, weights and settings computed it."""
    got = saved.get("provenance", {})
    stale = [k for k in ("code", "weights", "settings") if got.get(k) != expected[k]]
    if stale:
        what = {"code": "another version of lrsa's code", "weights": "other model weights",
                "settings": "other settings or plan"}
        raise ValueError(f"{path} was computed by {' and '.join(what[k] for k in stale)}; "
                         "it cannot be resumed: use a new workdir or delete it")


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


def compress(model, calibration_data, *, plan=None, frac=0.03, ratio=3.0, target_cr=None,
             rank_multiple=1, network_cr=None, network_macs=None, target_speedup=None,
             response="relu", strategy="asymmetric",
             method="lrsa", samples_per_image=10, max_samples=10_000, max_iter=200, tol=1e-3,
             exclude=(), workdir=None, fallback="time", progress=True, seed=0, client=None):
    """Compress ``model`` by layer-wise sparse + low-rank approximation.

    Parameters
    ----------
    model : nn.Module (not modified). Conv2d (groups=1) and Linear layers are approximated.
    calibration_data : a tensor of inputs (split into batches of 128), or an iterable of
        input batches or (inputs, labels) pairs, re-iterated once per layer (a list of
        tensors or a loader with a fixed order).
    plan : dict name -> :class:`LayerPlan`; default :func:`default_plan` with ``frac``,
        ``ratio``, ``target_cr``, ``rank_multiple`` and ``exclude``.
    rank_multiple : every layer's rank in multiples of this (see :class:`LayerPlan`); a
        network budget is then spread in steps of this many ranks.
    network_cr : whole-network stored-size target over all Conv2d/Linear weights; overrides
        the per-layer targets (spread by :func:`_spread_network_target`).
    network_macs : instead, a whole-network multiply-add target (fraction of the Conv2d /
        Linear MACs per image): the same spread weighted by each layer's MACs, so the early
        high-resolution layers, which hold most of them, are cut the most. The speed a
        device gets from it is measured, not promised (see ``fallback``).
    target_speedup : instead, a whole-model speed-up (e.g. 2.2) on the model's device at the
        calibration batch size. The model, each layer and each layer's factored form at a
        grid of sizes are timed in place (about 100 short forward passes per layer), and the
        layers step down in size, greedily, where the least weight energy is lost per second
        saved, until the timed sum meets the speed-up (see :func:`_speedup_spread`); a
        layer that runs no faster factored stays as it is. ValueError, naming the best
        speed-up the timings allow, where the target is out of reach. The whole model is
        timed at the end (``report.speed``: the ``target_speedup``, the
        ``predicted_speedup`` and the measured ``speedups``, with ``fallback="time"``), and a
        UserWarning says so when the measured speed-up falls more than 5 % short.
    response : "relu" (paper) or "linear".
    strategy : "asymmetric" (paper) or "symmetric".
    method : "lrsa" (sparse + low-rank, see :func:`approximate_layer`), or a baseline at the same
        per-layer sizes: "svd" (truncated SVD, data-free) or "rrr" (reduced-rank
        regression, linear response).
    samples_per_image, max_samples : feature sampling (N <= max_samples per layer).
    max_iter, tol : ADMM limits when no target is given (see :func:`lrsa.solve_layer`).
    workdir : folder for resumable runs (None: no files). A layer saved there is reused
        only if the same code, weights and settings computed it (ValueError otherwise).
    fallback : when a layer stays as it was (original weights, ``kind="dense"``) instead
        of factored. "time" (default): the factored layer is kept only where it runs
        faster than the dense one in place, timed interleaved at batch 1 and at the
        calibration batch size on the model's device; at the end the whole model is timed
        against the original the same way and, while it is not faster at both, the
        factored layers that gain least go back to the original (``report.speed``
        records it). "macs": fewer multiply-adds. None: always factored.
    client : dask.distributed.Client, optional
        With ``strategy="symmetric"`` every layer's features come from the original
        network, so the layers are solved in parallel on the client's workers (the model and
        calibration batches sent to each once; :func:`lrsa.parallel.dask_client`); the
        results are the serial ones. The asymmetric strategy needs each layer's
        predecessors first: ValueError.

    Returns
    -------
    (compressed model, :class:`CompressionReport`)
    """
    _check_options(response, strategy, method, fallback, network_cr, network_macs,
                   target_speedup)
    if client is not None and strategy != "symmetric":
        raise ValueError("client solves the symmetric strategy's layers in parallel; the "
                         "asymmetric strategy needs each layer's predecessors first")
    batches = _as_batches(calibration_data)
    first = batch_input(batches[0])
    start = time.perf_counter()
    original = fold_batchnorm(copy.deepcopy(model).eval())
    layers = find_layers(original, first[:1])
    in_shapes, relu_after = _trace(original, first[:1])
    plan, predicted = _network_plan(
        layers, in_shapes, plan,
        dict(frac=frac, ratio=ratio, target_cr=target_cr, rank_multiple=rank_multiple,
             exclude=exclude),
        network_cr=network_cr, network_macs=network_macs, target_speedup=target_speedup,
        original=original, batch_shape=tuple(first.shape))
    # fallback is left out: it decides how A + U V is run, not what A, U, V are
    settings = dict(response=response, strategy=strategy, method=method,
                    samples_per_image=samples_per_image, max_samples=max_samples,
                    max_iter=max_iter, tol=tol, seed=seed,
                    calibration_images=sum(len(batch_input(b)) for b in batches))
    run = _Run(original=original, compressed=copy.deepcopy(original), batches=batches,
               settings=settings, in_shapes=in_shapes, relu_after=relu_after,
               fallback=fallback, batch_sizes=sorted({1, int(first.shape[0])}))
    if workdir is not None:
        run.work = Path(workdir)
        run.work.mkdir(parents=True, exist_ok=True)
        run.provenance = {"code": code_version(), "weights": weights_fingerprint(model)}
    if client is not None:
        run.pending = _submit_layers(client, run, layers, plan)
    report = CompressionReport(strategy=strategy, response=response, method=method)
    with progress_bar(progress, len(layers), "compress", unit="layer") as bar:
        for idx, (name, mod) in enumerate(layers):
            row = _compress_layer(run, idx, name, mod, plan.get(name, LayerPlan(skip=True)))
            report.layers.append(row)
            bar.update(1)
            bar.set_postfix(layer=name,
                            cr=f"{row['params_compressed'] / row['params_original']:.2f}")
    if fallback == "time":
        report.speed = _never_slower(original, run.compressed, run.factored, report,
                                     tuple(first.shape[1:]), run.batch_sizes)
        if target_speedup is not None:
            _check_speedup(report.speed, target_speedup, predicted, int(first.shape[0]))
    report.seconds = time.perf_counter() - start
    return run.compressed, report


def _check_options(response, strategy, method, fallback, network_cr, network_macs,
                   target_speedup):
    if response not in ("relu", "linear"):
        raise ValueError(f"response must be 'relu' or 'linear', got {response!r}")
    if strategy not in ("asymmetric", "symmetric"):
        raise ValueError(f"strategy must be 'asymmetric' or 'symmetric', got {strategy!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if fallback not in ("time", "macs", None):
        raise ValueError(f"fallback must be 'time', 'macs' or None, got {fallback!r}")
    given = [k for k, v in (("network_cr", network_cr), ("network_macs", network_macs),
                            ("target_speedup", target_speedup)) if v is not None]
    if len(given) > 1:
        raise ValueError(f"give one of network_cr, network_macs, target_speedup, not {given}")
    if target_speedup is not None and not target_speedup > 1:
        raise ValueError(f"target_speedup must be > 1, got {target_speedup}")


def _network_plan(layers, in_shapes, plan, defaults, *, network_cr, network_macs,
                  target_speedup, original, batch_shape):
    """The per-layer plan: the given one (checked against the model) or the default one,
    with the network budget (at most one of ``network_cr``, ``network_macs``,
    ``target_speedup``; see :func:`compress`) spread over it, and the speed-up the
    timings predict (None without a ``target_speedup``)."""
    if plan is None:
        plan = default_plan(layers, **defaults)
    unknown = set(plan) - {n for n, _ in layers}
    if unknown:
        raise ValueError(f"plan names layers the model does not have: {sorted(unknown)}")
    for name, lp in plan.items():  # 0 would never grow a rank in the spread
        q = lp.rank_multiple
        if isinstance(q, bool) or not isinstance(q, int) or q < 1:
            raise ValueError(f"rank_multiple must be a positive integer, got {q!r} "
                             f"(layer {name})")
    if network_cr is not None:
        _spread_network_target(plan, layers, network_cr)
    if network_macs is not None:
        macs = {n: estimate_macs(m, in_shapes[n]) for n, m in layers}
        _spread_network_target(plan, layers, network_macs, macs, "network_macs",
                               "multiply-adds")
    if target_speedup is None:
        return plan, None
    return plan, _speedup_spread(plan, layers, in_shapes, original, batch_shape,
                                 target_speedup)


def _check_speedup(speed, target, predicted, batch):
    """Record the target and the prediction in ``speed``; warn when the measured speed-up
    at the calibration batch size falls more than 5 % short of ``target``."""
    speed.update(target_speedup=target, predicted_speedup=predicted)
    reached = speed["speedups"][f"b{batch}"]
    if reached < 0.95 * target:
        warnings.warn(f"target_speedup={target}: the compressed model measured {reached:.2f}x "
                      f"at batch {batch}, though its layers timed alone predicted "
                      f"{predicted:.2f}x (they do not add up exactly in the whole model); a "
                      "higher target_speedup gets closer", stacklevel=3)


def _speedup_spread(plan, layers, in_shapes, original, batch_shape, speedup):
    """Per-layer sizes for a whole-model ``speedup`` at ``batch_shape``, chosen greedily on
    measured times (the rank selection of Zhang et al. 2016, on timings instead of MACs).

    The model and each approximable layer (dense) are timed on the model's device, and each
    layer's factored form U V (random factors, in place) at the stored fractions
    :data:`TIME_GRID` against the dense layer, interleaved (the ratio is what a slow spell
    on a shared machine leaves intact), at the calibration batch size and at batch 1; a
    size counts only where it is faster at both, as the speed fall-back demands. Every
    layer starts dense; while the summed time misses the goal, the layer whose
    next smaller size loses the least weight energy per second saved steps down, where a
    layer's energy at rank r is the share of ||W||_F^2 its r leading singular values hold
    (data-free), and the objective is the product of the layers' shares. A layer that never
    steps down stays as it is. Returns the predicted speed-up.
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
            raise ValueError(f"target_speedup={speedup} is out of reach here: at batch {batch} "
                             f"the layers that may be approximated take "
                             f"{sum(o[0][1] for o in options.values()) / total:.0%} of the "
                             f"model's time, and at the smallest sizes timed their factored "
                             f"forms give at most {total / spent:.2f}x")
        _, n, i = min(moves)
        spent -= options[n][at[n]][1] - options[n][i][1]
        at[n] = i
    for n, opts in options.items():
        plan[n].target_cr, plan[n].skip = opts[at[n]][0], at[n] == 0
    return total / spent


def _size_options(mod, shape, seconds):
    """[(stored fraction, seconds, log energy)] of ``mod`` at input ``shape``: dense first,
    then the sizes of :data:`TIME_GRID` that run faster factored, largest first."""
    dense = seconds(mod, shape)
    log_energy = _log_energy(mod)
    return [(1.0, dense, 0.0)] + [(cr, dense * f, log_energy(cr)) for cr, f in
                                  zip(TIME_GRID, _factored_fractions(mod, shape)) if f < 1][::-1]


def _next_faster(options, i):
    """Index of the largest size after ``i`` that runs faster than option ``i`` (or None)."""
    return next((j for j in range(i + 1, len(options)) if options[j][1] < options[i][1]), None)


def _rank_at(cr, n, d):
    """The rank (at least 1) whose U V stores the fraction ``cr`` of an n x d weight."""
    return max(1, round(cr * n * d / (n + d)))


def _energy_shares(mod):
    """Share of ||W||_F^2 that the leading singular values of ``mod``'s lowered weight hold:
    entry r - 1 for rank r."""
    share = torch.linalg.svdvals(lowered_weight(mod).double()).pow(2).cumsum(0)
    return (share / share[-1].clamp_min(1e-300)).tolist()


def _log_energy(mod):
    """cr -> log of the share of ||W||_F^2 that the rank :func:`_rank_at` (cr) truncated SVD
    of ``mod``'s lowered weight keeps."""
    n, d = lowered_weight(mod).shape
    share = _energy_shares(mod)
    return lambda cr: math.log(max(share[min(_rank_at(cr, n, d), len(share)) - 1], 1e-300))


#: stored fractions of a layer at which :func:`_speedup_spread` times its factored form
TIME_GRID = (0.02, 0.05, 0.1, 0.15, 0.22, 0.32, 0.45, 0.6)


def _factored_fractions(mod, shape):
    """Time of ``mod``'s factored form U V (random factors) over its own, timed interleaved
    in place, at each stored fraction of :data:`TIME_GRID`, at batch ``shape[0]``; made
    non-decreasing (a larger rank is never assumed faster). Where the form is not faster at
    batch 1 too, the fraction is 1 (the speed fall-back would keep the layer dense)."""
    W = lowered_weight(mod)
    n, d = W.shape
    cls = SparseLowRankLinear if isinstance(mod, nn.Linear) else SparseLowRankConv2d
    fractions = []
    for cr in TIME_GRID:
        r = _rank_at(cr, n, d)
        layer = cls.from_factors(mod, torch.zeros_like(W), torch.randn(n, r), torch.randn(r, d))
        ratios = [1 / compare_latency(mod, layer, (b, *shape[1:]),
                                      repeats=TIME_REPEATS)["speedup"]
                  for b in sorted({1, shape[0]})]
        f = ratios[-1] if max(ratios) < 1 else 1.0
        fractions.append(max(f, fractions[-1] if fractions else 0.0))
    return fractions


@dataclass
class _Run:
    """What every layer of one :func:`compress` call shares."""

    original: nn.Module
    compressed: nn.Module
    batches: list
    settings: dict
    in_shapes: dict
    relu_after: set
    fallback: str | None
    batch_sizes: list
    work: Path | None = None
    provenance: dict | None = None
    factored: dict = field(default_factory=dict)  # name -> its worst in-place speed-up
    pending: dict = field(default_factory=dict)  # name -> a Dask future of _layer's result


def _compress_layer(run, idx, name, mod, p):
    """One layer: kept as it is, resumed from the work folder, or solved (and saved); then
    swapped into ``run.compressed`` factored, or left original where that is faster.
    Returns its report row."""
    row = _initial_row(name, mod)
    n, d = row.n, row.d
    if _kept(p):
        return row
    done = run.work / f"layer_{idx:03d}.pt" if run.work is not None else None
    expected = None if done is None else {
        **run.provenance, "settings": _layer_key(name, p, run.settings)}
    if done is not None and done.exists():
        saved = torch.load(done, weights_only=True, map_location="cpu")
        _check_resumed(done, saved, expected)
        A, U, V, b = (saved[k] for k in ("A", "U", "V", "bias"))
        row = LayerReport(**saved["row"])
    else:
        row, (A, U, V, b) = (run.pending[name].result() if name in run.pending else _layer(
            run.original, run.compressed, name, mod, run.batches, p, _response(run, name),
            run.settings["method"], run.settings["strategy"], run.settings, row))
        if done is not None:
            atomic_torch_save({"row": dict(row), "A": A.cpu(), "U": U.cpu(), "V": V.cpu(),
                               "bias": b.cpu(), "provenance": expected}, done)
    choice = _build(mod, A, U, V, b, run.in_shapes[name], run.fallback, run.batch_sizes)
    if choice.kind != "factored" and row.choice == "A+B" and run.fallback == "time":
        row, (A, U, V, b), choice = _low_rank_instead(run, name, mod, p, row,
                                                      (A, U, V, b), choice)
    # a layer that runs no faster factored keeps its original weights: a dense A + U V
    # would cost the same and only add the approximation's error
    _set_module(run.compressed, name, choice.module if choice.kind == "factored"
                else copy.deepcopy(mod))
    row = dataclasses.replace(row, kind=choice.kind, layer_speedups=choice.speedups)
    if choice.kind == "factored":
        run.factored[name] = min((choice.speedups or {0: 0}).values())
    else:
        row.params_compressed = n * d
    return row


def _low_rank_instead(run, name, mod, p, row, factors, choice):
    """(row, factors, choice) of B alone at the same stored size where A + B ran no faster
    than the dense layer: the sparse part is a convolution of its own over few input
    channels, which costs a CPU more time than its multiply-adds (VGG-16's conv2-2 under
    a multiply-add budget: rank 48 and 17 kept channels not faster, rank 48 alone 2.3x
    faster timed alone). Kept only if it is faster; otherwise the dense layer stays."""
    n, d = row.n, row.d
    alone = dataclasses.replace(p, ratio=0.0, target_cr=row.params_compressed / (n * d))
    new_row, new_factors = _layer(run.original, run.compressed, name, mod, run.batches, alone,
                              _response(run, name), "lrsa", run.settings["strategy"],
                              run.settings, _initial_row(name, mod))
    new_choice = _build(mod, *new_factors, run.in_shapes[name], run.fallback,
                        run.batch_sizes)
    if new_choice.kind != "factored":
        return row, factors, choice
    return (dataclasses.replace(new_row, choice="B only (A+B not faster)",
                                seconds=row.seconds + new_row.seconds), new_factors,
            new_choice)


def _initial_row(name, mod):
    """The report row of a layer kept as it is."""
    n, d = lowered_weight(mod).shape
    return LayerReport(name=name, type=type(mod).__name__, n=n, d=d, params_original=n * d,
                       rank=min(n, d), nonzero_columns=d, params_compressed=n * d)


def _kept(p):
    """Whether a plan keeps its layer as it is."""
    return p.skip or (p.target_cr is not None and p.target_cr >= 1)


def _needs_solve(run, idx, p):
    """Whether _compress_layer will solve this layer (not kept, not resumed)."""
    return not _kept(p) and not (run.work is not None
                                 and (run.work / f"layer_{idx:03d}.pt").exists())


def _response(run, name):
    """The response a layer is fitted to: the run's where a ReLU follows, else linear."""
    return run.settings["response"] if name in run.relu_after else "linear"


def _symmetric_layer(original, batches, name, mod, p, resp, method, settings, row):
    """:func:`_layer` under the symmetric strategy, which never reads the compressed
    network (argument order for :func:`lrsa.parallel.submit_all`: shared ones first)."""
    return _layer(original, None, name, mod, batches, p, resp, method, "symmetric", settings,
                  row)


def _submit_layers(client, run, layers, plan):
    """Every layer that needs a solve, submitted to ``client`` (symmetric strategy: the
    features come from the original network, so the solves are independent)."""
    plans = {name: plan.get(name, LayerPlan(skip=True)) for name, _ in layers}
    todo = [(name, mod) for idx, (name, mod) in enumerate(layers)
            if _needs_solve(run, idx, plans[name])]
    items = [(name, mod, plans[name], _response(run, name), run.settings["method"],
              run.settings, _initial_row(name, mod)) for name, mod in todo]
    futures = submit_all(client, _symmetric_layer, (run.original, run.batches), items)
    return {name: f for (name, _), f in zip(todo, futures)}


def _never_slower(original, compressed, factored, report, sample_shape, batch_sizes,
                  repeats=10):
    """Time the whole compressed model against the original (interleaved, each batch size);
    while it is not faster at all of them, put back the original layer where the factored
    one gained least. Returns the measured speed-ups and the layers reverted."""
    rows = {r["name"]: r for r in report.layers}
    reverted = []
    order = sorted(factored, key=factored.get)  # least gain first
    while True:
        speedups = {f"b{b}": compare_latency(original, compressed, (b, *sample_shape),
                                             repeats=repeats)["speedup"] for b in batch_sizes}
        if min(speedups.values()) > 1 or not order:
            return {"speedups": speedups, "faster": min(speedups.values()) > 1,
                    "reverted": reverted}
        name = order.pop(0)
        _set_module(compressed, name, copy.deepcopy(original.get_submodule(name)))
        rows[name].kind, rows[name].params_compressed = "dense", rows[name].params_original
        reverted.append(name)


def _layer(original, compressed, name, mod, batches, p, resp, method, strategy, settings,
           row):
    """Approximate one layer: features, solve, the report row. Returns (row, factors)."""
    t0 = time.perf_counter()
    W, b = lowered_weight(mod), layer_bias(mod)
    n, d = W.shape
    group = columns_per_channel(mod)
    if method == "svd":  # data-free: no features needed
        X = torch.zeros(d, 1, dtype=W.dtype)
        Z = torch.zeros(n, 1, dtype=W.dtype)
    else:
        feats = collect_features(
            original, [name], batches, samples_per_image=settings["samples_per_image"],
            max_samples=settings["max_samples"], seed=settings["seed"],
            inputs_from=compressed if strategy == "asymmetric" else None)[name]
        X, Z = feats.X, feats.Z
        W, b = W.to(X), b.to(X)
    sol, extra = approximate_layer(X, Z, W, b, p, resp, group, method, settings["max_iter"],
                        settings["tol"], settings["seed"])
    rel = None
    if method != "svd":  # sol.objective is the data term ||Y - r(W X + b)||^2 / 2N
        Y = torch.relu(Z) if resp == "relu" else Z
        rel = math.sqrt(2 * X.shape[1] * sol.objective) / max(float(torch.linalg.norm(Y)),
                                                               1e-30)
    m, r = extra["kept_channels"], sol.rank
    row = dataclasses.replace(
        row, kind="factored", response=resp, cr_a=m * group / d, cr_b=r * (n + d) / (n * d),
        cr=extra["params_compressed"] / (n * d), rank=r, nonzero_columns=m * group,
        rel_error=rel, seconds=time.perf_counter() - t0, converged=bool(sol.converged),
        **extra)
    return row, (sol.A, sol.U, sol.V, sol.bias)


def _build(mod, A, U, V, b, x_shape, fallback, batch_sizes):
    """The module that runs A + U V: factored, or dense where that is faster (see
    :func:`lrsa.layers.choose_implementation`)."""
    if fallback is None:
        cls = SparseLowRankLinear if isinstance(mod, nn.Linear) else SparseLowRankConv2d
        return ImplementationChoice(cls.from_factors(mod, A, U, V, b), "factored", 0.0, 0.0,
                                    "none")
    return choose_implementation(mod, A, U, V, x_shape, bias=b, method=fallback,
                                 batch_sizes=batch_sizes)


_RELUS = {torch.relu, torch.relu_, torch.nn.functional.relu, torch.Tensor.relu,
          torch.Tensor.relu_}


class _ReluInputs(torch.overrides.TorchFunctionMode):
    """Records the storage of every tensor a ReLU is applied to, however it is called:
    ``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()``, in place or not."""

    def __init__(self):
        super().__init__()
        self.ptrs = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in _RELUS:
            x = args[0] if args else (kwargs or {}).get("input")
            if isinstance(x, torch.Tensor):
                self.ptrs.add(x.data_ptr())
        return func(*args, **(kwargs or {}))


def _trace(model, x):
    """One traced forward: the input shape (batch 1) of every Conv2d/Linear, and the names
    of those whose output goes straight into a ReLU (through Identity modules, e.g. folded
    BatchNorms), whether the model applies it as a module or as a function."""
    shapes, outputs, hooks = {}, {}, []

    def record(name):
        def pre(mod, args):
            shapes.setdefault(name, tuple(args[0].shape))  # returns None: inputs unchanged

        def post(mod, args, out):
            outputs[name] = out  # kept alive, so no later tensor reuses its memory
        return pre, post

    for name, m in model.named_modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            pre, post = record(name)
            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    relus = _ReluInputs()
    try:
        with torch.no_grad(), relus:
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return shapes, {name for name, out in outputs.items() if out.data_ptr() in relus.ptrs}


def _spread_network_target(plan, layers, target, costs=None, name="network_cr",
                           unit="weights"):
    """Per-layer sizes meeting ``target`` times the network's total cost, chosen greedily
    (the rank selection of Zhang et al. 2016, data-free): every layer that may be
    approximated starts at rank 1, and the one whose next rank adds the most log weight
    energy (the share of ||W||_F^2 its leading singular values hold) per unit of cost takes
    it, until the budget is spent. So the objective is the product of the layers' shares;
    since each share is concave in the rank, the greedy steps are optimal where the steps
    cost the same. A layer whose rank reaches its dense size stays dense (``target_cr`` 1).
    With a plan's ``rank_multiple`` q, its layer starts at rank q and grows q ranks a step.

    ``costs``: name -> the layer's cost at full size, its weights by default; its
    multiply-adds for a MAC budget (a factored layer's MACs scale with its stored size, so
    one rank costs (n + d) / (n d) of them).

    Measured on VGG-16 (CIFAR-10, 5.08x fewer parameters, top-1 before fine-tuning, same
    calibration images): this spread gave reduced-rank regression 87.76 % and lrsa 87.72 %
    where the earlier rule CR_l ~ 1/sqrt(weights_l) (the pattern of the paper's Table I)
    gave 86.94 % and 87.04 %; see the README.
    """
    if not 0 < target <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {target}")
    modules = dict(layers)
    sizes = costs if costs is not None else {n: lowered_weight(m).numel() for n, m in layers}
    total = sum(sizes.values())
    kept = sum(sizes[n] for n in sizes if plan[n].skip)
    free = [n for n in sizes if not plan[n].skip]
    if not free or target * total <= kept:
        raise ValueError(f"{name}={target} is out of reach: the skipped layers alone "
                         f"hold {kept / total:.1%} of the {unit}")
    shapes = {n: lowered_weight(modules[n]).shape for n in free}
    per_rank = {n: (nn_ + d) / (nn_ * d) for n, (nn_, d) in shapes.items()}  # of n d
    step = {n: sizes[n] * per_rank[n] for n in free}
    shares = {n: _energy_shares(modules[n]) for n in free}
    full = {n: min(len(shares[n]), nn_ * d // (nn_ + d)) for n, (nn_, d) in shapes.items()}
    rank = {n: min(plan[n].rank_multiple, full[n]) for n in free}
    budget, spent = target * total - kept, sum(rank[n] * step[n] for n in free)
    if spent > budget:
        raise ValueError(f"{name}={target} is out of reach: the smallest rank (1, or the plan's "
                         "rank_multiple) on every layer that may be approximated already "
                         f"takes {(spent + kept) / total:.1%} of the {unit}")

    def grown(n):  # the layer's next rank
        return min(rank[n] + plan[n].rank_multiple, full[n])

    def gain(n):  # log energy added by the next rank step, per unit of cost
        share, r = shares[n], rank[n]
        return (math.log(max(share[grown(n) - 1], 1e-300))
                - math.log(max(share[r - 1], 1e-300))) / ((grown(n) - r) * step[n])

    heap = [(-gain(n), n) for n in free if rank[n] < full[n]]
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        cost = (grown(n) - rank[n]) * step[n]
        if spent + cost > budget:
            continue  # its next step no longer fits; cheaper layers' may
        spent += cost
        rank[n] = grown(n)
        if rank[n] < full[n]:
            heapq.heappush(heap, (-gain(n), n))
    for n in free:
        plan[n].target_cr = 1.0 if rank[n] >= full[n] else rank[n] * per_rank[n]


#: :func:`finetune`'s default gradient-norm cap
MAX_GRAD_NORM = 10.0


def finetune(model, loader, *, epochs, lr=1e-3, teacher=None, alpha=0.5, temperature=4.0,
             feature_weight=0.0, bf16=False, dropout=False, progress=False, seed=0,
             checkpoint=None, on_epoch_end=None, warmup_epochs=0.0,
             max_grad_norm=MAX_GRAD_NORM):
    """Fine-tune a compressed model keeping its structure: zero columns stay zero (masks
    re-applied after every step), factors stay factors (they are separate modules).

    With a ``teacher`` (the uncompressed network) the loss is a :class:`lrsa.train.Distillation`
    of its logits (weight ``alpha``, temperature ``temperature``) and, if ``feature_weight`` > 0,
    of its outputs at every approximated layer; without one, cross-entropy on the labels.

    ``dropout=False`` (default) switches the model's nn.Dropout off while training: the
    refit layers keep fewer inputs with larger weights, and dropout's noise on them blows
    up the logits (measured on VGG-16 at CR 16%: training-mode loss 27 against 0.38 in eval
    mode, and fine-tuning collapsed to 18% top-1). The Dropout modules are restored after.

    ``max_grad_norm`` (default :data:`MAX_GRAD_NORM`; ``None``: no cap) caps the gradients'
    total norm at every step. A compressed network has no BatchNorm left (folded) and can
    start near the edge of stability, where each step's overshoot feeds the next: on the
    demo's CNN at lr 1e-3, logit distillation's gradient norm grew 5.6, 14, 37, 141, 271 in
    five steps and the model ended at 54 % top-1 (from 95 %; with the cap, 94.7 %); NIN at
    lr 1e-2 reached NaN by step 8. Healthy runs stay below the cap almost always (measured
    norms: VGG-16 at lr 1e-3 3-6, NIN at lr 3e-3 4-17 over the first steps, then 4-9).

    ``seed``, ``checkpoint`` (resumable), ``on_epoch_end`` and ``warmup_epochs`` (linear
    warm-up to ``lr``) are :func:`lrsa.train.train`'s.
    Under ``torchrun`` the processes fine-tune together (DistributedDataParallel, see
    :mod:`lrsa.distributed`): give a loader made with ``make_loader(..., shard=True)``; every
    process keeps the structure and runs its own copy of the teacher on its share of a batch.
    """
    criterion = None
    if teacher is not None:
        approximated = [n for n, m in model.named_modules()
                        if isinstance(m, (SparseLowRankConv2d, SparseLowRankLinear))]
        criterion = Distillation(teacher, model, alpha=alpha, temperature=temperature,
                                 features=approximated if feature_weight > 0 else (),
                                 feature_weight=feature_weight, bf16=bf16)
    saved = {m: m.p for m in model.modules() if isinstance(m, nn.Dropout)} if not dropout \
        else {}
    for m in saved:
        m.p = 0.0
    try:
        return train(model, loader, epochs=epochs, lr=lr, bf16=bf16, progress=progress,
                     seed=seed, param_hook=keep_structure_hook(model), criterion=criterion,
                     checkpoint=checkpoint, on_epoch_end=on_epoch_end,
                     warmup_epochs=warmup_epochs, max_grad_norm=max_grad_norm)
    finally:
        for m, p in saved.items():
            m.p = p
        if criterion is not None:
            criterion.close()


def save_compressed(model, path, *, arch=None, model_kwargs=None, report=None):
    """Write a compressed model (state dict + the structure needed to rebuild it) atomically.

    ``arch`` and ``model_kwargs`` name the :func:`lrsa.models.get_model` factory that built
    the original network, so :func:`load_compressed` can rebuild it alone; for a model of
    your own leave ``arch`` out and give ``load_compressed`` its constructor.
    """
    from .layers import model_structure
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"format": "lrsa-compressed-1", "arch": arch,
                  "model_kwargs": dict(model_kwargs or {}),
                  "structure": model_structure(model),
                  "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                  "report": json.dumps(report.to_dict() if report is not None else None)},
                 path)


def load_compressed(path, build=None):
    """Rebuild a model written by :func:`save_compressed` (loaded with weights_only=True).

    Parameters
    ----------
    path : str or os.PathLike
    build : callable or None
        ``build()`` returns the *uncompressed* network (any weights): needed for a model
        saved without ``arch``, and used instead of the registered factory when given.

    Returns (model, report dict or None). Raises ValueError for a file of another kind, a
    file without ``arch`` and no ``build``, or a state dict that does not fit the recorded
    structure.
    """
    from .layers import apply_structure
    from .models import get_model
    obj = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(obj, dict) or obj.get("format") != "lrsa-compressed-1":
        raise ValueError(f"{path} is not a compressed model written by lrsa.save_compressed "
                         "(for original weights use lrsa.models.load_checkpoint)")
    if build is None and obj["arch"] is None:
        raise ValueError(f"{path} holds a model of your own (saved without arch): pass "
                         "load_compressed(path, build=...) a function that builds it")
    model = build() if build is not None else get_model(obj["arch"], **obj["model_kwargs"])
    if not isinstance(model, nn.Module):
        raise ValueError(f"build() returned a {type(model).__name__}, not a torch.nn.Module")
    model = fold_batchnorm(model.eval())
    apply_structure(model, obj["structure"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not fit the recorded structure: {exc}") from exc
    return model, json.loads(obj["report"])
