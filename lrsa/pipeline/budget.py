"""What a compressed network may cost, and how that is spread over its layers.

A :class:`Budget` names one whole-network target (stored size, multiply-adds or a measured
speed-up), one size for every layer, or none (the lambdas decide each layer's size, the
paper's mode); per-layer :class:`LayerPlan` objects are what every budget becomes, and what
a user gives to control each layer. :func:`network_plan` turns either into the per-layer
plan of one model, refusing a wrong combination in one place.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import asdict, dataclass

from torch import nn

from ..layers import estimate_macs
from .layer import energy_shares, lowered_weight
from .speed import spread_by_speedup


#: the rules that spread a whole-network size over the layers (:class:`Budget` ``spread``)
SPREADS = ("energy", "sqrt")


@dataclass(frozen=True)
class Budget:
    """What the compressed network may cost: one of ``size``, ``macs``, ``speedup``,
    ``layer_size``, or ``size`` and ``macs`` together; with none of them the lambdas set
    each layer's size (the paper's mode).
    A wrong value or combination is refused here, with a ValueError that names it.

    Parameters
    ----------
    size : float, optional
        Whole-network stored size, a fraction in (0, 1] of the original Conv2d / Linear
        weights, spread over the layers as ``spread`` says.
    macs : float, optional
        A fraction of the multiply-adds per image, spread by the same rule with each
        layer's MACs as its cost (cuts the early high-resolution layers most); alone, or
        with ``size``, when both limits hold at once (the ``"fast"`` preset, ``PRESETS``).
    speedup : float, optional
        Instead, a whole-model speed-up (> 1) on the model's device at the calibration batch
        size, spread on measured layer times (``lrsa.pipeline.speed.spread_by_speedup``);
        timed, so it varies between runs and machines.
    layer_size : float, optional
        Instead, the same stored fraction in (0, 1] for every approximated layer.
    spread : {"energy", "sqrt"}
        How ``size`` is spread over the layers. "energy" (default): greedily, by the weight
        energy each rank adds (``spread_by_energy``; the two compared on VGG-16:
        docs, Benchmarks, ``benchmarks/frontier.py``). "sqrt": CR_l ~ 1/sqrt(weights_l)
        (``spread_by_sqrt``), a heuristic after the trend of the paper's Table I (large
        layers keep small shares), not the paper's rule: in Table I CR_l sqrt(weights_l) runs
        from about 110 to 530, and fc3 keeps 24 % where this rule keeps it whole. For
        comparison (benchmarks/frontier.py, notebook 07).
    relative_lam1 : float
        lam1 relative to each layer's gradient scale (with a size, the ranking ADMM's).
    ratio : float
        lam2 / lam1 (paper 2.5-3; ``math.inf``: A alone; 0: B alone, which needs a size).
    rank_multiple : int
        Ranks in multiples of this (see :class:`LayerPlan`).
    exclude : sequence of str
        Names of layers to keep as they are, besides the first layer and 1x1 convs.
    all_layers : bool
        Also approximate the first layer (conv or linear) and the 1x1 convs, which the paper
        (and the default) keep. On NIN, whose 1x1 layers hold most of the time in the faster
        channels_last layout, no speed-up near the paper's comes without them
        (docs/benchmarks.md).
    """

    size: float | None = None
    macs: float | None = None
    speedup: float | None = None
    layer_size: float | None = None
    spread: str = "energy"
    relative_lam1: float = 0.03
    ratio: float = 3.0
    rank_multiple: int = 1
    exclude: tuple = ()
    all_layers: bool = False

    def __post_init__(self):
        given = [k for k in ("size", "macs", "speedup", "layer_size")
                 if getattr(self, k) is not None]
        if len(given) > 1 and given != ["size", "macs"]:
            raise ValueError(f"a Budget takes one of size, macs, speedup, layer_size (or size "
                             f"and macs together); got {' and '.join(given)}")
        for k in ("size", "macs", "layer_size"):
            v = getattr(self, k)
            if v is not None and not 0 < v <= 1:
                raise ValueError(f"Budget.{k} is a fraction in (0, 1], got {v}")
        if self.spread not in SPREADS:
            raise ValueError(f"Budget.spread is one of {SPREADS}, got {self.spread!r}")
        if self.spread != "energy" and (self.size is None or self.macs is not None):
            raise ValueError(f"Budget.spread={self.spread!r} spreads a size alone: give size "
                             "(and no macs)")
        if self.speedup is not None and not self.speedup > 1:
            raise ValueError(f"Budget.speedup must be > 1, got {self.speedup}")
        if not self.relative_lam1 > 0:
            raise ValueError(f"Budget.relative_lam1 must be > 0, got {self.relative_lam1}")
        if not self.ratio >= 0:
            raise ValueError(f"Budget.ratio must be >= 0 (inf: A alone), got {self.ratio}")
        if self.ratio == 0 and not given:
            raise ValueError("Budget.ratio=0 (low-rank only) needs a size to fill: give size, "
                             "macs, speedup or layer_size")
        _check_rank_multiple(self.rank_multiple, "Budget")
        if isinstance(self.exclude, str):
            raise ValueError(f"Budget.exclude is a list of layer names, got the string "
                             f"{self.exclude!r}")
        object.__setattr__(self, "exclude", tuple(self.exclude))
        if not isinstance(self.all_layers, bool):
            raise ValueError(f"Budget.all_layers is True or False, got {self.all_layers!r}")

    def to_dict(self):
        return asdict(self)

    @classmethod
    def preset(cls, name, **changes):
        """The budget ``PRESETS`` names ``name``, with ``changes`` to its fields (e.g.
        ``Budget.preset("fast", size=0.25)``)."""
        if name not in PRESETS:
            raise ValueError(f"no Budget preset {name!r}; presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **changes})


#: named budgets, ``Budget.preset(name)`` in Python, ``--preset name`` on the command line
PRESETS = {
    # The paper's VGG-16 operating point (4.44x fewer weights, 2.2x faster) on a CPU: the
    # size limit alone leaves the high-resolution early layers, half the time at batch 128,
    # whole; the multiply-add limit factors them. B alone (no sparse part: on 32x32 and
    # 16x16 maps a sparse part is a convolution of its own that costs more time than its
    # multiply-adds), ranks in multiples of 16 (a CPU computes output channels in blocks of
    # its vector width). MACs 0.33, not 0.3: picked on the test set before the evaluation
    # protocol (one run each; docs/benchmarks.md, "The paper's point"), not re-made on
    # validation. The protocol's figures at this budget (3 seeds, intervals): the ablation,
    # docs/benchmarks.md, "Does the sparse part pay?".
    "fast": dict(size=0.2, macs=0.33, ratio=0.0, rank_multiple=16),
}


def _check_rank_multiple(q, where):
    if isinstance(q, bool) or not isinstance(q, int) or q < 1:  # 0 would never grow a rank
        raise ValueError(f"rank_multiple must be a positive integer, got {q!r} ({where})")


@dataclass
class LayerPlan:
    """How one layer is approximated.

    relative_lam1 : lam1 relative to the layer's gradient scale (with size, the ADMM that ranks
    the input channels runs at it).
    ratio : lam2 / lam1 (math.inf: sparse only, no low-rank part; 0: low-rank only, no
    sparse part, which needs a size).
    size : stored size of this layer as a fraction of n d, in (0, 1]; >= 1 keeps it.
    skip : leave the layer as it is.
    rank_multiple : the low-rank part's rank is a multiple of this where it is at least
    this (what a budget cannot buy in whole multiples goes to kept channels, or is left
    unspent by B alone). A CPU convolution computes its output channels in blocks of the
    vector width, so a rank just above a multiple of 16 costs the next block's time.
    """

    relative_lam1: float = 0.03
    ratio: float = 3.0
    size: float | None = None
    skip: bool = False
    rank_multiple: int = 1
    sized_by: str | None = None  # why a whole-network spread stopped here (in the report)


def matching_plan(report):
    """Per-layer plans that give each layer the stored size it has in ``report`` (a
    :class:`CompressionReport` or its ``to_dict()``): what compares another method with an
    lrsa run at equal size, layer by layer (layers it kept stay kept)."""
    rows = report.layers if hasattr(report, "layers") else report["layers"]
    return {r["name"]: LayerPlan(skip=True) if r["kind"] != "factored" else
            LayerPlan(size=r["params_compressed"] / r["params_original"]) for r in rows}


def default_plan(layers, *, relative_lam1=0.03, ratio=3.0, size=None, rank_multiple=1,
                 exclude=(), all_layers=False):
    """The paper's defaults: skip the first layer and 1x1 convs (unless ``all_layers``) and
    the layers named in ``exclude``; every other layer A + B.

    The first layer, a conv (the paper's) or a linear one (a transformer's patch or token
    embedding), has few inputs, few weights and feeds everything after it (on the digits
    ViT, cutting it made fine-tuning diverge: docs, Benchmarks, "Transformers").

    The paper keeps its FC layers sparse only; here they get A + B like the convolutions,
    since dropping whole input features of an FC layer costs more accuracy per stored
    weight than a low-rank part (with a size target, A alone only where a plan asks for it
    with ``ratio=math.inf``).

    layers : ordered (name, module) pairs (see :func:`lrsa.features.find_layers`).
    """
    plan = {}
    for i, (name, mod) in enumerate(layers):
        one_by_one = isinstance(mod, nn.Conv2d) and tuple(mod.kernel_size) == (1, 1)
        skip = name in exclude or (not all_layers and (i == 0 or one_by_one))
        plan[name] = LayerPlan(relative_lam1=relative_lam1, ratio=ratio, size=size, skip=skip,
                               rank_multiple=rank_multiple)
    return plan


def network_plan(layers, in_shapes, budget, *, original, batch_shape):
    """The per-layer plan of one model for ``budget`` (a :class:`Budget`, or a dict name ->
    :class:`LayerPlan`, checked against the model), and the speed-up the timings predict
    (None unless ``budget.speedup``)."""
    if isinstance(budget, dict):
        unknown = set(budget) - {n for n, _ in layers}
        if unknown:
            raise ValueError(f"the plan names layers the model does not have: {sorted(unknown)}")
        for name, lp in budget.items():
            if not isinstance(lp, LayerPlan):
                raise ValueError(f"the plan's entry for {name!r} is a {type(lp).__name__}, "
                                 "not a LayerPlan")
            _check_rank_multiple(lp.rank_multiple, f"layer {name}")
        return {name: budget.get(name, LayerPlan(skip=True)) for name, _ in layers}, None
    plan = default_plan(layers, relative_lam1=budget.relative_lam1, ratio=budget.ratio,
                        size=budget.layer_size, rank_multiple=budget.rank_multiple,
                        exclude=budget.exclude, all_layers=budget.all_layers)
    unknown = set(budget.exclude) - set(plan)
    if unknown:
        raise ValueError(f"Budget.exclude names layers the model does not have: "
                         f"{sorted(unknown)}")
    macs = [] if budget.macs is None else [
        (budget.macs, {n: estimate_macs(m, in_shapes[n]) for n, m in layers}, "Budget.macs",
         "multiply-adds")]
    if budget.size is not None and budget.spread == "sqrt":
        plan = spread_by_sqrt(plan, layers, budget.size)
    elif budget.size is not None:
        plan = spread_by_energy(plan, layers, budget.size, also=macs)
    elif macs:
        plan = spread_by_energy(plan, layers, *macs[0])
    if budget.speedup is None:
        return plan, None
    return spread_by_speedup(plan, layers, in_shapes, original, batch_shape, budget.speedup)


def spread_by_energy(plan, layers, target, costs=None, name="Budget.size",
                          unit="weights", also=()):
    """Set the per-layer sizes in ``plan`` (changed in place and returned) to meet ``target``
    times the network's total cost, chosen greedily
    (adapted from the rank selection of Zhang et al. 2016, which maximizes the product of the
    layers' energies under a multiply-add budget, starting at full rank and removing ranks
    greedily, and weighs the energy of the layer's *responses*; here ranks are added, the
    cost may be stored weights, and the energy is the singular values of W, so no pass over
    the data; reference: X. Zhang, J. Zou, K. He, J. Sun, "Accelerating Very Deep
    Convolutional Networks for Classification and Detection", IEEE TPAMI 38(10), 2016):
    every layer that may be approximated starts at rank 1, and the one whose next rank adds
    the most log weight energy (the share of ||W||_F^2 its leading singular values hold) per
    unit of cost takes it, until the budget is spent. So the objective is the product of the
    layers' shares; since each share is concave in the rank, the greedy steps are optimal
    where the steps cost the same. A layer whose rank reaches its dense size stays dense
    (``size`` 1).
    With a plan's ``rank_multiple`` q, its layer starts at rank q and grows q ranks a step.

    ``costs``: name -> the layer's cost at full size, its weights by default; its
    multiply-adds for a MAC budget (a factored layer's MACs scale with its stored size, so
    one rank costs (n + d) / (n d) of them).

    ``also``: further limits ``(target, costs, name, unit)`` met at the same time (a size
    and a multiply-add budget together, :class:`Budget`). A step's cost is then the sum
    over the limits of its share of each budget, and a step is taken only where it fits all
    of them: a layer whose ranks are dear in one limit (the high-resolution early layers in
    multiply-adds) grows less. With one limit this is the rule above.

    Measured on VGG-16 (CIFAR-10, 5.08x fewer parameters, top-1 before fine-tuning, same
    calibration images): this spread gave reduced-rank regression 87.76 % and lrsa 87.72 %
    where the earlier rule CR_l ~ 1/sqrt(weights_l) (a heuristic after the trend of the
    paper's Table I, :func:`spread_by_sqrt`) gave 86.94 % and 87.04 % (the docs' benchmarks
    page).
    """
    modules = dict(layers)
    shapes = {n: lowered_weight(m).shape for n, m in layers}
    weights = {n: shape.numel() for n, shape in shapes.items()}
    limits = [(target, costs if costs is not None else weights, name, unit), *also]
    budgets = [_free_budget(plan, c, t, nm, u) for t, c, nm, u in limits]
    free = budgets[0][0]
    per_rank = {n: sum(shapes[n]) / shapes[n].numel() for n in free}  # (n + d) / (n d)
    # one rank's cost in each limit, and as a share of the budgets (what the greedy weighs)
    steps = [{n: c[n] * per_rank[n] for n in free} for _, c, _, _ in limits]
    share = {n: sum(step[n] / b[1] for step, b in zip(steps, budgets)) for n in free}
    shares = {n: energy_shares(modules[n]) for n in free}
    full = {n: min(len(shares[n]), shapes[n].numel() // sum(shapes[n])) for n in free}
    rank = {n: min(plan[n].rank_multiple, full[n]) for n in free}
    spent = [sum(rank[n] * step[n] for n in free) for step in steps]
    for s, (_, budget, kept, total), (t, _, nm, u) in zip(spent, budgets, limits):
        if s > budget:
            raise ValueError(f"{nm}={t} is out of reach: the smallest rank (1, or the plan's "
                             "rank_multiple) on every layer that may be approximated already "
                             f"takes {(s + kept) / total:.1%} of the {u}")

    def grown(n):  # the layer's next rank
        return min(rank[n] + plan[n].rank_multiple, full[n])

    def gain(n):  # log energy added by the next rank step, per share of the budgets
        energy, r = shares[n], rank[n]
        return (math.log(max(energy[grown(n) - 1], 1e-300))
                - math.log(max(energy[r - 1], 1e-300))) / ((grown(n) - r) * share[n])

    heap = [(-gain(n), n) for n in free if rank[n] < full[n]]
    heapq.heapify(heap)
    while heap:
        _, n = heapq.heappop(heap)
        cost = [(grown(n) - rank[n]) * step[n] for step in steps]
        if any(s + c > b[1] for s, c, b in zip(spent, cost, budgets)):
            continue  # its next step no longer fits; cheaper layers' may
        spent = [s + c for s, c in zip(spent, cost)]
        rank[n] = grown(n)
        if rank[n] < full[n]:
            heapq.heappush(heap, (-gain(n), n))
    for n in free:
        plan[n].size = 1.0 if rank[n] >= full[n] else rank[n] * per_rank[n]
        over = [f"{nm}={t}" for s, step, b, (t, _, nm, _) in zip(spent, steps, budgets, limits)
                if s + (grown(n) - rank[n]) * step[n] > b[1]]
        plan[n].sized_by = (f"{' and '.join(nm for _, _, nm, _ in limits)} spread: "
                            + ("whole, its rank reached the dense size" if rank[n] >= full[n]
                               else f"the size of rank {rank[n]}, the next step would "
                                    f"exceed "
                                    f"{' and '.join(over)}"))
    return plan


def _free_budget(plan, weights, target, name, unit):
    """(layers that may be approximated, what they may hold, what the kept ones hold, the
    total) for a spread of ``target`` of ``weights`` (name -> weight count); a ValueError
    when it is out of reach."""
    if not 0 < target <= 1:
        raise ValueError(f"{name} must be in (0, 1], got {target}")
    total = sum(weights.values())
    kept = sum(weights[n] for n in weights if plan[n].skip)
    free = [n for n in weights if not plan[n].skip]
    if not free or target * total <= kept:
        raise ValueError(f"{name}={target} is out of reach: the skipped layers alone "
                         f"hold {kept / total:.1%} of the {unit}")
    return free, target * total - kept, kept, total


def spread_by_sqrt(plan, layers, target):
    r"""Set the per-layer sizes in ``plan`` (changed in place and returned) to meet ``target``
    of the network's weights by a :math:`1/\sqrt{\cdot}` heuristic: layer :math:`l` keeps
    :math:`CR_l = \min(1, c / \sqrt{n_l d_l})` of its weights (a large layer a small share),
    with :math:`c` found by bisection so that the stored total meets the target. It follows the
    trend of the paper's Table I, not its numbers: there :math:`CR_l \sqrt{n_l d_l}` runs from
    about 110 to 530 instead of being one :math:`c`, fc3 keeps 24 % where this rule keeps it
    whole, and over the convolutions :math:`CR_l` falls about as :math:`(n_l d_l)^{-0.34}`. Kept
    to compare with :func:`spread_by_energy` (benchmarks/frontier.py, notebook 07)."""
    weights = {n: lowered_weight(m).numel() for n, m in layers}
    free, budget, _, _ = _free_budget(plan, weights, target, "Budget.size", "weights")

    def stored(c):
        return sum(min(1.0, c / math.sqrt(weights[n])) * weights[n] for n in free)

    lo, hi = 0.0, max(math.sqrt(weights[n]) for n in free)  # at hi every layer is whole
    for _ in range(100):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if stored(mid) <= budget else (lo, mid)
    for n in free:
        plan[n].size = min(1.0, lo / math.sqrt(weights[n]))
    return plan
