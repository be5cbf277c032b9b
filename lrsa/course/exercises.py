r"""Self-checks for the notebooks' exercises: derive, predict, then check.

Each checker takes the student's ``answer`` first, then the objects the exercise is about,
computes the reference answer by a route of its own (a brute-force count, the library's own
accounting, an evaluation of the objective, ...) and prints one line:

* ``answer is ...`` (the placeholder): "not answered yet"; returns None, so a notebook with
  open exercises still runs top to bottom;
* right within the stated tolerance: "correct"; returns True;
* wrong: "not yet" with a hint (never the answer); returns False.

Under nbgrader (``nbgrader autograde`` or ``validate`` set ``NBGRADER_EXECUTION`` in the
kernel's environment) an unanswered exercise raises :class:`NotAnswered` and a wrong one
:class:`WrongAnswer`, so the check cell (an autograded cell of one point) scores zero; a
right one prints "correct" and scores its point. An answer of the wrong kind or shape raises
``TypeError`` / ``ValueError`` saying what was expected.
"""

from __future__ import annotations

import math
import os

import numpy as np

# torch and the modules built on it are imported inside the checks that use them, so that
# the checks of notebooks 01-02 (NumPy only) run where torch is not installed
from .. import paper
from ..admm import he_yuan_correction
from ..prox import prox_l21, svt
from ..utils import as_numpy

__all__ = ["NotAnswered", "WrongAnswer", "amdahl_bound", "amdahl_speedup", "break_even_rank",
           "combined_cr", "equal_size_rank", "factored_conv_lab", "first_possible_difference",
           "he_yuan_step", "lambda_max", "mac_fraction", "macs_saved", "mcnemar_lab",
           "midpoint_gap", "moreau_residual", "n_m_projection_lab", "network_mac_fraction",
           "oats_lab", "paired_interval_lab", "paper_network_cr", "prox_frobenius",
           "reduced_rank_regression_lab", "relu_term_all_dead", "segment_ratio",
           "soft_term_gradient", "soft_term_limit", "spread_and_method_gaps", "sqrt_spread_share",
           "stored_parameters", "surviving_columns", "svt_rank", "uv_mac_speedup"]


class NotAnswered(AssertionError):
    """An exercise still at its placeholder ``...``, checked under nbgrader."""


class WrongAnswer(AssertionError):
    """A wrong answer, checked under nbgrader."""


def _grading():
    """Whether nbgrader runs this kernel (autograde or validate): checks then raise."""
    return os.environ.get("NBGRADER_EXECUTION") in ("autograde", "validate")


def _not_answered(title, what="answer"):
    message = f"{title}: not answered yet (replace ... with your {what})."
    if _grading():
        raise NotAnswered(message)
    print(message)


def _unanswered(answer):
    return answer is Ellipsis or (isinstance(answer, (tuple, list))
                                  and any(a is Ellipsis for a in answer))


def _numbers(answer, shape, title):
    """The answer as a float array of the reference's shape, or a clear error."""
    if isinstance(answer, (str, bytes)) or callable(answer):
        raise TypeError(f"{title}: the answer must be a number or an array of numbers, "
                        f"got {type(answer).__name__}")
    try:
        got = as_numpy(answer)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{title}: the answer must be a number or an array of numbers, "
                        f"got {answer!r}") from exc
    if got.shape != tuple(shape):
        want = "a single number" if shape == () else f"shape {tuple(shape)}"
        raise ValueError(f"{title}: expected {want}, got shape {got.shape}")
    return got


def _verdict(title, ok, hint):
    message = f"{title}: correct." if ok else f"{title}: not yet. Hint: {hint}"
    if not ok and _grading():
        raise WrongAnswer(message)
    print(message)
    return bool(ok)


def _compare(title, answer, reference, hint, *, atol=0.0, rtol=0.0):
    """Shared path of every checker: placeholder, shape check, comparison, one line."""
    if _unanswered(answer):
        return _not_answered(title)
    reference = np.asarray(reference, dtype=float)
    got = _numbers(answer, reference.shape, title)
    return _verdict(title, np.allclose(got, reference, atol=atol, rtol=rtol), hint)


# ----------------------------------------------------------------- 01 proximal operators

