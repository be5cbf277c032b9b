r"""One layer: from sampled features to A + U V (the structure choice of :func:`compress`).

:func:`approximate_layer` keeps from the paper's Algorithm 1 what it decides well, the
ranking of the input channels (the ADMM on the linear response), and replaces what it does
not: the weights on a chosen structure are exact least-squares fits, the split of the
layer's budget between kept channels (A) and rank (B) is chosen on held-out samples, and
the fit is refined on the post-ReLU response where that lowers the held-out error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..baselines import truncated_svd
from ..decompose import entry_split, entry_storage, fit_sparse_low_rank, oats
from ..objective import layer_objective, parse_n_m
from ..solution import LayerSolution
from ..solver import LayerProblem
from ..structured_fit import StructuredFit


@dataclass(frozen=True)
class SolverSettings:
    """How each layer's features are sampled and its problem solved.

    Parameters
    ----------
    samples_per_image : int
        Feature positions sampled per calibration image (see
        :func:`lrsa.features.collect_features`).
    max_samples : int
        The cap on a layer's samples N.
    max_iter, tol : int, float
        ADMM limits in the lambda mode (no size target; see :func:`lrsa.solver.solve_layer`); under
        a size target the ranking ADMM runs loosely.
    seed : int
        The sampling and the held-out split.
    """

    samples_per_image: int = 10
    max_samples: int = 10_000
    max_iter: int = 200
    tol: float = 1e-3
    seed: int = 0

    def __post_init__(self):
        for name in ("samples_per_image", "max_samples", "max_iter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"SolverSettings.{name} must be a positive integer, got {v!r}")
        if not self.tol > 0:
            raise ValueError(f"SolverSettings.tol must be > 0, got {self.tol!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"SolverSettings.seed must be an integer, got {self.seed!r}")


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


def rank_at(size, n, d):
    """The rank (at least 1) whose U V stores the fraction ``size`` of an n x d weight."""
    return max(1, round(size * n * d / (n + d)))


def energy_shares(mod):
    """Share of ||W||_F^2 that the leading singular values of ``mod``'s lowered weight hold:
    entry r - 1 for rank r."""
    share = torch.linalg.svdvals(lowered_weight(mod).double()).pow(2).cumsum(0)
    return (share / share[-1].clamp_min(1e-300)).tolist()


def log_energy(mod):
    """size -> log of the share of ||W||_F^2 that the rank :func:`rank_at` (size) truncated
    SVD of ``mod``'s lowered weight keeps."""
    n, d = lowered_weight(mod).shape
    share = energy_shares(mod)
    return lambda size: math.log(max(share[min(rank_at(size, n, d), len(share)) - 1], 1e-300))


METHODS = ("lrsa", "svd", "rrr", "oats")
ENTRY_SHARES = (0.25, 0.5, 0.75)  # shares of the budget tried for unstructured A with B
HELD_OUT = 0.2  # share of the samples that judges the structure and the ReLU refinement
LOOSE_ITERATIONS = 40  # ADMM iterations for ranking channels under a size target
ADMM_MAX_MACS = 2e12  # above this (about 2 min on 2 cores) the ranking uses the energy


def check_sparsity(sparsity, method="lrsa"):
    """A ValueError naming a wrong ``sparsity`` or a method that cannot use it."""
    if sparsity not in ("channel", "unstructured"):
        try:
            parse_n_m(sparsity)
        except ValueError:
            raise ValueError(f"sparsity must be 'channel', 'unstructured' or 'N:M' with "
                             f"integers 0 < N < M (e.g. '2:4'), got {sparsity!r}") from None
    if method == "oats" and sparsity == "channel":
        raise ValueError("method='oats' thresholds single weights: give sparsity="
                         "'unstructured' or an N:M pattern such as '2:4'")


def cannot_take(mod, sparsity):
    """Why ``mod`` cannot carry a sparse part of this kind (None where it can)."""
    if sparsity == "channel":
        return None
    if not isinstance(mod, nn.Linear):
        return (f"kept as it is: sparsity={sparsity!r} is implemented for nn.Linear layers, "
                f"this is a {type(mod).__name__}")
    if sparsity != "unstructured" and mod.in_features % parse_n_m(sparsity)[1]:
        return (f"kept as it is: {sparsity} sparsity needs in_features to be a multiple of "
                f"{parse_n_m(sparsity)[1]}, got {mod.in_features}")
    return None


