"""solve_layer: exact on the convex (linear) problem, sound on the ReLU one, strict on input."""

import numpy as np
import pytest
import torch

import lrsa.objective
import lrsa.solver
from conftest import needs_cvxpy
from lrsa import layer_objective, solve_layer
from lrsa.reference import solve_linear_layer_cvxpy


def problem(n, d, N, seed, rank_X=None):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, N))
    if rank_X is not None:  # rank-deficient inputs, as after a ReLU with dead channels
        X = rng.standard_normal((d, rank_X)) @ rng.standard_normal((rank_X, N))
    W = rng.standard_normal((n, 2)) @ rng.standard_normal((2, d))
    W[:, :2] += 2 * rng.standard_normal((n, 2))
    b = rng.standard_normal(n)
    Y = W @ X + b[:, None] + 0.3 * rng.standard_normal((n, N))
    return X, Y, b


@needs_cvxpy
@pytest.mark.parametrize("n,d,N,rank_X,lam", [
    (4, 6, 60, None, 0.05), (6, 10, 150, None, 0.2), (8, 12, 100, 5, 0.1), (5, 9, 80, None, 1.0),
])
@pytest.mark.parametrize("correction", [True, False])
def test_linear_reaches_cvxpy_optimum(n, d, N, rank_X, lam, correction):
    X, Y, b = problem(n, d, N, seed=n * d, rank_X=rank_X)
    A_ref, B_ref, f_ref = solve_linear_layer_cvxpy(X, Y, lam, 2 * lam, bias=b)
    sol = solve_layer(X, Y, lam, 2 * lam, response="linear", bias=b, tol=1e-7, max_iter=5000,
                      correction=correction)
    assert sol.converged, sol.message
    assert (sol.objective - f_ref) / abs(f_ref) <= 1e-4
    assert sol.objective >= f_ref - 1e-6 * abs(f_ref)  # cvxpy really is the optimum
    W_ref = A_ref + B_ref
    if rank_X is None:  # A + B is unique when X X^T is invertible
        assert np.linalg.norm(sol.W - W_ref) <= 1e-3 * np.linalg.norm(W_ref)
    else:  # otherwise the fitted responses are
        assert np.linalg.norm((sol.W - W_ref) @ X) <= 1e-3 * np.linalg.norm(W_ref @ X)


def test_objective_is_F_at_returned_A_B():
    X, Y, b = problem(5, 8, 90, seed=1)
    sol = solve_layer(X, Y, 0.1, 0.2, response="linear", bias=b)
    direct = (np.sum((Y - sol.W @ X - b[:, None]) ** 2) / (2 * X.shape[1])
              + 0.1 * np.linalg.norm(sol.A, axis=0).sum()
              + 0.2 * np.linalg.svd(sol.B, compute_uv=False).sum())
    assert sol.objective == pytest.approx(direct, rel=1e-10)
    np.testing.assert_allclose(sol.U @ sol.V, sol.B, atol=1e-10)
    assert sol.U.shape[1] == sol.rank == np.linalg.matrix_rank(sol.B)


def test_large_lambda_zeroes_everything():
    X, Y, b = problem(5, 8, 90, seed=2)
    C = (Y - b[:, None]) @ X.T / X.shape[1]  # -gradient at 0: zero is optimal iff C is in
    lam1 = 1.01 * np.linalg.norm(C, axis=0).max()  # both dual balls
    lam2 = 1.01 * np.linalg.norm(C, 2)
    sol = solve_layer(X, Y, lam1, lam2, response="linear", bias=b, tol=1e-8, max_iter=3000)
    assert np.abs(sol.A).max() == 0 and sol.rank == 0
    assert sol.nonzero_columns == 0


def planted(seed=1, n=32, d=72, N=6000, r=3, s=6):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((d, N))
    P = np.linalg.qr(rng.standard_normal((n, r)))[0]
    Q = np.linalg.qr(rng.standard_normal((d, r)))[0].T
    B = P @ np.diag(np.linspace(6, 4, r)) @ Q
    A = np.zeros((n, d))
    cols = rng.choice(d, s, replace=False)
    A[:, cols] = 2 * rng.standard_normal((n, s)) / np.sqrt(n)
    b = 0.3 * rng.standard_normal(n)
    return X, np.maximum((A + B) @ X + b[:, None], 0), b, set(cols), r


def post_relu_error(W, X, Y, b):
    return np.linalg.norm(Y - np.maximum(W @ X + b[:, None], 0)) / np.linalg.norm(Y)


def params(sol):
    n, d = sol.A.shape
    return sol.nonzero_columns * n + sol.rank * (n + d)