def surviving_columns(answer, V, tau):
    r"""How many columns of ``V`` are nonzero after :math:`\operatorname{prox}_{\tau
    \|\cdot\|_{2,1}}`? Exact (an integer).

    Reference: apply :func:`lrsa.prox_l21` and count the nonzero columns of the result.
    """
    kept = int((np.linalg.norm(as_numpy(prox_l21(V, tau)), axis=0) > 0).sum())
    return _compare("surviving columns", answer, kept,
                    "column shrinkage lowers every column norm by tau; which norms stay "
                    "positive?")


def svt_rank(answer, V, tau):
    r"""Rank of :math:`\operatorname{prox}_{\tau\|\cdot\|_*}(V)`. Exact (an integer).

    Reference: ``np.linalg.matrix_rank`` of :func:`lrsa.svt`'s result (an SVD of its own).
    """
    rank = int(np.linalg.matrix_rank(as_numpy(svt(V, tau))))
    return _compare("rank after SVT", answer, rank,
                    "SVT lowers every singular value by tau; count the ones that stay "
                    "positive (np.linalg.svd(V, compute_uv=False)).")


def prox_frobenius(prox_fro, V, taus=None):
    r"""The student's function ``prox_fro(V, tau)`` for
    :math:`\operatorname{prox}_{\tau\|\cdot\|_F}`, tried on ``V`` at several thresholds
    (default: a quarter, a half, one and two times :math:`\|V\|_F`), to 1e-8.

    Reference: :math:`\|X\|_F` is the :math:`\ell_{2,1}` norm of :math:`\operatorname{vec}X`
    seen as a single column, so the prox is :func:`lrsa.prox_l21` of the one-column matrix
    (the closed form to derive: :math:`\max(1 - \tau/\|V\|_F, 0)\,V`).
    """
    title = "prox of tau ||X||_F"
    if _unanswered(prox_fro):
        return _not_answered(title, "function")
    if not callable(prox_fro):
        raise TypeError(f"{title}: the answer must be a function prox_fro(V, tau), got "
                        f"{type(prox_fro).__name__}")
    V = as_numpy(V)
    norm = np.linalg.norm(V)
    for tau in (norm * np.array([0.25, 0.5, 1.0, 2.0]) if taus is None else taus):
        reference = prox_l21(V.reshape(-1, 1), float(tau)).reshape(V.shape)
        got = _numbers(prox_fro(V.copy(), float(tau)), V.shape, title)
        if not np.allclose(got, reference, atol=1e-8):
            return _verdict(title, False, f"wrong at tau = {tau / norm:.2f} ||V||_F. The "
                            "Frobenius norm is the l2 norm of all entries in one vector: "
                            "repeat the derivation of column shrinkage for one column.")
    return _verdict(title, True, "")


def moreau_residual(answer, V, tau):
    r"""Singular values (descending, length :math:`\min(n, d)`) of :math:`V -
    \operatorname{prox}_{\tau\|\cdot\|_*}(V)`, to 1e-8.

    Moreau: :math:`V = \operatorname{prox}_{\tau f}(V) + \Pi_{\tau\mathcal B^\circ}(V)` with
    :math:`\mathcal B^\circ` the unit ball of the dual norm (the spectral norm), so the
    answer is :math:`\min(\sigma_i, \tau)`. Reference: an SVD of ``V - svt(V, tau)``.
    """
    V = as_numpy(V)
    s = np.linalg.svd(V - as_numpy(svt(V, tau)), compute_uv=False)
    return _compare("singular values of V - svt(V, tau)", answer, s,
                    "the residual is the projection onto a ball of the dual norm; what does "
                    "projecting onto {||R||_2 <= tau} do to each singular value?", atol=1e-8)


# ----------------------------------------------------------------- 02 three-block ADMM

def he_yuan_step(answer, B, B_hat, M, M_hat, tau=0.5, alpha=0.75):
    r"""``(B_plus, M_plus)``: the He-Yuan correction (paper eq. 13) of :math:`B` and
    :math:`M` applied in the essential coordinates :math:`(B, -M, \Lambda)`, to 1e-10.

    Reference: :func:`lrsa.he_yuan_correction` on :math:`(B, -M)`, the sign flipped back.
    """
    B, B_hat, M, M_hat = (np.asarray(v, dtype=float) for v in (B, B_hat, M, M_hat))
    zero = np.zeros_like(B)
    B_plus, minus_M_plus, _ = he_yuan_correction(B, B_hat, -M, -M_hat, zero, zero, tau, alpha)
    return _compare("He-Yuan correction (B+, M+)", answer, np.stack([B_plus, -minus_M_plus]),
                    "apply the matrix to (B - B_hat, -(M - M_hat)), then turn -M+ back into "
                    "M+; the raw coordinates (B, M) give a different step, one He-Yuan's "
                    "theorem does not cover.",
                    atol=1e-10)


