r"""Exact fits on a fixed structure: once Algorithm 1 (:mod:`lrsa.solver`) has chosen which
columns A keeps and the rank of B, the weights :func:`lrsa.pipeline.compress` stores come from here.

:class:`StructuredFit` solves the linear-response least squares with the support and the rank
fixed in closed form, and refines it toward the ReLU response
(:meth:`StructuredFit.refine_relu`) without leaving that structure. :func:`refit` refits
either response's data term on the support of A and the row space of B: the first block of
each refinement round, and the ADMM's ``debias`` option.
"""

from __future__ import annotations

from array_api_compat import array_namespace, device

from .arrays import cho_solve

__all__ = ["StructuredFit", "refit"]


class StructuredFit:
    r"""Exact least squares on a fixed structure, for the linear response.

    For a support :math:`S` (columns of A) and a rank r,

    .. math::

        \min_{A,B}\ \frac{1}{2N}\|Y - b\mathbf 1^\top - (A + B)X\|_F^2
        \quad\text{s.t. } A_{:,j} = 0\ (j\notin S),\ \operatorname{rank} B \le r

    has a closed form. :math:`A_S X_S` absorbs everything in the span of the rows of
    :math:`X_S`; B is the reduced-rank regression of what is left. With the full fit
    :math:`W_\star = C G^{-1}` and the support-only fit :math:`W_S = C_S G_{SS}^{-1}`
    (placed at columns S), the fitted covariances :math:`F_\star = W_\star C^\top` and
    :math:`F_S = W_S C_S^\top` give :math:`B = U_r U_r^\top(W_\star - W_S)` with
    :math:`U_r` the top r eigenvectors of :math:`F_\star - F_S`, and :math:`A = W_S`.
    The data term at the optimum is :math:`\tfrac12(\|Y-b\|^2/N - \operatorname{tr} F_S -
    \sum_{i\le r}\lambda_i(F_\star - F_S))`. With S empty this is reduced-rank regression.

    The ADMM chooses the structure (which columns, what rank); this finds the best weights
    on it, where the convex relaxation shrinks them and can tilt the subspace.

    Parameters
    ----------
    problem : lrsa.solver.LayerProblem (its G and C are used; any response: C holds its targets).
    """

    def __init__(self, problem):
        self.problem = problem
        G, C, yy, xp = problem.G64, problem.C64, problem.yy, problem.xp
        # float64 throughout, so a far smaller ridge than the float32 refit's suffices
        ridge = relative_ridge(G, 1e-10)
        self.G = G + ridge * xp.eye(G.shape[0], dtype=G.dtype, device=device(G))
        self.C, self.yy = C, yy
        self.W_full = cho_solve(xp.linalg.cholesky(self.G), C.T).T  # n x d
        self.F_full = self.W_full @ C.T                              # n x n

    def fit(self, columns, rank):
        """(A, U, V) in the problem's dtype: A (n, d) supported on ``columns``, U (n, r),
        V (r, d) balanced (equal singular values), and the objective's value."""
        p, xp = self.problem, self.problem.xp
        C, n, d = self.C, self.C.shape[0], self.C.shape[1]
        S = xp.asarray(sorted(int(j) for j in columns), dtype=xp.int64, device=device(C))
        A = xp.zeros((n, d), dtype=C.dtype, device=device(C))
        F_S = xp.zeros((n, n), dtype=C.dtype, device=device(C))
        if S.shape[0]:
            C_S = xp.take(C, S, axis=1)
            G_SS = xp.take(xp.take(self.G, S, axis=0), S, axis=1)
            A[:, S] = xp.linalg.solve(G_SS, C_S.T).T
            F_S = A[:, S] @ C_S.T
        F_res = self.F_full - F_S
        evals, evecs = xp.linalg.eigh(0.5 * (F_res + F_res.T))
        rank = max(0, min(int(rank), n, d))
        top = evecs[:, evals.shape[0] - rank:]
        V = top.T @ (self.W_full - A)
        # balanced factors: U diag(s) Vh = top V, split as U sqrt(s), sqrt(s) Vh
        P, s, Vh = xp.linalg.svd(V, full_matrices=False)
        root = xp.sqrt(s)
        U_f, V_f = (top @ P) * root, root[:, None] * Vh
        f = 0.5 * (self.yy - float(xp.linalg.trace(F_S))
                   - float(xp.sum(evals[evals.shape[0] - rank:])))
        dt = p.X.dtype
        return xp.astype(A, dt), xp.astype(U_f, dt), xp.astype(V_f, dt), f

    def refine_relu(self, relu_problem, A, U, V, rounds=2, steps=5, damping=1.0):
        r"""Fit the post-ReLU response on the structure of A + U V (support of A, rank of
        U V), alternating two majorize-minimize blocks, each never increasing the error:

        * A's columns, U and the bias with the row space of V fixed (:func:`refit`), then
        * V with A, U and the bias fixed:
          :math:`V \leftarrow V + (U^\top U)^{-1}U^\top R X^\top (G + \delta I)^{-1}/N`
          with :math:`R = (Y - \max(Z, 0))\odot[Z > 0]`, the minimizer of the same quadratic
          bound (curvature at most :math:`U^\top U \otimes G`) plus a proximal term.

        Unlike a refit on a fixed row space, this moves the subspace itself toward the
        nonlinear response. The bias is free (it costs no stored weight beyond the
        original's). ``relu_problem`` shares X with the problem this fit was made from
        (:meth:`lrsa.solver.LayerProblem.retarget`).

        Few rounds and the damping :math:`\delta` (``damping`` times the mean eigenvalue of
        G) keep it from fitting the calibration samples' noise: the ReLU mask leaves about
        half the samples per output, and undamped rounds lower the error on the fitted
        samples while raising it on held-out ones (measured on VGG-16 layers, see
        ``benchmarks/relu_refine_heldout.py``).

        Returns (A, U, V, bias).
        """
        p, L, b, xp = relu_problem, None, relu_problem.bias, relu_problem.xp
        for _ in range(int(rounds)):
            kept = (A, U, V, b)
            A, U, V, b = refit(p, A, U, V, steps, bias=b)
            if U.shape[1] == 0:
                break
            if L is None:
                eye = xp.eye(self.G.shape[0], dtype=self.G.dtype, device=device(self.G))
                L = xp.astype(xp.linalg.cholesky(self.G + damping * p.mean_eig * eye),
                              p.X.dtype)
            UtU_inv = xp.linalg.inv(U.T @ U)
            AX = A @ p.X + b[:, None]
            for _ in range(int(steps)):
                Z = AX + U @ (V @ p.X)
                R = (p.Y - xp.clip(Z, min=0)) * (Z > 0)
                step = UtU_inv @ (((U.T @ R) @ p.X.T) / p.N)
                V = V + cho_solve(L, step.T).T
            if not all(bool(xp.all(xp.isfinite(T))) for T in (U, V, b)):
                # keep the last finite answer
                return kept
        return A, U, V, b


