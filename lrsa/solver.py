r"""One layer: A + B from sampled inputs X and responses Y (paper Algorithm 1).

The problem, per sample so that the lambdas do not change meaning with N:

.. math::

    \min_{A,B}\ F(A,B) = \frac{1}{2N}\|Y - r((A+B)X + b\mathbf 1^\top)\|_F^2
    + \lambda_1\|A\|_{2,1} + \lambda_2\|B\|_*

with :math:`X \in \mathbb R^{d\times N}` lowered inputs (d = c k^2, PyTorch's channel-major
``weight.reshape(n, -1)`` order), :math:`Y\in\mathbb R^{n\times N}` target responses and
:math:`r` the ReLU or the identity. Splitting :math:`A + B - M = 0` and writing
:math:`f(M)` for the data term, each iteration predicts

.. math::

    \hat A = \operatorname{prox}_{\frac{\lambda_1}{t}\|\cdot\|_{2,1}}(M - B - \Lambda/t),\quad
    \hat B = \operatorname{prox}_{\frac{\lambda_2}{t}\|\cdot\|_*}(M - \hat A - \Lambda/t),\quad
    \hat M = \operatorname{prox}_{f/t}(\hat A + \hat B + \Lambda/t),

:math:`\hat\Lambda = \Lambda + t(\hat A + \hat B - \hat M)`, then corrects
:math:`(B, -M, \Lambda)` by :func:`lrsa.admm.he_yuan_correction` (the essential variables of
He and Yuan's theorem; eq. 13 as printed acts on :math:`(B, M)`, a form it does not cover).

The M-step. With :math:`G = XX^\top/N` and :math:`C = (Y - b\mathbf 1^\top)X^\top/N`:

* linear: :math:`\hat M = (C + tV)(G + tI)^{-1}`, exact; :math:`(G+tI)` is factorized once.
* ReLU: :math:`f` is not convex (see :func:`relu_nonconvexity_example`), so there is no
  global guarantee. Since :math:`h(z) = \tfrac12(y - \max(z,0))^2` with :math:`y \ge 0` has
  curvature at most 1 (its kink at 0 is concave), :math:`f(M') \le f(M) + \langle\nabla
  f(M), M'-M\rangle + \tfrac12\operatorname{tr}((M'-M)G(M'-M)^\top)`. Minimizing this bound
  plus :math:`\tfrac t2\|M'-V\|^2` gives the step
  :math:`M' = M - (\nabla f(M) + t(M - V))(G+tI)^{-1}`, which never increases the
  subproblem's objective and is exact in one step for the linear response. ``inner_iter``
  such steps (default 1) are taken per ADMM iteration, warm-started, so for the ReLU the
  predicted M approximates the prox instead of solving it.

:func:`lrsa.pipeline.compress` runs this ADMM on the linear response only, to rank input channels
(``lrsa.pipeline.approximate_layer``); the weights it keeps come from exact fits.

F and its penalties are in :mod:`lrsa.objective`, what a solve returns in
:mod:`lrsa.solution`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import NamedTuple

from array_api_compat import array_namespace, device

from .admm import he_yuan_correction
from .arrays import cholesky_or_none, like, solve_triangular
from .objective import check_layer_data, n_m_indicator, sparse_penalty, weighted_penalty
from .prox import svt_factors
from .solution import Array, HISTORY, LayerSolution, record_iteration
from .structured_fit import refit_svd
from .utils import check_floating, check_number, given_or_built, progress_bar

__all__ = ["ADMMOptions", "ADMMStep", "LayerProblem", "relu_nonconvexity_example",
           "solve_layer"]

RESPONSES = ("relu", "linear")
NUMERICAL_ZERO = 1e-9  # singular values of B below this fraction of ||A + B||_F are dropped
ADAPT_EVERY, ADAPT_UNTIL, ADAPT_MAX = 10, 200, 8


@dataclass(frozen=True)
class ADMMOptions:
    r"""Settings of the three-block ADMM, checked once (ValueError naming a bad one).

    Attributes
    ----------
    t : float > 0 or "auto"
        Penalty. A number is kept fixed (the setting of the convergence theory). "auto"
        starts where lam/t matches the scale of W's columns and singular values and balances
        the residuals (t times or divided by 3, at most 8 times, only in the first 200
        iterations, refactorizing G + tI each time), then keeps t fixed.
    max_iter : int >= 1
    tol : float > 0
        Stop when both relative residuals are below it.
    correction : bool
        Apply the He-Yuan correction (False: the direct extension).
    tau, alpha : float
        Correction parameters (paper: 1/2 and 3/4).
    inner_iter : int >= 1
        Majorize-minimize steps per ReLU M-step.
    debias : bool
        After the ADMM, refit the data term on the structure it found (the nonzero columns
        of A and the row space of B), without penalties (column sparsity only).
    sparsity : str
        The sparse block's penalty, and so its prox in the A-step:
        ``"column"`` (default, the paper): :math:`\lambda_1\|A\|_{2,1}`,
        :func:`lrsa.prox.prox_l21`, whole columns zero; ``"unstructured"``:
        :math:`\lambda_1\|A\|_1`, :func:`lrsa.prox.soft_threshold`, single entries zero
        (both convex: the linear problem keeps the convergence guarantee);
        ``"N:M"`` (e.g. ``"2:4"``): the indicator of N:M sparsity,
        :func:`lrsa.prox.project_n_m` (lam1 is unused; the set is not convex, so the ADMM
        is a heuristic there, without a guarantee).
    """

    t: float | str = "auto"
    max_iter: int = 300
    tol: float = 1e-4
    correction: bool = True
    tau: float = 0.5
    alpha: float = 0.75
    inner_iter: int = 1
    debias: bool = False
    sparsity: str = "column"

    def __post_init__(self):
        sparse_penalty(self.sparsity)  # a ValueError naming a wrong value
        if self.debias and self.sparsity != "column":
            raise ValueError("debias refits column supports; it needs sparsity='column', got "
                             f"{self.sparsity!r}")
        if not (isinstance(self.t, str) and self.t == "auto"):
            object.__setattr__(self, "t", check_number("t", self.t, positive=True))
        for name in ("tol", "alpha"):
            object.__setattr__(self, name, check_number(name, getattr(self, name),
                                                         positive=True))
        object.__setattr__(self, "tau", check_number("tau", self.tau))
        if int(self.max_iter) < 1 or int(self.inner_iter) < 1:
            raise ValueError(f"max_iter and inner_iter must be >= 1, got {self.max_iter}, "
                             f"{self.inner_iter}")
        object.__setattr__(self, "max_iter", int(self.max_iter))
        object.__setattr__(self, "inner_iter", int(self.inner_iter))


class ADMMStep(NamedTuple):
    """One prediction of Algorithm 1 (what ``callback(k, step)`` receives).

    A, B, M, Lam : (n, d) the predicted A-hat, B-hat = U diag(s) Vh, M-hat, Lambda-hat.
    U, s, Vh : (n, r), (r,), (r, d) the thin SVD of B-hat.
    f : data term at the M the iteration started from (ReLU) or at M-hat (linear).
    scale : max(||A-hat + B-hat||, ||M-hat||); primal, dual : the relative residuals
    ||A-hat + B-hat - M-hat|| / scale and ||M-hat - M|| / ||M-hat||, M the iterate this
    prediction started from.
    """

    A: Array
    U: Array
    s: Array
    Vh: Array
    B: Array
    M: Array
    Lam: Array
    f: float
    scale: float
    primal: float
    dual: float

    @property
    def rank(self):
        return int(self.s.shape[0])


@dataclass
class ADMMState:
    """The iterate (A, B, M, Lambda), the penalty t and its factorization (G + tI)^-1."""

    A: Array
    B: Array
    M: Array
    Lam: Array
    t: float
    Hinv: Array
    t_changes: int = 0


class LayerProblem:
    r"""One layer's data, checked once, with the statistics every solve needs.

    Holds X, Y, the bias, :math:`G = XX^\top/N`, :math:`C = (Y - b\mathbf 1^\top)X^\top/N`
    (accumulated in float64) and the factorizations of :math:`G + tI` already made, so that
    several solves on the same layer (a lambda search, a warm-started ReLU solve) share them.
    :func:`solve_layer` is ``LayerProblem(X, Y, bias, response).solve(lam1, lam2, ...)``.
    Everything is computed in X's array kind (NumPy, or torch on X's device).
    """

    def __init__(self, X, Y, bias=None, response="relu", chunk=4096):
        X, Y, bias = check_layer_data(X, Y, bias)
        self.xp = xp = array_namespace(X)
        self.X, self.bias, self.response = X, bias, _check_response(response, Y)
        d, N = X.shape
        self.N = N
        G = xp.zeros((d, d), dtype=xp.float64, device=device(X))
        for i in range(0, N, chunk):
            Xc = xp.astype(X[:, i:i + chunk], xp.float64)
            G += Xc @ Xc.T
        self.G64 = G / N
        self.G = xp.astype(self.G64, X.dtype)
        self.mean_eig = max(float(xp.linalg.trace(self.G64)) / d, 1e-12)
        self._factors = {}
        self._set_targets(Y, chunk)

    def _set_targets(self, Y, chunk=4096):
        """Y and the statistics that depend on it: C and ||Y - b||^2 / N."""
        X, bias, N, xp = self.X, self.bias, self.N, self.xp
        f64 = lambda T: xp.astype(T, xp.float64)  # noqa: E731
        C = xp.zeros((Y.shape[0], X.shape[0]), dtype=xp.float64, device=device(X))
        yy = 0.0
        for i in range(0, N, chunk):
            Rc = f64(Y[:, i:i + chunk]) - f64(bias)[:, None]
            C += Rc @ f64(X[:, i:i + chunk]).T
            yy += float(xp.sum(Rc * Rc))
        self.Y, self.C64, self.yy = Y, C / N, yy / N
        self.C = xp.astype(self.C64, X.dtype)

    def retarget(self, Y, response):
        """The same inputs with other targets: shares X, G and the factorizations of
        G + tI (the expensive parts), recomputes only C. E.g. post-ReLU targets for the
        ReLU stage after a linear solve on the pre-activation."""
        _, Y, _ = check_layer_data(self.X, Y, self.bias)
        other = copy.copy(self)
        other.response = _check_response(response, Y)
        other._set_targets(Y)
        return other

    def with_response(self, response):
        """The same data and statistics for the other response (targets must suit it)."""
        other = copy.copy(self)
        other.response = _check_response(response, self.Y)
        return other

    def factor(self, t):
        """(G + tI)^{-1}, once per penalty value (the last few are kept): Cholesky, one
        triangular solve, one product (faster than cholesky_inverse here), in the working
        precision unless that is not positive definite numerically."""
        if t in self._factors:
            return self._factors[t]
        xp, dt, d = self.xp, self.X.dtype, self.X.shape[0]
        eye = xp.eye(d, dtype=xp.float64, device=device(self.X))
        for prec in (dt, xp.float64):
            L = cholesky_or_none(xp.astype(self.G64 + t * eye, prec))
            if L is not None:
                Linv = solve_triangular(L, xp.astype(eye, prec), lower=True)
                if len(self._factors) >= 4:
                    self._factors.pop(next(iter(self._factors)))
                self._factors[t] = xp.astype(Linv.T @ Linv, dt)
                return self._factors[t]
        raise ValueError(f"G + tI is not positive definite for t={t:g}")

    def solve(self, lam1, lam2, options=None, *, W0=None, progress=False, callback=None,
              **fields):
        """Solve for A + B: Algorithm 1, one prediction and one correction per iteration.

        ``options`` is an :class:`ADMMOptions`, or give its fields as keywords; the other
        parameters are those of :func:`solve_layer`. ``callback(k, step)`` is called after
        iteration k with its :class:`ADMMStep`.
        """
        lam1 = check_number("lam1", lam1, allow_inf=True)
        lam2 = check_number("lam2", lam2, allow_inf=True)
        opts = given_or_built(ADMMOptions, options, fields)
        state = self._start(W0, lam1, lam2, opts)
        history = {k: [] for k in HISTORY}
        converged, message = False, f"stopped after max_iter={opts.max_iter} iterations"
        last, k = None, 0
        with progress_bar(progress, opts.max_iter, f"solve_layer ({self.response})") as bar:
            for k in range(1, opts.max_iter + 1):
                step = self._predict(state, lam1, lam2, opts)
                if step is None:
                    message = f"diverged: non-finite values at iteration {k}"
                    break
                last = step
                self._adapt_penalty(state, step, k, opts)
                self._correct(state, step, opts)
                record_iteration(history, step, lam1, lam2, opts.sparsity)
                if callback is not None:
                    callback(k, step)
                bar.update(1)
                bar.set_postfix(r=f"{step.primal:.1e}", s=f"{step.dual:.1e}", rank=step.rank)
                if step.scale > 1e12 * (1 + _norm(self.C64)):
                    message = f"diverged: iterates grew without bound at iteration {k}"
                    break
                if step.primal < opts.tol and step.dual < opts.tol:
                    converged, message = True, f"converged in {k} iterations"
                    break
        return self._solution(last, state, lam1, lam2, opts, history=history,
                              converged=converged, iterations=k, message=message)

    def _start(self, W0, lam1, lam2, opts):
        """A, B, M = A + B, the multiplier (the gradient of f at M, its value at a solution)
        and the penalty: from W0, or from the ridge solution (linear) or the linear solve
        on the same data (ReLU)."""
        n, d, xp = self.Y.shape[0], self.X.shape[0], self.xp
        if W0 is None and self.response == "relu":
            W0 = self.with_response("linear").solve(
                lam1, lam2, dataclasses.replace(opts, debias=False, inner_iter=1))
        if isinstance(W0, LayerSolution):
            check_floating(W0.A, "W0.A")
            check_floating(W0.B, "W0.B")
            A, B = like(W0.A, self.X), like(W0.B, self.X)
        elif W0 is not None:
            check_floating(W0, "W0")
            B = like(W0, self.X)
            A = xp.zeros_like(B)
        else:
            A = xp.zeros((n, d), dtype=self.X.dtype, device=device(self.X))
            B = self.C @ self.factor(self.mean_eig)
        if tuple(A.shape) != (n, d):
            raise ValueError(f"W0 must have shape ({n}, {d}) = (outputs, lowered inputs), "
                             f"got {tuple(A.shape)}")
        M = A + B
        t = _initial_penalty(M, lam1, lam2, self.mean_eig) if opts.t == "auto" else opts.t
        if opts.t == "auto" and sparse_penalty(opts.sparsity)[1] is n_m_indicator:
            # a projection onto a nonconvex set: a small t lets A jump between supports
            # and the iteration wander (2:4 on a random layer: t = 0.1 ends with 16x the
            # data term of t >= mean eigenvalue of G, which converges)
            t = max(t, 3.0 ** math.ceil(math.log(self.mean_eig, 3)))
        return ADMMState(A=A, B=B, M=M, Lam=self.f_and_grad(M)[1], t=t, Hinv=self.factor(t))

    def _predict(self, state, lam1, lam2, opts):
        """One sweep of the direct extension: A-hat, B-hat, M-hat, Lambda-hat (None when a
        value is not finite)."""
        M, B, Lam, t, inner_iter = state.M, state.B, state.Lam, state.t, opts.inner_iter
        A_hat = sparse_penalty(opts.sparsity)[0](M - B - Lam / t, lam1 / t)
        if not _finite(A_hat):
            return None
        U, s, Vh = svt_factors(M - A_hat - Lam / t, lam2 / t)
        B_hat = (U * s) @ Vh
        M_hat, f_val = self._m_step(A_hat + B_hat + Lam / t, M, state.Hinv, t, inner_iter)
        if not (_finite(M_hat) and math.isfinite(f_val)):
            return None
        W_hat = A_hat + B_hat
        norm_W, norm_M = _norm(W_hat), _norm(M_hat)
        return ADMMStep(
            A=A_hat, U=U, s=s, Vh=Vh, B=B_hat, M=M_hat, Lam=Lam + t * (W_hat - M_hat),
            f=f_val, scale=max(norm_W, norm_M),
            primal=_norm(W_hat - M_hat) / max(norm_W, norm_M, 1e-30),
            dual=_norm(M_hat - M) / max(norm_M, 1e-30))

    def _m_step(self, V, M, Hinv, t, inner_iter):
        """prox_{f/t}(V) and f at the start: exact for the linear response,
        majorize-minimize steps from M for the ReLU."""
        if self.response == "linear":
            M_hat = (self.C + t * V) @ Hinv
            # f(M_hat) without another n x d x d product, from M_hat G = C + tV - t M_hat
            fitted = self.xp.sum(M_hat * (self.C - t * (V - M_hat)))
            return M_hat, 0.5 * self.yy - 0.5 * float(fitted)
        f_val = None
        for _ in range(int(inner_iter)):
            f_j, grad = self.f_and_grad(M)
            f_val = f_j if f_val is None else f_val
            M = M - (grad + t * (M - V)) @ Hinv
        return M, f_val

    def _adapt_penalty(self, state, step, k, opts):
        """Residual balancing (Boyd et al. 2011, 3.4.1) every ADAPT_EVERY iterations, at most
        ADAPT_MAX times and only until ADAPT_UNTIL: afterwards t is fixed, as the
        convergence theory assumes. Not for an N:M set (see :meth:`_start`)."""
        if not (opts.t == "auto" and k % ADAPT_EVERY == 0 and k <= ADAPT_UNTIL
                and state.t_changes < ADAPT_MAX
                and sparse_penalty(opts.sparsity)[1] is not n_m_indicator):
            return
        s_dual = state.t * step.dual * _norm(step.M) / max(_norm(step.Lam), 1e-30)
        if step.primal > 10 * s_dual or s_dual > 10 * step.primal:
            state.t *= 3.0 if step.primal > s_dual else 1 / 3.0
            state.Hinv, state.t_changes = self.factor(state.t), state.t_changes + 1

    @staticmethod
    def _correct(state, step, opts):
        """The He-Yuan correction of (B, -M, Lambda), or the direct extension's update."""
        if opts.correction:
            state.B, neg_M, state.Lam = he_yuan_correction(
                state.B, step.B, -state.M, -step.M, state.Lam, step.Lam, opts.tau, opts.alpha)
            state.M = -neg_M
        else:
            state.B, state.M, state.Lam = step.B, step.M, step.Lam
        state.A = step.A

    def _solution(self, last, state, lam1, lam2, opts, **outcome):
        """The last finite prediction (A-hat, B-hat) as a :class:`LayerSolution`, refitted
        without penalties when ``opts.debias``."""
        A, U, s, Vh = ((last.A, last.U, last.s, last.Vh) if last is not None
                       else (state.A, *svt_factors(state.B, 0.0)))
        if opts.debias:
            A, U, s, Vh = refit_svd(self, A, Vh, 10 * opts.inner_iter, U * s)
        # singular values left a rounding error above the threshold (where the limit is
        # B = 0 they sit at 1e-13) are zero: they would count as rank and as storage
        keep = s > NUMERICAL_ZERO * max(_norm(A + (U * s) @ Vh), 1e-30)
        U, s, Vh = U[:, keep], s[keep], Vh[keep]
        B = (U * s) @ Vh
        root = self.xp.sqrt(s)
        obj = self.f_and_grad(A + B, grad=False)[0] + weighted_penalty(
            lam1, sparse_penalty(opts.sparsity)[1](A)) + weighted_penalty(
            lam2, float(self.xp.sum(s)))
        return LayerSolution(A=A, B=B, U=U * root, V=root[:, None] * Vh, bias=self.bias,
                             objective=obj, response=self.response, lam1=lam1, lam2=lam2,
                             t=state.t, **outcome)

    def f_and_grad(self, M, grad=True):
        """Data term f(M) and its gradient (ReLU: the a.e. gradient)."""
        xp = self.xp
        if self.response == "linear":
            MG = M @ self.G
            f = 0.5 * self.yy - float(xp.sum(M * self.C)) + 0.5 * float(xp.sum(MG * M))
            return f, (MG - self.C) if grad else None
        Z = M @ self.X + self.bias[:, None]
        R = self.Y - xp.clip(Z, min=0)
        f = 0.5 * float(xp.sum(xp.astype(R, xp.float64) ** 2)) / self.N
        if not grad:
            return f, None
        return f, -((R * (Z > 0)) @ self.X.T) / self.N


