r"""Self-checks for the notebooks' exercises: derive, predict, then check.

Each checker takes the student's ``answer`` first, then the objects the exercise is about,
computes the reference answer by a route of its own (a brute-force count, the library's own
accounting, an evaluation of the objective, ...) and answers as :mod:`lrsa.course.checking`
describes: "correct", "not yet" with a hint, or "not answered yet" (raising under
nbgrader). The labs, where the student writes a function, are in :mod:`lrsa.course.labs`.
"""

from __future__ import annotations

import math

import numpy as np

# torch and the modules built on it are imported inside the checks that use them, so that
# the checks of notebooks 01-02 (NumPy only) run where torch is not installed
from .. import paper
from ..admm import he_yuan_correction
from ..prox import prox_l21, svt
from ..utils import as_numpy
from .checking import compare, not_answered, numbers, unanswered, verdict

__all__ = ["amdahl_bound", "break_even_rank", "combined_size", "equal_size_rank",
           "first_possible_difference", "he_yuan_step", "lambda_max", "mac_fraction", "macs_saved",
           "midpoint_gap", "moreau_residual", "network_mac_fraction", "paper_network_size",
           "prox_frobenius", "relu_term_all_dead", "segment_ratio", "soft_term_gradient",
           "soft_term_limit", "sqrt_spread_share", "stored_parameters", "surviving_columns",
           "svt_rank", "uv_mac_speedup"]


# ----------------------------------------------------------------- 01 proximal operators

def surviving_columns(answer, V, tau):
    r"""How many columns of ``V`` are nonzero after :math:`\operatorname{prox}_{\tau
    \|\cdot\|_{2,1}}`? Exact (an integer).

    Reference: apply :func:`lrsa.prox.prox_l21` and count the nonzero columns of the result.
    """
    kept = int((np.linalg.norm(as_numpy(prox_l21(V, tau)), axis=0) > 0).sum())
    return compare("surviving columns", answer, kept,
                    "column shrinkage lowers every column norm by tau; which norms stay "
                    "positive?")


def svt_rank(answer, V, tau):
    r"""Rank of :math:`\operatorname{prox}_{\tau\|\cdot\|_*}(V)`. Exact (an integer).

    Reference: ``np.linalg.matrix_rank`` of :func:`lrsa.prox.svt`'s result (an SVD of its own).
    """
    rank = int(np.linalg.matrix_rank(as_numpy(svt(V, tau))))
    return compare("rank after SVT", answer, rank,
                    "SVT lowers every singular value by tau; count the ones that stay "
                    "positive (np.linalg.svd(V, compute_uv=False)).")


def prox_frobenius(prox_fro, V, taus=None):
    r"""The student's function ``prox_fro(V, tau)`` for
    :math:`\operatorname{prox}_{\tau\|\cdot\|_F}`, tried on ``V`` at several thresholds
    (default: a quarter, a half, one and two times :math:`\|V\|_F`), to 1e-8.

    Reference: :math:`\|X\|_F` is the :math:`\ell_{2,1}` norm of :math:`\operatorname{vec}X`
    seen as a single column, so the prox is :func:`lrsa.prox.prox_l21` of the one-column matrix
    (the closed form to derive: :math:`\max(1 - \tau/\|V\|_F, 0)\,V`).
    """
    title = "prox of tau ||X||_F"
    if unanswered(prox_fro):
        return not_answered(title, "function")
    if not callable(prox_fro):
        raise TypeError(f"{title}: the answer must be a function prox_fro(V, tau), got "
                        f"{type(prox_fro).__name__}")
    V = as_numpy(V)
    norm = np.linalg.norm(V)
    for tau in (norm * np.array([0.25, 0.5, 1.0, 2.0]) if taus is None else taus):
        reference = prox_l21(V.reshape(-1, 1), float(tau)).reshape(V.shape)
        got = numbers(prox_fro(V.copy(), float(tau)), V.shape, title)
        if not np.allclose(got, reference, atol=1e-8):
            return verdict(title, False, f"wrong at tau = {tau / norm:.2f} ||V||_F. The "
                            "Frobenius norm is the l2 norm of all entries in one vector: "
                            "repeat the derivation of column shrinkage for one column.")
    return verdict(title, True, "")