def lambda_max(answer, X, Y, bias=None):
    r"""``(lam1_max, lam2_max, frac_max)`` for the linear-response layer problem, each to a
    relative 1e-6:

    * ``lam1_max``: the smallest :math:`\lambda_1` at which :math:`A = 0` solves the problem
      with :math:`B = 0` (:math:`\lambda_2 = \infty`): the largest column norm of
      :math:`C = (Y - b\mathbf 1^\top)X^\top/N`, since :math:`\nabla f(0) = -C` and
      :math:`\partial\|0\|_{2,1}` is the set of matrices with columns of norm at most 1;
    * ``lam2_max``: the smallest :math:`\lambda_2` at which :math:`B = 0` solves it with
      :math:`A = 0` (:math:`\lambda_1 = \infty`): the spectral norm :math:`\|C\|_2`, since
      :math:`\partial\|0\|_*` is the spectral-norm unit ball;
    * ``frac_max``: ``lam1_max`` over the pipeline's scale :math:`s`, the *mean* column norm
      of C: from this ``frac`` on, A is empty (at least 1).

    Reference: the column norms and the largest singular value of C, in float64 (the worked
    solution confirms both thresholds with :func:`lrsa.solve_layer` on either side).
    """
    title = "lambda_1 max, lambda_2 max, frac max"
    X, Y = as_numpy(X).astype(float), as_numpy(Y).astype(float)
    b = np.zeros(Y.shape[0]) if bias is None else as_numpy(bias).astype(float)
    C = (Y - b[:, None]) @ X.T / X.shape[1]
    cols = np.linalg.norm(C, axis=0)
    reference = np.array([cols.max(), np.linalg.norm(C, 2), cols.max() / cols.mean()])
    if _unanswered(answer):
        return _not_answered(title, "answers")
    got = _numbers(answer, reference.shape, title)
    ok = np.isclose(got, reference, rtol=1e-6, atol=0)
    hints = ["lambda_1 max: write the optimality condition at A = 0 column by column; the "
             "subdifferential of ||a||_2 at 0 is the unit ball.",
             "lambda_2 max: the subdifferential of the nuclear norm at 0 is the unit ball of "
             "its dual norm; which norm is that?",
             "frac max: the pipeline divides lambda_1 by the MEAN column norm of C, not the "
             "largest."]
    return _verdict(title, ok.all(), " ".join(h for h, good in zip(hints, ok) if not good))


def midpoint_gap(answer, x, y, m0, m1, response="relu"):
    r""":math:`f(\frac{m_0+m_1}2) - \frac12(f(m_0) + f(m_1))` for
    :math:`f(m) = (y - r(mx))^2`, :math:`r` the ReLU (or the identity for
    ``response="linear"``), to 1e-9. Positive: f lies above its chord, not convex.

    Reference: f evaluated at the three points.
    """
    if response not in ("relu", "linear"):
        raise ValueError(f"response must be 'relu' or 'linear', got {response!r}")
    r = (lambda z: max(z, 0.0)) if response == "relu" else (lambda z: z)
    f = lambda m: (y - r(m * x)) ** 2  # noqa: E731
    gap = f((m0 + m1) / 2) - (f(m0) + f(m1)) / 2
    return _compare(f"midpoint gap ({response})", answer, gap,
                    "evaluate f at m0, m1 and their midpoint; where is m x below zero?",
                    atol=1e-9)


# ----------------------------------------------------------------- 03 linear vs nonlinear

def relu_term_all_dead(answer, X, Z, bias, W_dead):
    r"""The ReLU data term :math:`\frac1{2N}\|r(Z) - r(W_{\text{dead}}X + b)\|_F^2` at a
    weight that switches every unit off, to a relative 1e-4.

    Reference: :func:`lrsa.solver.layer_objective` at :math:`A = W_{\text{dead}}`, B = 0.
    """
    from ..solver import layer_objective
    import torch
    W_dead = torch.as_tensor(W_dead)
    ref = layer_objective(X, torch.relu(torch.as_tensor(Z)), W_dead, torch.zeros_like(W_dead),
                          0.0, 0.0, response="relu", bias=bias)
    return _compare("ReLU data term with every unit dead", answer, ref,
                    "if every unit is off, what does the approximation output? What is left "
                    "of the error?", rtol=1e-4)