def test_relu_recovers_planted_support_and_rank_and_beats_linear():
    X, Y, b, cols, r = planted()
    sol = solve_layer(X, Y, 0.01, 0.02, response="relu", bias=b, tol=1e-6, max_iter=2000)
    assert sol.converged, sol.message
    assert set(np.flatnonzero(np.abs(sol.A).sum(0))) == cols
    assert sol.rank == r
    err = post_relu_error(sol.W, X, Y, b)
    assert err < 0.02
    # the linear-response fit of the same data, over a lambda grid, at no more parameters
    lin_errs = []
    for lam in [0.01, 0.03, 0.1, 0.3, 1.0]:
        lin = solve_layer(X, Y, lam, 2 * lam, response="linear", bias=b, tol=1e-6)
        if params(lin) <= params(sol):
            lin_errs.append(post_relu_error(lin.W, X, Y, b))
    assert lin_errs and err < 0.5 * min(lin_errs)


def test_relu_does_not_increase_its_objective_over_the_linear_start():
    X, Y, b, _, _ = planted(seed=3, N=3000)
    lin = solve_layer(X, Y, 0.01, 0.02, response="linear", bias=b)
    sol = solve_layer(X, Y, 0.01, 0.02, response="relu", bias=b, W0=lin)
    assert sol.objective <= layer_objective(X, Y, lin.A, lin.B, 0.01, 0.02, bias=b)


def test_relu_objective_is_not_convex():
    ex = lrsa.solver.relu_nonconvexity_example()
    assert ex["midpoint_gap"] > 0


def test_torch_float32_input_gives_torch_output():
    X, Y, b, _, _ = planted(seed=4, N=2000)
    Xt, Yt = torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)
    sol = solve_layer(Xt, Yt, 0.01, 0.02, bias=torch.tensor(b, dtype=torch.float32))
    assert isinstance(sol.A, torch.Tensor) and sol.A.dtype == torch.float32
    ref = solve_layer(X, Y, 0.01, 0.02, bias=b)
    assert abs(sol.objective - ref.objective) <= 1e-3 * ref.objective
    h = sol.history
    assert all(len(h[k]) == sol.iterations for k in h)


def test_fixed_penalty_is_kept():
    X, Y, b = problem(4, 6, 60, seed=5)
    sol = solve_layer(X, Y, 0.1, 0.2, response="linear", t=0.7, bias=b)
    assert sol.t == 0.7


@pytest.mark.parametrize("kwargs,match", [
    (dict(Y=np.ones((3, 11))), "samples"),
    (dict(X=np.ones((4, 0)), Y=np.ones((3, 0))), "N = 0"),
    (dict(X=np.full((4, 10), np.nan)), "NaN"),
    (dict(lam1=-1), "lam1"),
    (dict(lam2=np.nan), "lam2"),
    (dict(t=0.0), "t must"),
    (dict(t=-2.0), "t must"),
    (dict(response="tanh"), "response"),
    (dict(W0=np.ones((2, 2))), "W0 must have shape"),
    (dict(bias=np.ones(5)), "bias"),
    (dict(Y=-np.ones((3, 10)), response="relu"), "Y >= 0"),
    (dict(X=np.ones(10)), "2-D"),
])
def test_bad_input_raises_clear_error(kwargs, match):
    args = dict(X=np.ones((4, 10)), Y=np.ones((3, 10)), lam1=0.1, lam2=0.1, response="linear")
    args.update(kwargs)
    X, Y, lam1, lam2 = args.pop("X"), args.pop("Y"), args.pop("lam1"), args.pop("lam2")
    with pytest.raises(ValueError, match=match):
        solve_layer(X, Y, lam1, lam2, **args)


def test_nan_during_iterations_stops_with_message(monkeypatch):
    calls = {"n": 0}
    original = lrsa.objective.prox_l21

    def poisoned(V, tau):
        calls["n"] += 1
        out = original(V, tau)
        return out * np.nan if calls["n"] == 3 else out

    monkeypatch.setattr(lrsa.objective, "prox_l21", poisoned)
    X, Y, b = problem(4, 6, 60, seed=6)
    sol = solve_layer(X, Y, 0.1, 0.2, response="linear", bias=b)
    assert not sol.converged and "diverged" in sol.message and sol.iterations == 3


def test_infinite_lambda_removes_that_part():
    X, Y, b = problem(5, 8, 90, seed=7)
    sparse_only = solve_layer(X, Y, 0.05, np.inf, response="linear", bias=b)
    assert sparse_only.rank == 0 and sparse_only.nonzero_columns > 0
    low_rank_only = solve_layer(X, Y, np.inf, 0.05, response="linear", bias=b)
    assert low_rank_only.nonzero_columns == 0 and low_rank_only.rank > 0
    assert np.isfinite(sparse_only.objective) and np.isfinite(low_rank_only.objective)