def solve_layer(X, Y, lam1, lam2, options=None, *, response="relu", W0=None, bias=None,
                progress=False, callback=None, **fields):
    r"""Approximate one layer by A + B (paper Algorithm 1 with the He-Yuan correction).

    Parameters
    ----------
    X : (d, N) lowered inputs, a NumPy array or a torch tensor: the solve runs in that kind
        (and on the tensor's device) and returns it.
    Y : (n, N) target responses; for ``response="relu"`` they must be >= 0.
    lam1, lam2 : float >= 0, weights of :math:`\|A\|_{2,1}` and :math:`\|B\|_*`.
    options : ADMMOptions, optional
        The ADMM's settings; or give its fields as keywords (below).
    response : {"relu", "linear"}
    W0 : (n, d) array, or a :class:`~lrsa.solution.LayerSolution` to warm-start from (A and B
        taken from it). An array starts the iteration at A = 0, B = M = W0. With ``W0=None``
        the linear solve starts from the ridge solution and the ReLU solve from the linear
        solution on the same data.
    bias : (n,) fixed bias b (default 0).
    progress : show a tqdm bar.
    callback : callable or None
        ``callback(k, step)`` after iteration k, with its :class:`ADMMStep`.
    **fields
        The fields of :class:`ADMMOptions`: ``t`` ("auto" or a fixed penalty),
        ``max_iter``, ``tol``, ``correction``, ``tau``, ``alpha``, ``inner_iter``,
        ``debias`` (refit the data term on the structure found, removing the shrinkage bias
        of the convex relaxation; the result then no longer minimizes F), ``sparsity``
        (``"column"``, the paper's l2,1; ``"unstructured"``, l1; or ``"N:M"``).

    Returns
    -------
    LayerSolution
    """
    return LayerProblem(X, Y, bias, response).solve(lam1, lam2, options, W0=W0,
                                                    progress=progress, callback=callback,
                                                    **fields)