def segment_ratio(answer, X, Z, bias, W0, W1, s=0.5):
    r""":math:`f(W(s)) / f(W_0)` for the *linear* data term
    :math:`f(W) = \frac1{2N}\|Z - WX - b\|_F^2` along :math:`W(s) = (1-s)W_0 + sW_1`, when
    :math:`W_1` is the layer's own weight (:math:`Z = W_1X + b`), to 1e-3.

    The residual is :math:`(1-s)(Z - W_0X - b)`, so the ratio is :math:`(1-s)^2`.
    Reference: :func:`lrsa.solver.layer_objective` at both points.
    """
    from ..solver import layer_objective
    import torch
    W0, W1 = torch.as_tensor(W0), torch.as_tensor(W1)
    f = lambda W: layer_objective(X, Z, W, torch.zeros_like(W), 0.0, 0.0,  # noqa: E731
                                  response="linear", bias=bias)
    return _compare(f"linear data term at s = {s:g}, relative to s = 0", answer,
                    f((1 - s) * W0 + s * W1) / f(W0),
                    "write the residual Z - W(s) X - b in terms of the residual at s = 0, "
                    "using Z = W1 X + b.", atol=1e-3)


def break_even_rank(answer, n, d):
    r"""The largest rank r at which a rank-r factorization :math:`UV` (:math:`n\times r`,
    :math:`r\times d`) stores fewer numbers than the dense :math:`n\times d` weight. Exact.

    Reference: brute force over r.
    """
    r = 0
    while (r + 1) * (n + d) < n * d:
        r += 1
    return _compare("break-even rank", answer, r,
                    "U V stores r (n + d) numbers; solve r (n + d) < n d for the largest "
                    "integer r (strict inequality).")


# ----------------------------------------------------------------- 04 strategies

def first_possible_difference(answer, model, layer_names, inputs):
    r"""The smallest k at which the symmetric and asymmetric strategies *can* give different
    rows of :func:`lrsa.course.experiments.strategy_curve` (layers ``layer_names`` approximated in
    order): the first k whose layer's input depends on a layer approximated before it.
    Exact.

    Reference, by brute force rather than by reading the curves: for each k, perturb the
    weights of ``layer_names[:k-1]`` (what the asymmetric strategy changes before layer k)
    and see whether the input of ``layer_names[k-1]`` on ``inputs`` moves. Whether the rows
    then *do* differ depends on the data (an approximated layer that reproduced its
    outputs exactly would change nothing).
    """
    import torch
    import copy

    def input_of(net, name):
        seen = {}

        def record(mod, args):  # returns None: the input goes on unchanged
            seen.setdefault("x", args[0].detach().clone())

        hook = net.get_submodule(name).register_forward_pre_hook(record)
        try:
            with torch.no_grad():
                net(inputs)
        finally:
            hook.remove()
        return seen["x"]

    model = copy.deepcopy(model).eval()
    k_first = len(layer_names) + 1
    gen = torch.Generator().manual_seed(0)
    for k, name in enumerate(layer_names, start=1):
        perturbed = copy.deepcopy(model)
        with torch.no_grad():
            for earlier in layer_names[:k - 1]:
                w = perturbed.get_submodule(earlier).weight
                w.add_(0.1 * w.abs().mean() * torch.randn(w.shape, generator=gen).to(w))
        if not torch.equal(input_of(model, name), input_of(perturbed, name)):
            k_first = k
            break
    return _compare("first k where the strategies can differ", answer, k_first,
                    "which inputs does layer k see under each strategy, and which layers "
                    "before it are already approximated? The question is what the "
                    "strategies allow, not what one run shows.")


def combined_cr(answer, row):
    r"""``cr_so_far`` of a :func:`lrsa.course.experiments.strategy_curve` row: the CR of layers
    1..k together, to 1e-9. From the per-layer CRs it is the average weighted by the layer
    sizes :math:`n_j d_j`, not the plain mean.

    Reference: the row's own ``cr_so_far`` (stored over original weights, as counted by the
    pipeline).
    """
    return _compare(f"CR of the first {row['k']} layers", answer, row["cr_so_far"],
                    "CR_j = stored_j / (n_j d_j): add up what is stored and what was there; "
                    "a plain mean of the CRs treats a small layer like a big one.", atol=1e-9)