def test_debias_refits_on_the_same_structure_and_fits_better():
    X, Y, b = problem(6, 10, 200, seed=8)
    plain = solve_layer(X, Y, 0.1, 0.2, response="linear", bias=b)
    refit = solve_layer(X, Y, 0.1, 0.2, response="linear", bias=b, debias=True)
    assert refit.rank == plain.rank and refit.nonzero_columns == plain.nonzero_columns
    assert np.array_equal(np.abs(refit.A).sum(0) > 0, np.abs(plain.A).sum(0) > 0)

    def fit(W):
        return np.linalg.norm(Y - W @ X - b[:, None])

    assert fit(refit.W) < fit(plain.W)
    # the refit is the least-squares optimum on that structure: the residual is orthogonal
    # to the columns it may use (kept input rows and the row space of B), up to the 1e-6
    # relative ridge the refit adds
    R = (Y - refit.W @ X - b[:, None]) @ X.T
    kept = np.abs(refit.A).sum(0) > 0
    assert np.abs(R[:, kept]).max() < 1e-5 * np.abs(Y @ X.T).max()


def test_retarget_shares_G_and_matches_a_fresh_problem():
    X, Y, b = problem(5, 8, 90, seed=9)
    lin = lrsa.solver.LayerProblem(X, Y, b, "linear")
    lin.factor(0.5)
    relu = lin.retarget(np.maximum(Y, 0), "relu")
    fresh = lrsa.solver.LayerProblem(X, np.maximum(Y, 0), b, "relu")
    assert relu.G64 is lin.G64 and 0.5 in relu._factors
    torch.testing.assert_close(relu.C64, fresh.C64)
    assert relu.yy == pytest.approx(fresh.yy, rel=1e-12)
    a = relu.solve(0.05, 0.1, max_iter=50)
    f = fresh.solve(0.05, 0.1, max_iter=50)
    assert a.objective == pytest.approx(f.objective, rel=1e-8)
    with pytest.raises(ValueError, match="Y >= 0"):
        lin.retarget(Y, "relu")


@needs_cvxpy
@pytest.mark.parametrize("lam", [0.05, 0.3])
def test_unstructured_sparsity_reaches_cvxpy_optimum(lam):
    """The l1 penalty in the A-step (soft thresholding) solves the convex l1 + nuclear
    problem: the same optimum as cvxpy."""
    X, Y, b = problem(5, 8, 90, seed=7)
    A_ref, B_ref, f_ref = solve_linear_layer_cvxpy(X, Y, lam, 2 * lam, bias=b,
                                                   sparsity="unstructured")
    sol = solve_layer(X, Y, lam, 2 * lam, response="linear", bias=b, tol=1e-7, max_iter=5000,
                      sparsity="unstructured")
    assert sol.converged, sol.message
    assert abs(sol.objective - f_ref) / abs(f_ref) <= 1e-4
    direct = layer_objective(X, Y, sol.A, sol.B, lam, 2 * lam, response="linear", bias=b,
                             sparsity="unstructured")
    assert sol.objective == pytest.approx(direct, rel=1e-10)
    # single entries, not whole columns, are zero
    assert 0 < np.count_nonzero(sol.A) < sol.A.size


def test_n_m_sparsity_keeps_the_pattern_and_fits_better_than_pruning_the_fit():
    X, Y, b = problem(6, 8, 120, seed=3)
    sol = solve_layer(X, Y, 0.0, 0.5, response="linear", bias=b, max_iter=500,
                      sparsity="2:4")
    blocks = (np.abs(sol.A) > 0).reshape(6, 2, 4).sum(-1)
    assert (blocks <= 2).all()
    # against the pruned least-squares fit plus nothing (the B part only helps)
    W_ls = np.linalg.lstsq(X.T, (Y - b[:, None]).T, rcond=None)[0].T
    from lrsa.prox import project_n_m
    pruned = layer_objective(X, Y, project_n_m(W_ls, 2, 4), np.zeros_like(W_ls), 0.0, 0.0,
                             response="linear", bias=b)
    assert layer_objective(X, Y, sol.A, sol.B, 0.0, 0.0, response="linear", bias=b) < pruned


@pytest.mark.parametrize("sparsity,match", [("3:2", "0 < N < M"), ("rows", "'column'"),
                                            ("2:4", "debias")])
def test_bad_sparsity_is_named(sparsity, match):
    X, Y, b = problem(4, 8, 40, seed=1)
    with pytest.raises(ValueError, match=match):
        solve_layer(X, Y, 0.1, 0.1, response="linear", sparsity=sparsity,
                    debias=sparsity == "2:4")


def test_options_given_whole_or_as_fields_solve_the_same():
    from lrsa.solver import ADMMOptions
    rng = np.random.default_rng(3)
    X = rng.standard_normal((10, 200))
    Y = rng.standard_normal((5, 10)) @ X
    whole = lrsa.solve_layer(X, Y, 0.05, 0.1, ADMMOptions(max_iter=50, t=1.0),
                             response="linear")
    fields = lrsa.solve_layer(X, Y, 0.05, 0.1, response="linear", max_iter=50, t=1.0)
    assert whole.iterations == fields.iterations and whole.objective == fields.objective
    with pytest.raises(ValueError, match="not both"):
        lrsa.solve_layer(X, Y, 0.05, 0.1, ADMMOptions(), response="linear", max_iter=5)
