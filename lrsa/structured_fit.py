r"""Exact fits on a fixed structure: once Algorithm 1 (:mod:`lrsa.solver`) has chosen which
columns A keeps and the rank of B, the weights :func:`lrsa.pipeline.compress` stores come from here.

:class:`StructuredFit` solves the linear-response least squares with the support and the rank
fixed in closed form, and refines it toward the ReLU response
(:meth:`StructuredFit.refine_relu`) without leaving that structure. :func:`refit` refits
either response's data term on the support of A and the row space of B: the first block of
each refinement round, and the ADMM's ``debias`` option.
"""

from __future__ import annotations

import torch

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
        G, C, yy = problem.G64, problem.C64, problem.yy
        # float64 throughout, so a far smaller ridge than the float32 refit's suffices
        ridge = relative_ridge(G, 1e-10)
        self.G = G + ridge * torch.eye(G.shape[0], dtype=G.dtype, device=G.device)
        self.C, self.yy = C, yy
        L = torch.linalg.cholesky(self.G)
        self.W_full = torch.cholesky_solve(C.T, L).T  # n x d
        self.F_full = self.W_full @ C.T               # n x n

    def fit(self, columns, rank):
        """(A, U, V) in the problem's dtype: A (n, d) supported on ``columns``, U (n, r),
        V (r, d) balanced (equal singular values), and the objective's value."""
        p = self.problem
        C, n, d = self.C, self.C.shape[0], self.C.shape[1]
        S = torch.as_tensor(sorted(int(j) for j in columns), dtype=torch.long,
                            device=C.device)
        A = torch.zeros(n, d, dtype=C.dtype, device=C.device)
        F_S = torch.zeros(n, n, dtype=C.dtype, device=C.device)
        if S.numel():
            C_S = C[:, S]
            A[:, S] = torch.linalg.solve(self.G[S][:, S], C_S.T).T
            F_S = A[:, S] @ C_S.T
        F_res = self.F_full - F_S
        evals, evecs = torch.linalg.eigh(0.5 * (F_res + F_res.T))
        rank = max(0, min(int(rank), n, d))
        top = evecs[:, evals.numel() - rank:] if rank else evecs[:, :0]
        V = top.T @ (self.W_full - A)
        # balanced factors: U diag(s) Vh = top V, split as U sqrt(s), sqrt(s) Vh
        P, s, Vh = torch.linalg.svd(V, full_matrices=False)
        root = torch.sqrt(s)
        U_f, V_f = (top @ P) * root, root[:, None] * Vh
        f = 0.5 * (self.yy - float(torch.trace(F_S)) - float(evals[-rank:].sum() if rank else 0))
        dt = p.X.dtype
        return A.to(dt), U_f.to(dt), V_f.to(dt), f

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
        p, L, b = relu_problem, None, relu_problem.bias
        for _ in range(int(rounds)):
            kept = (A, U, V, b)
            A, U, V, b = refit(p, A, U, V, steps, bias=b)
            if U.shape[1] == 0:
                break
            if L is None:
                eye = torch.eye(self.G.shape[0], dtype=self.G.dtype, device=self.G.device)
                L = torch.linalg.cholesky(self.G + damping * p.mean_eig * eye).to(p.X.dtype)
            UtU_inv = torch.linalg.inv(U.T @ U)
            AX = A @ p.X + b[:, None]
            for _ in range(int(steps)):
                Z = AX + U @ (V @ p.X)
                R = (p.Y - torch.clamp(Z, min=0)) * (Z > 0)
                step = UtU_inv @ (((U.T @ R) @ p.X.T) / p.N)
                V = V + torch.cholesky_solve(step.T, L).T
            if not all(bool(torch.isfinite(T).all()) for T in (U, V, b)):
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
    Q = torch.linalg.qr(V.T).Q.T  # orthonormal rows spanning the row space of V
    A, U, s, Vh, *b = refit_svd(problem, A, Q, steps, U @ (V @ Q.T), bias)
    root = torch.sqrt(s)
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
    n, d = A.shape
    S = torch.nonzero(torch.linalg.vector_norm(A, dim=0) > 0).flatten()
    P = torch.cat([torch.eye(d, dtype=A.dtype, device=A.device)[S], Vh])  # k x d basis
    k = P.shape[0]
    PX = P @ problem.X
    start = torch.cat([A[:, S], UB], dim=1)
    if bias is not None:
        PX = torch.cat([PX, PX.new_ones(1, PX.shape[1])])
        start = torch.cat([start, bias[:, None]], dim=1)
    if PX.shape[0] == 0:
        return A, UB[:, :0], UB.new_zeros(0), Vh
    G_P = (PX.double() @ PX.double().T) / problem.N
    # a small ridge: with fewer samples than basis rows G_P is singular
    G_P += relative_ridge(G_P) * torch.eye(PX.shape[0], dtype=G_P.dtype, device=G_P.device)
    G_inv = torch.linalg.inv(G_P).to(A.dtype)
    fixed = problem.bias[:, None] if bias is None else 0.0
    if problem.response == "linear":
        coef = ((problem.Y - fixed) @ PX.T / problem.N) @ G_inv
    else:
        coef = start
        for _ in range(steps):
            Z = coef @ PX + fixed
            R = (problem.Y - torch.clamp(Z, min=0)) * (Z > 0)
            coef = coef + ((R @ PX.T) / problem.N) @ G_inv
    if not bool(torch.isfinite(coef).all()):  # keep the given answer rather than garbage
        coef = start
    A = torch.zeros_like(A)
    A[:, S] = coef[:, :S.numel()]
    U, s, Wh = torch.linalg.svd(coef[:, S.numel():k], full_matrices=False)
    keep = s > 0
    out = (A, U[:, keep], s[keep], Wh[keep] @ Vh)
    return out if bias is None else (*out, coef[:, k])


def relative_ridge(G, rel=1e-6):
    """A relative ridge that keeps an empirical Gram matrix factorizable (fewer samples
    than dimensions, or collinear inputs) without moving a well-posed fit."""
    return rel * max(float(torch.trace(G)) / max(G.shape[0], 1), 1e-30)