# ----------------------------------------------------------------- 05 VGG-16

def _conv_module(module, title):
    from ..layers import SparseLowRankConv2d
    if not isinstance(module, SparseLowRankConv2d):
        raise TypeError(f"{title}: expected a SparseLowRankConv2d (a factored conv layer), "
                        f"got {type(module).__name__}")
    return module


def stored_parameters(answer, module):
    r"""The numbers a :class:`lrsa.layers.SparseLowRankConv2d` really stores: whole kept
    input channels :math:`n\,c\,k^2`, the factors :math:`r(d + n)` with :math:`d = c_{in}k^2`,
    and the bias n. Exact.

    Reference: the sum of the module's parameter sizes.
    """
    stored = sum(p.numel() for p in _conv_module(module, "stored parameters").parameters())
    return _compare("stored parameters", answer, stored,
                    "count each conv of the module: the sparse conv keeps whole input "
                    "channels (k x k each), V is a k x k conv with r filters over all input "
                    "channels, U a 1 x 1 conv; and the bias.")


def mac_fraction(answer, module):
    r"""MACs of the factored conv as a fraction of its dense original, to 1e-9:
    :math:`\frac{n\,c\,k^2 + r(d + n)}{n\,d}` per output position (c kept input channels).
    When the kept channels hold no zero columns (the pipeline keeps whole channels) this is
    the layer's CR of eq. (15).

    Reference: :func:`lrsa.layers.estimate_macs` of the module and of its dense equivalent on
    a 16 x 16 input.
    """
    from ..layers import estimate_macs
    module = _conv_module(module, "MAC fraction")
    shape = (1, module.in_channels, 16, 16)
    ratio = estimate_macs(module, shape) / estimate_macs(module.to_dense_module(), shape)
    return _compare("MACs, factored / dense", answer, ratio,
                    "both branches run at every output position: count the MACs per "
                    "position of the sparse conv, the k x k conv with r filters and the "
                    "1 x 1 conv.", atol=1e-9)


# ----------------------------------------------------------------- 06 AlexNet

def macs_saved(answer, original, compressed, input_shape):
    r"""Multiply-accumulates per image saved by ``compressed`` over ``original``, to a
    relative 1e-9.

    Reference: :func:`lrsa.report.count_macs` of both networks (a traced forward).
    """
    from ..report import count_macs
    saved = count_macs(original, input_shape) - count_macs(compressed, input_shape)
    return _compare("MACs saved per image", answer, saved,
                    "only the approximated layers change; per output position a layer costs "
                    "n c k^2 + r (d + n) instead of n d. Which output size do conv3-conv5 "
                    "have?", rtol=1e-9)


def paper_network_cr(answer, model, table=None, names=None):
    r"""The whole-network CR (in %) that the paper's per-layer rates imply, over the
    weights of every conv and FC layer of ``model``, to 0.01 points.

    Defaults: :data:`lrsa.paper.PAPER_TABLE_IV` and :data:`lrsa.paper.ALEXNET_LAYER_NAMES`.
    Reference: the table's CR(A+B) of each layer times its weight count, summed, over the
    summed weight counts.
    """
    table = paper.PAPER_TABLE_IV if table is None else table
    names = paper.ALEXNET_LAYER_NAMES if names is None else names
    sizes = {label: model.get_submodule(name).weight.numel() for name, label in names.items()}
    kept = math.fsum(table[label][2] * size for label, size in sizes.items())
    return _compare("network CR from the per-layer rates (%)", answer,
                    kept / sum(sizes.values()), "weight each layer's CR by its number of "
                    "weights; which layer holds most of AlexNet's weights?", atol=0.01)