def refit(problem, A, U, V, steps=20, bias=None):
    """Refit ``problem``'s data term on the structure of A + U V: the support of A and the
    row space of V stay, all coefficients move (ReLU: ``steps`` majorize-minimize steps
    from the given weights, never increasing the error; linear: exact). With ``bias`` (n,)
    the bias is fitted too, starting there.

    Returns (A, U, V) with U (n, r), V (r, d) balanced, and the bias if one was given.
    """
    xp = problem.xp
    Q = xp.linalg.qr(V.T).Q.T  # orthonormal rows spanning the row space of V
    A, U, s, Vh, *b = refit_svd(problem, A, Q, steps, U @ (V @ Q.T), bias)
    root = xp.sqrt(s)
    return (A, U * root, root[:, None] * Vh, *b)


def refit_svd(problem, A, Vh, steps, UB, bias=None):
    """Least-squares refit of W = A[:, S] E_S + U Vh on fixed support S and row space Vh
    (orthonormal rows), started at U = ``UB``: :func:`refit` for a low-rank part already
    in SVD form. Returns (A, U, s, Vh') with the low-rank part U diag(s) Vh'.

    Works in the k-dimensional basis P = [E_S; Vh] (k = |S| + r): PX is k x N, so each
    step costs n k N instead of n d N. Linear response: one solve with the projected Gram
    matrix. ReLU: majorize-minimize steps (as in the M-step) on the coefficients, started at
    the given solution. ``bias`` (n,) given: it is fitted too (a constant row joins the
    basis) and returned last; None: the problem's bias stays.
    """
    d, xp, on = A.shape[1], problem.xp, device(A)
    S = xp.nonzero(xp.linalg.vector_norm(A, axis=0) > 0)[0]
    P = xp.concat([xp.take(xp.eye(d, dtype=A.dtype, device=on), S, axis=0), Vh])  # k x d basis
    k, n_S = P.shape[0], S.shape[0]
    PX = P @ problem.X
    start = xp.concat([xp.take(A, S, axis=1), UB], axis=1)
    if bias is not None:
        PX = xp.concat([PX, xp.ones((1, PX.shape[1]), dtype=PX.dtype, device=on)])
        start = xp.concat([start, bias[:, None]], axis=1)
    if PX.shape[0] == 0:
        return A, UB[:, :0], xp.zeros(0, dtype=UB.dtype, device=on), Vh
    PX64 = xp.astype(PX, xp.float64)
    G_P = (PX64 @ PX64.T) / problem.N
    # a small ridge: with fewer samples than basis rows G_P is singular
    G_P += relative_ridge(G_P) * xp.eye(PX.shape[0], dtype=G_P.dtype, device=on)
    G_inv = xp.astype(xp.linalg.inv(G_P), A.dtype)
    fixed = problem.bias[:, None] if bias is None else 0.0
    if problem.response == "linear":
        coef = ((problem.Y - fixed) @ PX.T / problem.N) @ G_inv
    else:
        coef = start
        for _ in range(steps):
            Z = coef @ PX + fixed
            R = (problem.Y - xp.clip(Z, min=0)) * (Z > 0)
            coef = coef + ((R @ PX.T) / problem.N) @ G_inv
    if not bool(xp.all(xp.isfinite(coef))):  # keep the given answer rather than garbage
        coef = start
    A = xp.zeros_like(A)
    A[:, S] = coef[:, :n_S]
    U, s, Wh = xp.linalg.svd(coef[:, n_S:k], full_matrices=False)
    keep = s > 0
    out = (A, U[:, keep], s[keep], Wh[keep] @ Vh)
    return out if bias is None else (*out, coef[:, k])


def relative_ridge(G, rel=1e-6):
    """A relative ridge that keeps an empirical Gram matrix factorizable (fewer samples
    than dimensions, or collinear inputs) without moving a well-posed fit."""
    return rel * max(float(array_namespace(G).linalg.trace(G)) / max(G.shape[0], 1), 1e-30)