def moreau_residual(answer, V, tau):
    r"""Singular values (descending, length :math:`\min(n, d)`) of :math:`V -
    \operatorname{prox}_{\tau\|\cdot\|_*}(V)`, to 1e-8.

    Moreau: :math:`V = \operatorname{prox}_{\tau f}(V) + \Pi_{\tau\mathcal B^\circ}(V)` with
    :math:`\mathcal B^\circ` the unit ball of the dual norm (the spectral norm), so the
    answer is :math:`\min(\sigma_i, \tau)`. Reference: an SVD of ``V - svt(V, tau)``.
    """
    V = as_numpy(V)
    s = np.linalg.svd(V - as_numpy(svt(V, tau)), compute_uv=False)
    return compare("singular values of V - svt(V, tau)", answer, s,
                    "the residual is the projection onto a ball of the dual norm; what does "
                    "projecting onto {||R||_2 <= tau} do to each singular value?", atol=1e-8)


# ----------------------------------------------------------------- 02 three-block ADMM

def he_yuan_step(answer, B, B_hat, M, M_hat, tau=0.5, alpha=0.75):
    r"""``(B_plus, M_plus)``: the He-Yuan correction (paper eq. 13) of :math:`B` and
    :math:`M` applied in the essential coordinates :math:`(B, -M, \Lambda)`, to 1e-10.

    Reference: :func:`lrsa.admm.he_yuan_correction` on :math:`(B, -M)`, the sign flipped back.
    """
    B, B_hat, M, M_hat = (np.asarray(v, dtype=float) for v in (B, B_hat, M, M_hat))
    zero = np.zeros_like(B)
    B_plus, minus_M_plus, _ = he_yuan_correction(B, B_hat, -M, -M_hat, zero, zero, tau, alpha)
    return compare("He-Yuan correction (B+, M+)", answer, np.stack([B_plus, -minus_M_plus]),
                    "apply the matrix to (B - B_hat, -(M - M_hat)), then turn -M+ back into "
                    "M+; the raw coordinates (B, M) give a different step, one He-Yuan's "
                    "theorem does not cover.",
                    atol=1e-10)


def lambda_max(answer, X, Y, bias=None):
    r"""``(lam1_max, lam2_max, relative_lam1_max)`` for the linear-response layer problem, each to a
    relative 1e-6:

    * ``lam1_max``: the smallest :math:`\lambda_1` at which :math:`A = 0` solves the problem
      with :math:`B = 0` (:math:`\lambda_2 = \infty`): the largest column norm of
      :math:`C = (Y - b\mathbf 1^\top)X^\top/N`, since :math:`\nabla f(0) = -C` and
      :math:`\partial\|0\|_{2,1}` is the set of matrices with columns of norm at most 1;
    * ``lam2_max``: the smallest :math:`\lambda_2` at which :math:`B = 0` solves it with
      :math:`A = 0` (:math:`\lambda_1 = \infty`): the spectral norm :math:`\|C\|_2`, since
      :math:`\partial\|0\|_*` is the spectral-norm unit ball;
    * ``relative_lam1_max``: ``lam1_max`` over the pipeline's scale :math:`s`, the *mean*
      column norm of C: from this ``relative_lam1`` on, A is empty (at least 1).

    Reference: the column norms and the largest singular value of C, in float64 (the worked
    solution confirms both thresholds with :func:`lrsa.solver.solve_layer` on either side).
    """
    title = "lambda_1 max, lambda_2 max, relative_lam1 max"
    X, Y = as_numpy(X).astype(float), as_numpy(Y).astype(float)
    b = np.zeros(Y.shape[0]) if bias is None else as_numpy(bias).astype(float)
    C = (Y - b[:, None]) @ X.T / X.shape[1]
    cols = np.linalg.norm(C, axis=0)
    reference = np.array([cols.max(), np.linalg.norm(C, 2), cols.max() / cols.mean()])
    if unanswered(answer):
        return not_answered(title, "answers")
    got = numbers(answer, reference.shape, title)
    ok = np.isclose(got, reference, rtol=1e-6, atol=0)
    hints = ["lambda_1 max: write the optimality condition at A = 0 column by column; the "
             "subdifferential of ||a||_2 at 0 is the unit ball.",
             "lambda_2 max: the subdifferential of the nuclear norm at 0 is the unit ball of "
             "its dual norm; which norm is that?",
             "relative_lam1 max: the pipeline divides lambda_1 by the MEAN column norm of C, "
             "not the largest."]
    return verdict(title, ok.all(), " ".join(h for h, good in zip(hints, ok) if not good))


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
    return compare(f"midpoint gap ({response})", answer, gap,
                    "evaluate f at m0, m1 and their midpoint; where is m x below zero?",
                    atol=1e-9)


# ----------------------------------------------------------------- 03 linear vs nonlinear