def network_mac_fraction(answer, original, compressed, input_shape):
    r"""The whole network's multiply-adds per image after compression, as a fraction of the
    original's, to a relative 1e-9. Per layer the MAC ratio equals the size ratio here (whole
    channels kept); over the network it does not: each layer's MACs are its stored weights
    times its output positions, so the network's MAC ratio weights the layers by their
    output sizes and its size ratio does not.

    Reference: :func:`lrsa.report.count_macs` of both networks (a traced forward).
    """
    from ..report import count_macs
    total = count_macs(original, input_shape)
    reference = count_macs(compressed, input_shape) / total
    title = "network MACs, compressed / original"
    if _unanswered(answer):
        return _not_answered(title)
    got = float(_numbers(answer, (), title))
    hint = ("a layer's MACs per image are (stored weights) x (output positions): weight each "
            "layer's stored size by its number of output positions (1 for a Linear layer). "
            "The plain ratio of stored weights is the size ratio, not the MAC ratio.")
    return _verdict(title, math.isclose(got, reference, rel_tol=1e-9), hint)


# ----------------------------------------------------------------- 08 where the time goes

def amdahl_bound(answer, original_ms, changed):
    r"""The most a plan can speed the network up when every stage it changes (``changed``,
    stage names) takes no time at all, from the original's time per stage
    (``original_ms``: stage name -> ms), to a relative 1e-9.

    Reference: the total time over the summed time of the stages not in ``changed`` (the
    student derives :math:`1/p` with :math:`p` the unchanged share).
    """
    changed = set(changed)
    total = math.fsum(original_ms.values())
    left = math.fsum(t for s, t in original_ms.items() if s not in changed)
    return _compare("Amdahl bound", answer, total / left,
                    "the changed stages cost nothing; the others take exactly what they "
                    "took. Divide the old total time by what is left (not by the changed "
                    "stages' time).", rtol=1e-9)


def amdahl_speedup(answer, original_ms, compressed_ms, changed):
    r"""The whole network's speed-up predicted from two numbers, the unchanged share
    :math:`p` of the original's time and the speed-up :math:`s` of the changed stages taken
    together, to a relative 1e-9.

    Reference: the summed stage times, original over compressed, with the unchanged
    stages' times taken from the original (that is what "unchanged" means); the closed form
    to derive is :math:`1/(p + (1 - p)/s)`.
    """
    changed = set(changed)
    kept = math.fsum(t for s, t in original_ms.items() if s not in changed)
    before = math.fsum(original_ms[s] for s in changed)
    after = math.fsum(compressed_ms[s] for s in changed)
    return _compare("predicted whole-network speed-up", answer, (kept + before) / (kept + after),
                    "the new total time is p T + (1 - p) T / s for an old total T; the "
                    "speed-up of the changed stages alone is not the network's.", rtol=1e-9)


def uv_mac_speedup(answer, in_channels, out_channels, ranks, kernel_size=3):
    r"""Dense multiply-adds over factored ones for a k x k convolution replaced by a k x k
    convolution to rank r and a 1 x 1 convolution (B = U V), one value per rank in
    ``ranks``, to a relative 1e-9.

    Reference: :func:`lrsa.layers.estimate_macs` of the two modules built by
    :func:`lrsa.course.lessons.factored_conv`.
    """
    from ..layers import estimate_macs
    from .lessons import factored_conv

    shape = (1, in_channels, 8, 8)
    ref = []
    for r in ranks:
        dense, fact = factored_conv(in_channels, out_channels, int(r), kernel_size)
        ref.append(estimate_macs(dense, shape) / estimate_macs(fact, shape))
    return _compare("MAC speed-up of U V per rank", answer, ref,
                    "per output position the dense conv costs n c k^2; U V costs r c k^2 for "
                    "the k x k conv to r channels plus r n for the 1 x 1 conv.", rtol=1e-9)


# ----------------------------------------------------------------- 09 fine-tuning

def _soft_gradient(student_logits, teacher_logits, temperature):
    import torch
    from ..train import Distillation

    s = torch.as_tensor(as_numpy(student_logits), dtype=torch.float64).requires_grad_(True)
    t = torch.as_tensor(as_numpy(teacher_logits), dtype=torch.float64)
    crit = Distillation(torch.nn.Identity(), alpha=1.0, temperature=float(temperature))
    (g,) = torch.autograd.grad(crit(s, t, torch.zeros(s.shape[0], dtype=torch.long)), s)
    return g.numpy()


