r"""cvxpy formulations: the independent reference for tests and notebooks.

cvxpy is an optional dependency (``pip install lrsa[verify]``); this module is imported only
by tests and notebooks. Sizes should stay small (a few hundred variables).
"""

from __future__ import annotations

import numpy as np

__all__ = ["prox_l21_cvxpy", "svt_cvxpy", "soft_threshold_cvxpy", "solve_linear_layer_cvxpy"]


def _cp():
    try:
        import cvxpy as cp
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("lrsa.reference needs cvxpy: pip install 'lrsa[verify]'") from e
    return cp


def _prox(V, tau, norm, solver):
    cp = _cp()
    V = np.asarray(V, dtype=float)
    Xv = cp.Variable(V.shape)
    cp.Problem(cp.Minimize(tau * norm(Xv) + 0.5 * cp.sum_squares(Xv - V))).solve(solver=solver)
    return Xv.value


def prox_l21_cvxpy(V, tau, solver="CLARABEL"):
    """argmin_X tau * sum_j ||X[:, j]||_2 + 1/2 ||X - V||_F^2 by a conic solver."""
    cp = _cp()
    return _prox(V, tau, lambda X: cp.sum(cp.norm(X, 2, axis=0)), solver)


def svt_cvxpy(V, tau, solver="CLARABEL"):
    """argmin_X tau * ||X||_* + 1/2 ||X - V||_F^2 by a conic (SDP) solver."""
    cp = _cp()
    return _prox(V, tau, cp.normNuc, solver)


def soft_threshold_cvxpy(V, tau, solver="CLARABEL"):
    """argmin_X tau * ||X||_1 + 1/2 ||X - V||_F^2."""
    cp = _cp()
    return _prox(V, tau, lambda X: cp.sum(cp.abs(X)), solver)


def solve_linear_layer_cvxpy(X, Y, lam1, lam2, bias=None, solver="CLARABEL",
                             sparsity="column"):
    r"""The linear-response layer problem

    .. math::

        \min_{A,B} \frac1{2N}\|Y - (A+B)X - b\mathbf 1^\top\|_F^2 + \lambda_1\|A\|_{2,1}
        + \lambda_2\|B\|_*

    solved by cvxpy (``sparsity="unstructured"``: :math:`\lambda_1\|A\|_1` instead).
    Returns ``(A, B, objective)``.
    """
    cp = _cp()
    X, Y = np.asarray(X, float), np.asarray(Y, float)
    n, N = Y.shape
    b = np.zeros(n) if bias is None else np.asarray(bias, float)
    A = cp.Variable((n, X.shape[0]))
    B = cp.Variable((n, X.shape[0]))
    data = cp.sum_squares(Y - b[:, None] - (A + B) @ X) / (2 * N)
    sparse = {"column": lambda: cp.sum(cp.norm(A, 2, axis=0)),
              "unstructured": lambda: cp.sum(cp.abs(A))}[sparsity]()
    obj = data + lam1 * sparse + lam2 * cp.normNuc(B)
    prob = cp.Problem(cp.Minimize(obj))
    prob.solve(solver=solver)
    return A.value, B.value, float(prob.value)