def relu_term_all_dead(answer, X, Z, bias, W_dead):
    r"""The ReLU data term :math:`\frac1{2N}\|r(Z) - r(W_{\text{dead}}X + b)\|_F^2` at a
    weight that switches every unit off, to a relative 1e-4.

    Reference: :func:`lrsa.objective.layer_objective` at :math:`A = W_{\text{dead}}`, B = 0.
    """
    from ..objective import layer_objective
    import torch
    W_dead = torch.as_tensor(W_dead)
    ref = layer_objective(X, torch.relu(torch.as_tensor(Z)), W_dead, torch.zeros_like(W_dead),
                          0.0, 0.0, response="relu", bias=bias)
    return compare("ReLU data term with every unit dead", answer, ref,
                    "if every unit is off, what does the approximation output? What is left "
                    "of the error?", rtol=1e-4)


def segment_ratio(answer, X, Z, bias, W0, W1, s=0.5):
    r""":math:`f(W(s)) / f(W_0)` for the *linear* data term
    :math:`f(W) = \frac1{2N}\|Z - WX - b\|_F^2` along :math:`W(s) = (1-s)W_0 + sW_1`, when
    :math:`W_1` is the layer's own weight (:math:`Z = W_1X + b`), to 1e-3.

    The residual is :math:`(1-s)(Z - W_0X - b)`, so the ratio is :math:`(1-s)^2`.
    Reference: :func:`lrsa.objective.layer_objective` at both points.
    """
    from ..objective import layer_objective
    import torch
    W0, W1 = torch.as_tensor(W0), torch.as_tensor(W1)
    f = lambda W: layer_objective(X, Z, W, torch.zeros_like(W), 0.0, 0.0,  # noqa: E731
                                  response="linear", bias=bias)
    return compare(f"linear data term at s = {s:g}, relative to s = 0", answer,
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
    return compare("break-even rank", answer, r,
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
    return compare("first k where the strategies can differ", answer, k_first,
                    "which inputs does layer k see under each strategy, and which layers "
                    "before it are already approximated? The question is what the "
                    "strategies allow, not what one run shows.")


def combined_size(answer, row):
    r"""``size_so_far`` of a :func:`lrsa.course.experiments.strategy_curve` row: the CR of layers
    1..k together, to 1e-9. From the per-layer CRs it is the average weighted by the layer
    sizes :math:`n_j d_j`, not the plain mean.

    Reference: the row's own ``size_so_far`` (stored over original weights, as counted by the
    pipeline).
    """
    return compare(f"CR of the first {row['k']} layers", answer, row["size_so_far"],
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
    return compare("stored parameters", answer, stored,
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
    return compare("MACs, factored / dense", answer, ratio,
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
    return compare("MACs saved per image", answer, saved,
                    "only the approximated layers change; per output position a layer costs "
                    "n c k^2 + r (d + n) instead of n d. Which output size do conv3-conv5 "
                    "have?", rtol=1e-9)


def paper_network_size(answer, model, table=None, names=None):
    r"""The whole-network CR (in %) that the paper's per-layer rates imply, over the
    weights of every conv and FC layer of ``model``, to 0.01 points.

    Defaults: :data:`lrsa.paper.PAPER_TABLE_IV` and :data:`lrsa.paper.ALEXNET_LAYER_NAMES`.
    Reference: the table's CR(A+B) of each layer times its weight count, summed, over the
    summed weight counts.
    """
    table = paper.PAPER_TABLE_IV if table is None else table
    names = paper.ALEXNET_LAYER_NAMES if names is None else names
    weights = {label: model.get_submodule(name).weight.numel() for name, label in names.items()}
    kept = math.fsum(table[label][2] * count for label, count in weights.items())
    return compare("network CR from the per-layer rates (%)", answer,
                    kept / sum(weights.values()), "weight each layer's CR by its number of "
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
    if unanswered(answer):
        return not_answered(title)
    got = float(numbers(answer, (), title))
    hint = ("a layer's MACs per image are (stored weights) x (output positions): weight each "
            "layer's stored size by its number of output positions (1 for a Linear layer). "
            "The plain ratio of stored weights is the size ratio, not the MAC ratio.")
    return verdict(title, math.isclose(got, reference, rel_tol=1e-9), hint)


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
    return compare("Amdahl bound", answer, total / left,
                    "the changed stages cost nothing; the others take exactly what they "
                    "took. Divide the old total time by what is left (not by the changed "
                    "stages' time).", rtol=1e-9)


def uv_mac_speedup(answer, in_channels, out_channels, ranks, kernel_size=3):
    r"""Dense multiply-adds over factored ones for a k x k convolution replaced by a k x k
    convolution to rank r and a 1 x 1 convolution (B = U V), one value per rank in
    ``ranks``, to a relative 1e-9.

    Reference: :func:`lrsa.layers.estimate_macs` of the two modules built by
    :func:`lrsa.course.speed.factored_conv`.
    """
    from ..layers import estimate_macs
    from .speed import factored_conv

    shape = (1, in_channels, 8, 8)
    ref = []
    for r in ranks:
        dense, fact = factored_conv(in_channels, out_channels, int(r), kernel_size)
        ref.append(estimate_macs(dense, shape) / estimate_macs(fact, shape))
    return compare("MAC speed-up of U V per rank", answer, ref,
                    "per output position the dense conv costs n c k^2; U V costs r c k^2 for "
                    "the k x k conv to r channels plus r n for the 1 x 1 conv.", rtol=1e-9)


# ----------------------------------------------------------------- 09 fine-tuning

def soft_term_gradient(answer, student_logits, teacher_logits, temperature):
    r"""The gradient of :class:`lrsa.train.Distillation`'s soft term
    :math:`T^2\,\mathrm{KL}(\mathrm{softmax}(t/T)\,\|\,\mathrm{softmax}(s/T))` (averaged over
    the batch) with respect to the student logits ``s`` (a B x K array), to 1e-6.

    Reference: autograd through the class itself (:func:`lrsa.course.fine_tuning.soft_gradient`;
    the class casts the teacher's logits to float32, hence the tolerance).
    """
    from .fine_tuning import soft_gradient
    ref = soft_gradient(student_logits, teacher_logits, temperature).numpy()
    return compare("gradient of the soft term", answer, ref,
                    "differentiate log-softmax: d/ds of -sum_k q_k log softmax(s/T)_k is "
                    "(softmax(s/T) - q)/T; then count the T^2 in front and the average over "
                    "the batch.", atol=1e-6)


def soft_term_limit(answer, student_logits, teacher_logits):
    r"""The Frobenius norm that the soft term's gradient (with its :math:`T^2`, see
    :func:`soft_term_gradient`) tends to as :math:`T \to \infty`, to a relative 1e-3.

    Reference: the gradient by autograd at :math:`T = 10^4`, where it is within about
    :math:`10^{-4}` of its limit for logits of order 1-10.
    """
    from .fine_tuning import soft_gradient
    ref = float(np.linalg.norm(soft_gradient(student_logits, teacher_logits, 1e4).numpy()))
    return compare("limit of the soft term's gradient norm", answer, ref,
                    "expand softmax(z/T) to first order in 1/T: (1 + z/T - mean(z)/T)/K; "
                    "the T^2 and the 1/T of the gradient leave a finite limit. Each row's "
                    "logits count only relative to their mean.", rtol=1e-3)


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
    return compare("rank of B alone at equal size", answer, r,
                    "eq. (15) counts n per nonzero column of A and n + d per rank of U V; "
                    "spend lrsa's whole count on U V alone and round down.")


def sqrt_spread_share(answer, shapes, c):
    r"""The share of the weights a network of layers of ``shapes`` (a list of :math:`(n_l,
    d_l)`) keeps when each layer keeps :math:`\mathrm{CR}_l = \min(1, c/\sqrt{n_l d_l})` of
    its :math:`n_l d_l` weights (``Budget(spread="sqrt")``), to 1e-9.

    Reference: ``lrsa.pipeline.budget.spread_by_sqrt`` itself, asked for the student's
    share: its bisection must land on ``c`` (a wrong share finds another :math:`c`).
    """
    import torch
    from ..pipeline.budget import LayerPlan, spread_by_sqrt

    title = "network share kept by the sqrt spread"
    if unanswered(answer):
        return not_answered(title)
    share = float(numbers(answer, (), title))
    if not 0 < share <= 1:
        return verdict(title, False, "a share of the weights lies between 0 and 1")
    layers = [(f"l{i}", torch.nn.Linear(int(d), int(n), bias=False))
              for i, (n, d) in enumerate(shapes)]
    plan = {name: LayerPlan() for name, _ in layers}
    spread_by_sqrt(plan, layers, share)
    found = [plan[name].size * math.sqrt(m.weight.numel()) for name, m in layers
             if plan[name].size < 1]
    ok = bool(found) and math.isclose(found[0], c, rel_tol=1e-6)
    return verdict(title, ok, "weight each layer's CR by its n d: the share is "
                    "sum_l min(n_l d_l, c sqrt(n_l d_l)) / sum_l n_l d_l.")