def soft_term_gradient(answer, student_logits, teacher_logits, temperature):
    r"""The gradient of :class:`lrsa.train.Distillation`'s soft term
    :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T))` (averaged over
    the batch) with respect to the student logits ``s`` (a B x K array), to 1e-6.

    Reference: autograd through the class itself (``alpha=1``, the teacher an
    ``nn.Identity`` fed the teacher's logits; the class casts the teacher's logits to
    float32, hence the tolerance).
    """
    ref = _soft_gradient(student_logits, teacher_logits, temperature)
    return _compare("gradient of the soft term", answer, ref,
                    "differentiate log-softmax: d/ds of -sum_k q_k log softmax(s/T)_k is "
                    "(softmax(s/T) - q)/T; then count the T^2 in front and the average over "
                    "the batch.", atol=1e-6)


def soft_term_limit(answer, student_logits, teacher_logits):
    r"""The Frobenius norm that the soft term's gradient (with its :math:`T^2`, see
    :func:`soft_term_gradient`) tends to as :math:`T \to \infty`, to a relative 1e-3.

    Reference: the gradient by autograd at :math:`T = 10^4`, where it is within about
    :math:`10^{-4}` of its limit for logits of order 1-10.
    """
    ref = float(np.linalg.norm(_soft_gradient(student_logits, teacher_logits, 1e4)))
    return _compare("limit of the soft term's gradient norm", answer, ref,
                    "expand softmax(z/T) to first order in 1/T: (1 + z/T - mean(z)/T)/K; "
                    "the T^2 and the 1/T of the gradient leave a finite limit. Each row's "
                    "logits count only relative to their mean.", rtol=1e-3)


__all__ += ["amdahl_bound", "amdahl_speedup", "soft_term_gradient", "soft_term_limit",
            "uv_mac_speedup"]


# ----------------------------------------------------------------- 07 against the baselines

def equal_size_rank(answer, n, d, kept_columns, rank):
    r"""The rank truncated SVD (B alone, :math:`UV`) gets at exactly the stored size of an
    lrsa layer with ``kept_columns`` nonzero columns of :math:`A` and rank ``rank``, for an
    :math:`n \times d` weight. Exact (an integer).

    Reference: a brute-force count, the largest :math:`r'` with
    :math:`r'(n + d) \le n c + r(n + d)`, found by stepping :math:`r'` up from 0.
    """
    stored = n * kept_columns + rank * (n + d)
    r = 0
    while (r + 1) * (n + d) <= stored:
        r += 1
    return _compare("rank of B alone at equal size", answer, r,
                    "eq. (15) counts n per nonzero column of A and n + d per rank of U V; "
                    "spend lrsa's whole count on U V alone and round down.")


def sqrt_spread_share(answer, shapes, c):
    r"""The share of the weights a network of layers of ``shapes`` (a list of :math:`(n_l,
    d_l)`) keeps when each layer keeps :math:`\mathrm{CR}_l = \min(1, c/\sqrt{n_l d_l})` of
    its :math:`n_l d_l` weights (``Budget(spread="sqrt")``), to 1e-9.

    Reference: :func:`lrsa.pipeline.budget.sqrt_spread` itself, asked for the student's
    share: its bisection must land on ``c`` (a wrong share finds another :math:`c`).
    """
    import torch
    from ..pipeline.budget import LayerPlan, sqrt_spread

    title = "network share kept by the sqrt spread"
    if _unanswered(answer):
        return _not_answered(title)
    share = float(_numbers(answer, (), title))
    if not 0 < share <= 1:
        return _verdict(title, False, "a share of the weights lies between 0 and 1")
    layers = [(f"l{i}", torch.nn.Linear(int(d), int(n), bias=False))
              for i, (n, d) in enumerate(shapes)]
    plan = {name: LayerPlan() for name, _ in layers}
    sqrt_spread(plan, layers, share)
    found = [plan[name].target_cr * math.sqrt(m.weight.numel()) for name, m in layers
             if plan[name].target_cr < 1]
    ok = bool(found) and math.isclose(found[0], c, rel_tol=1e-6)
    return _verdict(title, ok, "weight each layer's CR by its n d: the share is "
                    "sum_l min(n_l d_l, c sqrt(n_l d_l)) / sum_l n_l d_l.")


def _top1(rows, size, spread, method):
    return next(r["top1"] for r in rows
                if r["size"] == size and r["spread"] == spread and r["method"] == method)


