r"""Implementation labs: the student writes a function the lesson then uses; the check runs
it on a case of its own and compares with the library or a closed form (nbgrader's hidden
tests try further cases). The protocol is :mod:`lrsa.course.checking`'s: a function left at
``...`` is "not answered", a wrong one "not yet" with a hint, and under nbgrader both raise.
"""

from __future__ import annotations

import math

import numpy as np

from ..prox import prox_l21
from ..utils import as_numpy
from .checking import not_answered, numbers, unanswered, verdict

# torch is imported inside the labs that use it

__all__ = ["factored_conv_lab", "group_lasso_columns_lab", "mcnemar_lab", "n_m_projection_lab",
           "oats_lab", "paired_interval_lab", "reduced_rank_regression_lab", "timing_harness_lab"]


# ----------------------------------------------------------------- 09 evaluating honestly

def _lab_pair():
    """The visible case of the evaluation labs: two models on 600 images, 60 discordant."""
    rng = np.random.default_rng(2019)
    a = (rng.random(600) < 0.82).astype(np.uint8)
    b = a.copy()
    flip = rng.choice(600, 60, replace=False)
    b[flip] = 1 - b[flip]
    return a, b


def mcnemar_lab(function):
    r"""Lab: ``function(correct_a, correct_b)`` returns McNemar's exact two-sided p-value of
    two models on the same images (0/1 arrays), to 1e-9, on one pair of models.

    Reference: :func:`lrsa.evaluation.mcnemar` (SciPy's binomial distribution).
    """
    from ..evaluation import mcnemar
    a, b = _lab_pair()
    answer = function(a, b)
    if answer is None or unanswered(answer):
        return not_answered("McNemar's exact test", "code")
    ok = math.isclose(float(answer), mcnemar(a, b)["p_value"], rel_tol=1e-9, abs_tol=1e-12)
    return verdict("McNemar's exact test", ok,
                    "only the discordant images count: b right only under A, c only under B; "
                    "p = min(1, 2 P[Binomial(b + c, 1/2) <= min(b, c)]).")


def paired_interval_lab(function):
    r"""Lab: ``function(correct_a, correct_b, replicates, seed)`` returns ``(mean, low,
    high)``: the difference of the two accuracies in points and its 95 % percentile
    interval from a bootstrap that resamples the images with replacement, the same images
    for both models. The mean to 1e-9; the ends within 0.3 points of the reference's
    (bootstrap noise with 2,000 replicates is about 0.1).

    Reference: :func:`lrsa.evaluation.bootstrap_interval` with one seed.
    """
    from ..evaluation import bootstrap_interval
    a, b = _lab_pair()
    answer = function(a, b, 2000, 0)
    if answer is None or unanswered(answer):
        return not_answered("paired bootstrap interval", "code")
    ref = bootstrap_interval([a, b], replicates=2000)
    got = numbers(answer, (3,), "paired bootstrap interval")
    ok = (math.isclose(got[0], ref.mean, abs_tol=1e-9)
          and np.allclose(got[1:], [ref.low, ref.high], atol=0.3))
    return verdict("paired bootstrap interval", ok,
                    "draw one set of image indices per replicate and use it for both models: "
                    "the replicate is the mean of 100 * (a - b) over those images; take the "
                    "2.5 and 97.5 percentiles of the replicates.")


# ----------------------------------------------------------------- 10 transformers

def _tensors(answer, title, names):
    """A lab's tuple of matrices as float64 tensors, or a TypeError naming what to return."""
    import torch
    count = len(names.split(","))
    if not (isinstance(answer, (tuple, list)) and len(answer) == count):
        raise TypeError(f"{title}: return ({names}), got {type(answer).__name__}")
    return [torch.as_tensor(as_numpy(T), dtype=torch.float64) for T in answer]