def _check_response(response, Y):
    """``response``, checked against the targets Y (post-ReLU ones are >= 0)."""
    if response not in RESPONSES:
        raise ValueError(f"response must be one of {RESPONSES}, got {response!r}")
    if response == "relu" and bool(array_namespace(Y).any(Y < 0)):
        raise ValueError("response='relu' needs targets Y >= 0 (they are post-ReLU "
                         "responses); pass the pre-activation with response='linear'")
    return response


def _finite(T):
    xp = array_namespace(T)
    return bool(xp.all(xp.isfinite(T)))


def _norm(T):
    """The Frobenius norm, as a float."""
    return float(array_namespace(T).linalg.vector_norm(T))


def _initial_penalty(W, lam1, lam2, mean_eig):
    """A penalty t whose thresholds lam/t are comparable to W's column norms and singular
    values, so both proximal steps act from the first iteration."""
    (n, d), xp = W.shape, array_namespace(W)
    col = float(xp.mean(xp.linalg.vector_norm(W, axis=0)))
    sing = _norm(W) / math.sqrt(min(n, d))
    cands = [lam / max(scale, 1e-30) for lam, scale in ((lam1, col), (lam2, sing))
             if math.isfinite(lam)]  # an infinite lambda only zeroes its part
    t = max(cands, default=0.0)
    t = t if t > 0 else mean_eig
    # snap to powers of 3 (the adaptation's step): nearby lambdas share factorizations
    return 3.0 ** round(math.log(t, 3))


def relu_nonconvexity_example():
    r"""A one-dimensional witness that :math:`f(m) = (y - \max(mx, 0))^2` is not convex.

    With :math:`x = 1, y = 1`: :math:`f(-1) = 1`, :math:`f(1) = 0` but the midpoint
    :math:`f(0) = 1 > \tfrac12(f(-1) + f(1)) = \tfrac12`. So the paper's claim that problem
    (3) is convex (and Theorem 1's premise) holds only for the linear response.

    Returns
    -------
    dict with the three points and values.
    """
    f = lambda m: (1.0 - max(m * 1.0, 0.0)) ** 2  # noqa: E731
    pts = (-1.0, 0.0, 1.0)
    return {"m": pts, "f": tuple(f(m) for m in pts),
            "midpoint_gap": f(0.0) - 0.5 * (f(-1.0) + f(1.0))}