def spread_and_method_gaps(answer, rows, size):
    r"""Two numbers from the saved grid (``frontier.json``'s rows) at network size ``size``:
    how many points of top-1 the spread rule moves lrsa (energy minus sqrt), and how many
    points separate the best and the worst of the three methods under the default spread
    ("energy"). To 1e-9.

    Reference: each row looked up by its size, spread and method.
    """
    spread_gap = _top1(rows, size, "energy", "lrsa") - _top1(rows, size, "sqrt", "lrsa")
    methods = [_top1(rows, size, "energy", m) for m in ("lrsa", "svd", "rrr")]
    method_gap = max(methods) - min(methods)
    return _compare("spread gap and method gap", answer, [spread_gap, method_gap],
                    "the first is a difference of two lrsa rows (keep its sign); the second "
                    "the range of three rows of one spread.", atol=1e-9)


__all__ += ["equal_size_rank", "sqrt_spread_share", "spread_and_method_gaps"]


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
    if answer is None or _unanswered(answer):
        return _not_answered("McNemar's exact test", "code")
    ok = math.isclose(float(answer), mcnemar(a, b)["p_value"], rel_tol=1e-9, abs_tol=1e-12)
    return _verdict("McNemar's exact test", ok,
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
    if answer is None or _unanswered(answer):
        return _not_answered("paired bootstrap interval", "code")
    ref = bootstrap_interval([a, b], replicates=2000)
    got = _numbers(answer, (3,), "paired bootstrap interval")
    ok = (math.isclose(got[0], ref.mean, abs_tol=1e-9)
          and np.allclose(got[1:], [ref.low, ref.high], atol=0.3))
    return _verdict("paired bootstrap interval", ok,
                    "draw one set of image indices per replicate and use it for both models: "
                    "the replicate is the mean of 100 * (a - b) over those images; take the "
                    "2.5 and 97.5 percentiles of the replicates.")


__all__ += ["mcnemar_lab", "paired_interval_lab"]


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
    if answer is None or _unanswered(answer):
        return _not_answered("2:4 projection", "code")
    got = _numbers(answer, tuple(W.shape), "2:4 projection")
    return _verdict("2:4 projection", np.allclose(got, as_numpy(project_n_m(W, 2, 4))),
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
    if answer is None or _unanswered(answer):
        return _not_answered("OATS", "code")
    S, U, V = _tensors(answer, "OATS", "S, U, V")
    ref = oats(W, G, 3, "unstructured", 40, rounds=10)
    ok = (S.shape == W.shape and int((S != 0).sum()) <= 40
          and torch.allclose(S + U @ V, ref[0] + ref[1] @ ref[2], atol=1e-8))
    return _verdict("OATS", ok,
                    "scale first: WD = W * D[None, :] with D = sqrt(diag(G)); in each round "
                    "take the rank-r SVD of WD - S, then keep the `nonzeros` largest "
                    "|entries| of WD - L; divide S and V (not U) by D at the end.")


__all__ += ["n_m_projection_lab", "oats_lab"]


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
    if answer is None or _unanswered(answer):
        return _not_answered("reduced-rank regression", "code")
    U, V = _tensors(answer, "reduced-rank regression", "U, V")
    ref_U, ref_V = reduced_rank_regression(X, Z, 3)
    ok = (U.shape == (8, 3) and V.shape == (3, 12) and math.isclose(
        float(torch.linalg.norm(Z - U @ V @ X)), float(torch.linalg.norm(Z - ref_U @ ref_V @ X)),
        rel_tol=1e-8))
    return _verdict("reduced-rank regression", ok,
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
    if answer is None or _unanswered(answer):
        return _not_answered("factored convolution", "code")
    if not callable(answer):
        raise TypeError(f"factored convolution: return a module, got {type(answer).__name__}")
    with torch.no_grad():
        want = F.conv2d(x, (U @ V).reshape(conv.weight.shape), conv.bias, stride=2, padding=1)
        got = answer(x)
    ok = tuple(got.shape) == tuple(want.shape) and torch.allclose(got, want, atol=1e-5)
    return _verdict("factored convolution", ok,
                    "nn.Conv2d(c, r, k, stride, padding, bias=False) with weight "
                    "V.reshape(r, c, k, k), then nn.Conv2d(r, n, 1) with weight "
                    "U.reshape(n, r, 1, 1) and the conv's bias, in an nn.Sequential.")


__all__ += ["factored_conv_lab", "reduced_rank_regression_lab"]