def _lab_layer(seed=2025):
    """The visible case of the transformer labs: a 12 x 16 weight and correlated inputs."""
    import torch
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(16, 400, generator=g, dtype=torch.float64)
    X = X * torch.linspace(0.2, 3.0, 16, dtype=torch.float64)[:, None]
    X[1] += X[0]
    return torch.randn(12, 16, generator=g, dtype=torch.float64), X @ X.T / 400


def n_m_projection_lab(function):
    r"""Lab: ``function(W)`` returns the projection of ``W`` (rows x d, d a multiple of 4)
    onto 2:4 sparsity: in every block of 4 consecutive entries of a row the 2 of largest
    magnitude stay, the other 2 become 0.

    Reference: :func:`lrsa.prox.project_n_m` (checked by brute force in the tests).
    """
    from ..prox import project_n_m
    W, _ = _lab_layer()
    answer = function(W.clone())
    if answer is None or unanswered(answer):
        return not_answered("2:4 projection", "code")
    got = numbers(answer, tuple(W.shape), "2:4 projection")
    return verdict("2:4 projection", np.allclose(got, as_numpy(project_n_m(W, 2, 4))),
                    "reshape each row into blocks of 4 (W.reshape(rows, -1, 4)), find the 2 "
                    "largest |entries| of each block (torch.topk on W.abs()), keep those and "
                    "zero the rest, reshape back.")


def oats_lab(function):
    r"""Lab: ``function(W, G, rank, nonzeros, rounds)`` runs OATS's alternating
    thresholding and returns ``(S, U, V)``: with :math:`D = \operatorname{diag}(G)^{1/2}`,
    from S = 0, ``rounds`` times :math:`L \leftarrow [WD - S]_r` (truncated SVD),
    :math:`S \leftarrow` the ``nonzeros`` largest entries of :math:`WD - L`; then S and the
    factors of L divided by D. Compared through the product S + U V.

    Reference: :func:`lrsa.decompose.oats` with ``sparsity="unstructured"``.
    """
    import torch
    from ..decompose import oats
    W, G = _lab_layer()
    answer = function(W.clone(), G.clone(), 3, 40, 10)
    if answer is None or unanswered(answer):
        return not_answered("OATS", "code")
    S, U, V = _tensors(answer, "OATS", "S, U, V")
    ref = oats(W, G, 3, "unstructured", 40, rounds=10)
    ok = (S.shape == W.shape and int((S != 0).sum()) <= 40
          and torch.allclose(S + U @ V, ref[0] + ref[1] @ ref[2], atol=1e-8))
    return verdict("OATS", ok,
                    "scale first: WD = W * D[None, :] with D = sqrt(diag(G)); in each round "
                    "take the rank-r SVD of WD - S, then keep the `nonzeros` largest "
                    "|entries| of WD - L; divide S and V (not U) by D at the end.")


# ----------------------------------------------------------------- 07 and 08: implementation labs

def _lab_regression(seed=2016):
    """The visible case of the regression lab: correlated inputs, a rank-5 map and noise."""
    import torch
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(12, 300, generator=g, dtype=torch.float64)
    X[1] += 0.9 * X[0]
    W = torch.randn(8, 5, generator=g, dtype=torch.float64) @ torch.randn(
        5, 12, generator=g, dtype=torch.float64)
    return X, W @ X + 0.1 * torch.randn(8, 300, generator=g, dtype=torch.float64)