def approximate_layer(X, Z, W, b, p, response, group, method="lrsa", solver=None,
                      sparsity="channel"):
    """Solve one layer for its plan.

    solver : :class:`SolverSettings` or None (its defaults): the ADMM's ``max_iter`` and
        ``tol``, and the ``seed`` of the held-out split.
    group : columns per input channel (k_h k_w for a conv, 1 for a linear layer): the
        sparse part is stored per kept input channel, so channels are what it keeps.

    Returns a :class:`LayerFit`: the weights and what was chosen (the report row is
    :meth:`lrsa.pipeline.LayerReport.solved` of it).

    ``method="lrsa"``: the ADMM (Algorithm 1, linear response, where the problem is convex)
    ranks the input channels by the l2 norm of their columns of A (``_rank_channels``);
    candidate splits of the budget between kept channels and rank (B only, A only, the
    ADMM's channels in quarters) are fitted exactly (:class:`lrsa.structured_fit.StructuredFit`)
    on 80 % of the samples and judged on the other 20 % (``_choose``); the winner is
    refitted on all samples and, for the ReLU response, refined on the post-ReLU targets
    where that lowered the held-out error. With ``size`` the budget is
    ``size n d`` stored weights; without, the ADMM's own structure sets it.
    With a ``size``, A alone is not a candidate unless the plan's ``ratio`` is inf: it
    can win on held-out layer error and still lose in the network (the figures: docs,
    Honest notes, "The ADMM picks the structure"). Without one (the ADMM's own structure,
    the paper's lambda mode) all candidates stay.
    ``"svd"``: truncated SVD of W (data-free); ``"rrr"``: reduced-rank regression (B
    only, linear response). Both need ``size``.

    ``sparsity`` other than ``"channel"`` (``"unstructured"`` or ``"N:M"``, see
    ``_entry_sparse``): A keeps single weights; ``"lrsa"`` fits each split by
    :func:`lrsa.decompose.fit_sparse_low_rank`, ``"oats"`` by :func:`lrsa.decompose.oats`.
    """
    solver = solver or SolverSettings()
    if sparsity != "channel" and method in ("lrsa", "oats"):
        return _entry_sparse(X, Z, W, b, p, response, sparsity, method, solver.seed)
    n, d = W.shape
    # the small margin: a size given as params / (n d) must not floor to one weight less
    budget = None if p.size is None else int(p.size * n * d + 1e-6)
    if method != "lrsa" and budget is None:
        raise ValueError(f"method={method!r} needs a size to match (LayerPlan.size)")
    sparse_only = method == "lrsa" and math.isinf(p.ratio)  # the plan asks for A alone
    low_rank_only = method == "lrsa" and p.ratio == 0  # B alone: RRR + the ReLU refit
    if low_rank_only and budget is None:
        raise ValueError("ratio=0 (low-rank only) needs a size to fill (LayerPlan.size)")
    r_max = 0 if sparse_only else min(n, d)
    lin = LayerProblem(X, Z, b, "linear")
    admm, refined, heldout = None, False, None
    if method == "svd":
        A, (U, V), m = torch.zeros_like(W), truncated_svd(W, budget // (n + d)), 0
    else:
        fit = StructuredFit(lin)
        cands, order = {0}, torch.arange(d // group)
        if method == "lrsa" and not low_rank_only:
            admm, order, kept_admm = _rank_channels(lin, fit, W, p, group, budget is not None,
                                                    solver.max_iter, solver.tol)
            if budget is None:
                budget = kept_admm * group * n + admm.rank * (n + d)
            m_only = min(d // group, budget // (group * n))
            cands = {m_only} if sparse_only else \
                {0, m_only} | {kept_admm * q // 4 for q in range(1, 5)}
        splits = sorted({_split(budget, m, n, d, group, r_max, p.rank_multiple)
                         for m in cands if m * group * n <= budget})
        if p.size is not None and not sparse_only:  # A alone: see the docstring
            splits = [(m, r) for m, r in splits if r > 0 or m == 0] or splits
        (m, r), refine, heldout = _choose(X, Z, b, splits, order, group,
                                          response == "relu" and method == "lrsa", solver.seed)
        A, U, V, _ = fit.fit(_columns(order, m, group), r)
        if refine:
            A, U, V, b = fit.refine_relu(lin.retarget(torch.relu(Z), "relu"), A, U, V)
            refined = True
    r = U.shape[1]
    return _fit(X, Z, A, U, V, b, response, admm, method=method, choice=_choice(m, r),
                params_compressed=m * group * n + r * (n + d), nonzero_columns=m * group,
                nonzeros=m * group * n, sparsity="channel", kept_channels=m,
                relative_lam1=p.relative_lam1 if method == "lrsa" else None, refined=refined,
                ranked_by=None if method != "lrsa" else "admm" if admm is not None else "energy",
                heldout=heldout)


def _entry_sparse(X, Z, W, b, p, response, sparsity, method, seed):
    """One layer whose A keeps single weights (unstructured or N:M), under ``p.size``.

    The candidate splits of the layer's stored size (:func:`lrsa.decompose.entry_storage`
    counts A's values with their indices): B alone (``ratio`` 0), A alone (``ratio`` inf),
    else B alone and A + B with A given ``ENTRY_SHARES`` of the size (unstructured) or the
    whole N:M pattern (the rest to the rank, if any is left). Each is fitted on 80 % of the
    samples to their least-squares map and judged on the other 20 % (post-ReLU error where
    a ReLU follows), as for channels; the winner is refitted on all samples. There is no
    ReLU refinement for these patterns.
    """
    n, d = W.shape
    if p.size is None:
        raise ValueError(f"sparsity={sparsity!r} needs a size to fill (a Budget with a size, "
                         "or per-layer size)")
    budget = p.size * n * d + 1e-6
    fitter = fit_sparse_low_rank if method == "lrsa" else oats
    shares = [0.0] if p.ratio == 0 else [1.0] if math.isinf(p.ratio) else \
        [0.0, *ENTRY_SHARES] if sparsity == "unstructured" else [0.0, 1.0]
    splits = []
    for share in shares:
        k, r = entry_split(sparsity, budget, share, n, d)
        if (k or r) and (k, r) not in splits:
            splits.append((k, r))
    if not splits:
        raise ValueError(f"a size of {p.size:.3g} leaves no room for A or B in a "
                         f"{n} x {d} layer with sparsity={sparsity!r}")
    held = HeldOut(X, Z, b, response == "relu", seed)
    part = StructuredFit(held.part)
    scored = [(held.error(*fitter(part.W_full, part.G, r, sparsity, k), b), (k, r))
              for k, r in splits]
    (k, r) = min(scored)[1]
    full = StructuredFit(LayerProblem(X, Z, b, "linear"))
    A, U, V = (T.to(X.dtype) for T in fitter(full.W_full, full.G, r, sparsity, k))
    nonzeros = int((A != 0).sum())
    return _fit(X, Z, A, U, V, b, response, method=method, choice=_choice(k, r),
                params_compressed=math.ceil(entry_storage(sparsity, nonzeros, n) + r * (n + d)),
                nonzero_columns=int((A != 0).any(0).sum()), nonzeros=nonzeros,
                sparsity=sparsity,
                heldout=[[kk, rr, held.relative(e)] for e, (kk, rr) in scored])


def _choice(kept, rank):
    """The report's name of a split: ``"A+B"``, ``"A only"`` or ``"B only"``."""
    return "A+B" if kept and rank else ("A only" if kept else "B only")


@dataclass(frozen=True)
class LayerFit:
    """One layer as :func:`approximate_layer` fitted it: the weights it is stored with and
    what was chosen (what its report row says, :meth:`lrsa.pipeline.LayerReport.solved`).

    Attributes
    ----------
    A : (n, d) tensor
        The sparse part (whole zero columns, or single weights for entry sparsity).
    U, V : (n, r), (r, d) tensors
        B = U V.
    bias : (n,) tensor
        The ReLU refinement may move it.
    objective : float
        The data term of the fitted response at (A, U V, bias), ||Y - r((A + U V) X + b)||_F^2 / 2N.
    admm : LayerSolution or None
        Algorithm 1's solution where it ranked the input channels (its lambdas, history,
        convergence); None for B alone, SVD, RRR and entry sparsity.
    method : str
        ``"lrsa"``, ``"oats"``, ``"svd"`` or ``"rrr"``.
    choice : str
        The split of the size: ``"A+B"``, ``"A only"`` or ``"B only"``.
    params_compressed : int
        Values stored: A's (with their index cost for entry sparsity) and r (n + d).
    nonzero_columns, nonzeros : int
        Columns of A that hold a nonzero, and A's nonzero entries.
    sparsity : str
        ``"channel"``, ``"unstructured"`` or ``"N:M"``.
    kept_channels : int or None
        Input channels A keeps (channel sparsity only).
    relative_lam1 : float or None
        The plan's lambda1 scale (lrsa's channel fits only).
    refined : bool
        The ReLU refinement was kept.
    ranked_by : str or None
        What ranked the input channels: ``"admm"`` or ``"energy"`` (lrsa's channel fits).
    heldout : list or None
        ``[kept, rank, relative error]`` of each split judged on the held-out samples.
    """

    A: torch.Tensor
    U: torch.Tensor
    V: torch.Tensor
    bias: torch.Tensor
    objective: float
    admm: LayerSolution | None
    method: str
    choice: str
    params_compressed: int
    nonzero_columns: int
    nonzeros: int
    sparsity: str
    kept_channels: int | None = None
    relative_lam1: float | None = None
    refined: bool = False
    ranked_by: str | None = None
    heldout: list | None = None

    @property
    def rank(self):
        return self.U.shape[1]

    @property
    def converged(self):
        """The ADMM's flag; True where no ADMM ran."""
        return True if self.admm is None else bool(self.admm.converged)


def _fit(X, Z, A, U, V, b, response, admm=None, **chosen):
    """A, U V and the bias as a :class:`LayerFit`, with the data term of ``response`` at
    them (``chosen``: the rest of its fields)."""
    Y = Z if response == "linear" else torch.relu(Z)
    objective = float(layer_objective(X, Y, A, U @ V, 0.0, 0.0, response=response, bias=b))
    return LayerFit(A, U, V, b, objective, admm, **chosen)


class HeldOut:
    """A seeded split of a layer's samples: ``part``, the linear problem on the 80 % that
    fits (:class:`LayerProblem`), and :meth:`error` on the ``HELD_OUT`` 20 % that judge
    (post-ReLU when ``relu``)."""

    def __init__(self, X, Z, b, relu, seed):
        perm = torch.randperm(X.shape[1], generator=torch.Generator().manual_seed(seed))
        cut = max(1, int(HELD_OUT * X.shape[1]))
        self.used, held = perm[cut:], perm[:cut]
        self.part = LayerProblem(X[:, self.used], Z[:, self.used], b, "linear")
        self.relu, self.X = relu, X[:, held]
        self.Y = torch.relu(Z[:, held]) if relu else Z[:, held]
        self.scale = max(float(torch.linalg.norm(self.Y)), 1e-30)

    def error(self, A, U, V, bias):
        """||Y - r((A + U V) X + b)||_F on the held-out samples."""
        out = (A + U @ V).to(self.X) @ self.X + bias[:, None]
        return float(torch.linalg.norm(self.Y - (torch.relu(out) if self.relu else out)))

    def relative(self, error):
        """``error`` over the norm of the held-out targets."""
        return error / self.scale


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
    lam1 = p.relative_lam1 * scale
    lam2 = math.inf if math.isinf(p.ratio) else p.ratio * lam1
    admm = lin.solve(lam1, lam2, W0=W, max_iter=LOOSE_ITERATIONS if loose else max_iter,
                     tol=1e-2 if loose else tol)
    norms = torch.linalg.vector_norm(admm.A.reshape(n, -1, group), dim=(0, 2)).double()
    order = torch.argsort(norms * energy.max() * 1e3 + energy, descending=True)
    return admm, order, int((norms > 0).sum())


def _choose(X, Z, b, splits, order, group, relu, seed):
    """Pick the (kept channels, rank) split whose exact fit on 80 % of the samples has the
    smallest error on the other 20 % (post-ReLU error when ``relu``), and whether the ReLU
    refinement lowers that held-out error too. Returns ((kept channels, rank), refine,
    [[kept channels, rank, relative held-out error] for each split], the last None where
    there was nothing to judge: one split and no refinement)."""
    if len(splits) == 1 and not relu:
        return splits[0], False, None
    held = HeldOut(X, Z, b, relu, seed)
    fit = StructuredFit(held.part)
    scored = []
    for m, r in splits:
        A, U, V, _ = fit.fit(_columns(order, m, group), r)
        scored.append((held.error(A, U, V, b), (m, r), (A, U, V)))
    err, best, (A, U, V) = min(scored, key=lambda t: t[0])
    refine = relu and held.error(*fit.refine_relu(
        held.part.retarget(torch.relu(Z[:, held.used]), "relu"), A, U, V)) < err
    return best, refine, [[m, r, held.relative(e)] for e, (m, r), _ in scored]