def reduced_rank_regression_lab(function):
    r"""Lab: ``function(X, Z, rank)`` returns ``(U, V)``, U (n x r) and V (r x d), whose
    product minimizes :math:`\|Z - UVX\|_F` over rank r: the least-squares map
    :math:`W_\star = ZX^\top(XX^\top)^{-1}`, projected onto the top r left singular
    vectors :math:`P_r` of its fitted responses :math:`W_\star X`:
    :math:`UV = P_rP_r^\top W_\star`. Compared through the fit error, to 1e-8 relative.

    Reference: :func:`lrsa.baselines.reduced_rank_regression`.
    """
    import torch
    from ..baselines import reduced_rank_regression
    X, Z = _lab_regression()
    answer = function(X.clone(), Z.clone(), 3)
    if answer is None or unanswered(answer):
        return not_answered("reduced-rank regression", "code")
    U, V = _tensors(answer, "reduced-rank regression", "U, V")
    ref_U, ref_V = reduced_rank_regression(X, Z, 3)
    ok = (U.shape == (8, 3) and V.shape == (3, 12) and math.isclose(
        float(torch.linalg.norm(Z - U @ V @ X)), float(torch.linalg.norm(Z - ref_U @ ref_V @ X)),
        rel_tol=1e-8))
    return verdict("reduced-rank regression", ok,
                    "fit W* = Z X^T (X X^T)^-1 first (torch.linalg.solve), then take the top r "
                    "left singular vectors P of W* X; U = P, V = P^T W* is one answer.")


def factored_conv_lab(function):
    r"""Lab: ``function(conv, U, V)`` returns a module computing ``conv`` with its lowered
    weight replaced by U V: a k x k convolution with r filters (V reshaped to
    (r, c, k, k), the conv's stride and padding, no bias) followed by a 1 x 1 convolution
    with U (n x r) and the conv's bias. Compared with the dense convolution of weight
    U V on one input, to 1e-5.
    """
    import torch
    from torch.nn import functional as F
    g = torch.Generator().manual_seed(8)
    conv = torch.nn.Conv2d(6, 10, 3, stride=2, padding=1)
    U, V = torch.randn(10, 4, generator=g), torch.randn(4, 6 * 9, generator=g)
    x = torch.randn(2, 6, 9, 9, generator=g)
    answer = function(conv, U.clone(), V.clone())
    if answer is None or unanswered(answer):
        return not_answered("factored convolution", "code")
    if not callable(answer):
        raise TypeError(f"factored convolution: return a module, got {type(answer).__name__}")
    with torch.no_grad():
        want = F.conv2d(x, (U @ V).reshape(conv.weight.shape), conv.bias, stride=2, padding=1)
        got = answer(x)
    ok = tuple(got.shape) == tuple(want.shape) and torch.allclose(got, want, atol=1e-5)
    return verdict("factored convolution", ok,
                    "nn.Conv2d(c, r, k, stride, padding, bias=False) with weight "
                    "V.reshape(r, c, k, k), then nn.Conv2d(r, n, 1) with weight "
                    "U.reshape(n, r, 1, 1) and the conv's bias, in an nn.Sequential.")

def _planted_columns(seed=7, n=5, d=10, support=(1, 4, 6, 8)):
    """A layer whose responses use only the input columns ``support``: X (d x 400), Z."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(d, 400)) * np.linspace(0.5, 2.0, d)[:, None]
    W = np.zeros((n, d))
    W[:, list(support)] = rng.normal(size=(n, len(support))) + np.sign(
        rng.normal(size=(n, len(support))))
    return X, W @ X + 0.1 * rng.normal(size=(n, 400))


def _group_lasso_reference(X, Z, lam, iters):
    """Proximal gradient on the group lasso from A = 0, then least squares on its support."""
    N = X.shape[1]
    G, C = X @ X.T / N, Z @ X.T / N
    L = np.linalg.eigvalsh(G)[-1]
    A = np.zeros((Z.shape[0], X.shape[0]))
    for _ in range(iters):
        A = prox_l21(A - (A @ G - C) / L, lam / L)
    support = np.flatnonzero(np.linalg.norm(A, axis=0) > 0)
    refit = np.zeros_like(A)
    if len(support):
        refit[:, support] = np.linalg.lstsq(X[support].T, Z.T, rcond=None)[0].T
    return refit


def group_lasso_columns_lab(function):
    r"""Lab: ``function(X, Z, lam, iters)`` returns A (n x d): ``iters`` proximal-gradient
    steps on :math:`\tfrac{1}{2N}\|Z - AX\|_F^2 + \lambda\sum_j\|A_{:,j}\|_2` from A = 0
    with step 1/L (L the largest eigenvalue of :math:`G = XX^\top/N`), then the least-squares
    refit of Z on the columns kept. Checked on a layer whose responses use 4 of its 10
    columns: the same kept columns as the reference and the same A to 1e-8.

    Reference: the same loop on :func:`lrsa.prox.prox_l21`, the refit by
    ``numpy.linalg.lstsq``.
    """
    X, Z = _planted_columns()
    answer = function(X.copy(), Z.copy(), 1.0, 300)
    if answer is None or unanswered(answer):
        return not_answered("group-lasso column pruning", "code")
    got = numbers(answer, Z.shape[:1] + X.shape[:1], "group-lasso column pruning")
    ref = _group_lasso_reference(X, Z, 1.0, 300)
    same_columns = np.array_equal(np.linalg.norm(got, axis=0) > 0,
                                  np.linalg.norm(ref, axis=0) > 0)
    return verdict("group-lasso column pruning", same_columns and np.allclose(got, ref,
                                                                               atol=1e-8),
                    "the gradient of the data term is A G - C with C = Z X^T / N; step "
                    "A <- prox_l21(A - (A G - C) / L, lam / L); then solve least squares for "
                    "the kept columns only and leave the others at zero.")


class _FakeTimer:
    """Two functions whose calls take known, varying times on a clock of their own."""

    def __init__(self, seed, repeats):
        rng = np.random.default_rng(seed)
        self.durations = {"f": list(2.0 + 0.3 * rng.random(repeats) ** 3),
                          "g": list(1.0 + 0.2 * rng.random(repeats) ** 3)}
        self.now, self.calls = 0.0, []

    def clock(self):
        return self.now

    def call(self, name):
        self.calls.append(name)
        self.now += self.durations[name][len([c for c in self.calls if c == name]) - 1]

    def f(self):
        self.call("f")

    def g(self):
        self.call("g")


def _speedup_reference(t_f, t_g, replicates=2000, seed=0):
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(t_f), (replicates, len(t_f)))
    boot = np.median(t_f[idx], axis=1) / np.median(t_g[idx], axis=1)
    return [np.median(t_f) / np.median(t_g), t_f.min() / t_g.min(),
            np.percentile(boot, 2.5), np.percentile(boot, 97.5)]


def timing_harness_lab(function):
    r"""Lab: ``function(f, g, repeats, clock)`` calls ``f`` then ``g``, ``repeats`` times,
    each timed with ``clock()`` before and after, and returns ``(speedup, min_speedup, low,
    high)``: the ratio of f's median time to g's, the ratio of their minima, and a 95 %
    percentile-bootstrap interval of the median ratio (the repeats resampled as pairs).
    Checked with a fake clock: the calls must alternate f, g, f, g; the two ratios to 1e-9,
    the interval's ends within 0.04 of the reference's (200 reference draws with other
    seeds differed by at most 0.02 here).
    """
    timer = _FakeTimer(12, 31)
    answer = function(timer.f, timer.g, 31, timer.clock)
    if answer is None or unanswered(answer):
        return not_answered("interleaved timing", "code")
    got = numbers(answer, (4,), "interleaved timing")
    ref = _speedup_reference(np.array(timer.durations["f"]), np.array(timer.durations["g"]))
    ok = (timer.calls == ["f", "g"] * 31 and np.allclose(got[:2], ref[:2], atol=1e-9)
          and np.allclose(got[2:], ref[2:], atol=0.04))
    return verdict("interleaved timing", ok,
                    "call f then g in each repeat (no warm-up here), reading clock() around "
                    "each call; medians and minima of each list; for the interval draw the "
                    "repeat indices with replacement, the same indices for f and g.")
