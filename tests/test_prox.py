"""Proximal operators against closed forms, the Moreau identity, cvxpy and random properties."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import needs_cvxpy
from lrsa import prox_l21, reference, soft_threshold, svt

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
TOL = {np.float32: 1e-5, np.float64: 1e-12}  # relative, against a float64 closed form


def closed_l21(V, tau):
    out = np.zeros_like(V)
    for j in range(V.shape[1]):
        c = np.linalg.norm(V[:, j])
        if c > tau:
            out[:, j] = (1 - tau / c) * V[:, j]
    return out


def closed_svt(V, tau):
    U, s, Vh = np.linalg.svd(V, full_matrices=False)
    return (U * np.maximum(s - tau, 0)) @ Vh


def closed_soft(V, tau):
    return np.sign(V) * np.maximum(np.abs(V) - tau, 0)


OPS = [(prox_l21, closed_l21), (svt, closed_svt), (soft_threshold, closed_soft)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(5, 9), (9, 5), (64, 576)])
@pytest.mark.parametrize("op,closed", OPS)
def test_matches_closed_form(op, closed, shape, dtype):
    rng = np.random.default_rng(0)
    V = rng.standard_normal(shape).astype(dtype)
    tau = 0.5 * np.median(np.linalg.norm(V, axis=0))  # some columns/values survive, some die
    got = op(V, tau)
    ref = closed(V.astype(np.float64), tau)
    assert got.dtype == dtype and got.shape == V.shape
    assert np.linalg.norm(got - ref) <= TOL[dtype] * 10 * max(np.linalg.norm(ref), 1)


def test_svt_wide_conv_shape_rank_deficient():
    # a 512 x 4608 matrix of rank 40: the conv5 shape of VGG-16
    rng = np.random.default_rng(1)
    V = rng.standard_normal((512, 40)) @ rng.standard_normal((40, 4608))
    tau = np.linalg.svd(V, compute_uv=False)[20]
    got = svt(V, tau)
    ref = closed_svt(V, tau)
    assert np.linalg.matrix_rank(got, tol=1e-8 * np.abs(got).max()) == 20
    assert np.linalg.norm(got - ref) <= 1e-9 * np.linalg.norm(ref)


def test_zero_columns_and_zero_matrix_give_no_nan():
    V = np.zeros((4, 6))
    V[:, 2] = [3.0, 4.0, 0.0, 0.0]
    for op, _ in OPS:
        assert np.isfinite(op(V, 1.0)).all()
        assert np.isfinite(op(np.zeros((4, 6)), 1.0)).all()
    np.testing.assert_allclose(prox_l21(V, 1.0)[:, 2], [2.4, 3.2, 0, 0])


@pytest.mark.parametrize("op,closed", OPS)
def test_tau_zero_is_identity_and_large_tau_is_zero(op, closed):
    V = np.random.default_rng(2).standard_normal((6, 8))
    np.testing.assert_allclose(op(V, 0.0), V, atol=1e-12)
    assert np.abs(op(V, 1e3)).max() == 0


def _project_dual_ball(V, tau, op):
    """Projection onto tau * (unit ball of the dual norm), computed independently."""
    if op is prox_l21:  # dual of l2,1 is the max column norm
        return V * np.minimum(1, tau / np.maximum(np.linalg.norm(V, axis=0), 1e-300))
    if op is svt:  # dual of nuclear is the spectral norm
        U, s, Vh = np.linalg.svd(V, full_matrices=False)
        return (U * np.minimum(s, tau)) @ Vh
    return np.clip(V, -tau, tau)  # dual of l1 is l_inf


@pytest.mark.parametrize("op,closed", OPS)
def test_moreau_identity(op, closed):
    # prox_{tau f}(v) + tau prox_{f*/tau}(v/tau) = v, with f* the indicator of the dual ball
    rng = np.random.default_rng(3)
    for _ in range(5):
        V = rng.standard_normal((7, 11)) * rng.uniform(0.1, 10)
        tau = rng.uniform(0.05, 3)
        np.testing.assert_allclose(op(V, tau) + _project_dual_ball(V, tau, op), V, atol=1e-10)


matrices = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 6)),
                  elements=st.floats(-100, 100, allow_nan=False))


@settings(max_examples=60, deadline=None)
@given(U=matrices, data=st.data(), tau=st.floats(0, 50))
def test_nonexpansive_and_optimal(U, data, tau):
    W = data.draw(arrays(np.float64, U.shape, elements=st.floats(-100, 100)))
    for op, closed in OPS:
        pu, pw = op(U, tau), op(W, tau)
        assert np.linalg.norm(pu - pw) <= np.linalg.norm(U - W) * (1 + 1e-9) + 1e-9
        np.testing.assert_allclose(pu, closed(U, tau), atol=1e-8 * (1 + np.abs(U).max()))


CVX = [(prox_l21, reference.prox_l21_cvxpy), (svt, reference.svt_cvxpy),
       (soft_threshold, reference.soft_threshold_cvxpy)]


@needs_cvxpy
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("op,cvx", CVX)
def test_against_cvxpy(op, cvx, dtype):
    """Clarabel solves to ~1e-8; we ask 1e-5 (float64) / 1e-4 (float32) max abs error."""
    rng = np.random.default_rng(4)
    for shape in [(4, 7), (8, 5)]:
        V = rng.standard_normal(shape)
        tau = 0.8
        ref = cvx(V, tau)
        got = op(V.astype(dtype), tau)
        assert np.abs(got - ref).max() < (1e-5 if dtype == np.float64 else 1e-4)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("op,closed", OPS)
def test_torch_in_torch_out(op, closed, device, dtype):
    V = torch.randn(6, 10, dtype=dtype, device=device, generator=torch.Generator().manual_seed(0)
                    ) if device == "cpu" else torch.randn(6, 10, dtype=dtype, device=device)
    got = op(V, 0.7)
    assert isinstance(got, torch.Tensor) and got.dtype == dtype and got.device == V.device
    ref = closed(V.cpu().double().numpy(), 0.7)
    tol = 1e-5 if dtype == torch.float32 else 1e-11
    assert np.abs(got.cpu().double().numpy() - ref).max() < tol * 10


@pytest.mark.parametrize("op", [prox_l21, svt, soft_threshold])
def test_bad_input(op):
    V = np.ones((3, 4))
    with pytest.raises(ValueError, match="tau"):
        op(V, -1.0)
    with pytest.raises(ValueError, match="NaN or Inf"):
        op(np.array([[1.0, np.nan]]), 1.0)
    with pytest.raises(ValueError, match="floating"):
        op(np.ones((3, 4), dtype=int), 1.0)
    with pytest.raises(ValueError, match="numpy array or torch tensor"):
        op([[1.0, 2.0]], 1.0)


@pytest.mark.parametrize("op", [prox_l21, svt])
def test_matrix_ops_need_2d(op):
    with pytest.raises(ValueError, match="2-D"):
        op(np.ones(5), 1.0)


# ------------------------------------------------------------- channel groups (prox_group_l21)
def _group_l21_cvxpy(V, tau, group):
    """argmin_X tau sum_g ||X[:, g]||_F + 1/2 ||X - V||_F^2 by cvxpy + Clarabel."""
    import cvxpy as cp
    Xv = cp.Variable(V.shape)
    blocks = [cp.norm(Xv[:, g * group:(g + 1) * group], "fro")
              for g in range(V.shape[1] // group)]
    cp.Problem(cp.Minimize(tau * cp.sum(cp.hstack(blocks)) + 0.5 * cp.sum_squares(Xv - V))
               ).solve(solver="CLARABEL")
    return Xv.value


@needs_cvxpy
@pytest.mark.parametrize("group", [1, 3, 9])
def test_group_prox_against_cvxpy(group):
    """Clarabel solves to ~1e-8; we ask 1e-5 max abs error, at a tau that keeps some blocks
    and zeroes others (the median block norm)."""
    from lrsa.prox import prox_group_l21
    rng = np.random.default_rng(5)
    V = rng.standard_normal((5, 4 * group)) * rng.uniform(0.2, 3, 4 * group)
    norms = np.linalg.norm(V.reshape(5, 4, group), axis=(0, 2))
    tau = float(np.median(norms))
    got = prox_group_l21(V, tau, group)
    kept = np.linalg.norm(got.reshape(5, 4, group), axis=(0, 2)) > 0
    assert 0 < kept.sum() < 4  # the test exercises both cases
    assert np.abs(got - _group_l21_cvxpy(V, tau, group)).max() < 1e-5


def test_group_prox_closed_form_and_edge_cases():
    from lrsa.prox import prox_group_l21
    rng = np.random.default_rng(6)
    V = rng.standard_normal((6, 12))
    # group = 1 is column shrinkage; one group holding every column shrinks the whole matrix
    np.testing.assert_allclose(prox_group_l21(V, 0.9, 1), prox_l21(V, 0.9), atol=1e-12)
    fro = np.linalg.norm(V)
    np.testing.assert_allclose(prox_group_l21(V, 0.3 * fro, 12), 0.7 * V, atol=1e-12)
    # a block survives iff its Frobenius norm exceeds tau, and loses exactly tau of it
    got = prox_group_l21(V, 2.0, 3)
    before = np.linalg.norm(V.reshape(6, 4, 3), axis=(0, 2))
    after = np.linalg.norm(got.reshape(6, 4, 3), axis=(0, 2))
    np.testing.assert_allclose(after, np.maximum(before - 2.0, 0), atol=1e-12)
    assert np.isfinite(prox_group_l21(np.zeros((3, 6)), 1.0, 3)).all()
    with pytest.raises(ValueError, match="group"):
        prox_group_l21(V, 1.0, 5)  # 12 columns are not blocks of 5


# ------------------------------------------------------------- projections onto sparse sets

def _brute_projection(V, allowed):
    """The closest matrix supported on one of the ``allowed`` supports (boolean masks):
    V on the support that keeps the most of ||V||^2."""
    return max(((V * S) for S in allowed), key=lambda P: float((P ** 2).sum()))


def _supports_with_at_most(k, shape):
    import itertools
    size = int(np.prod(shape))
    for idx in itertools.combinations(range(size), min(k, size)):
        S = np.zeros(size, bool)
        S[list(idx)] = True
        yield S.reshape(shape)


def _n_m_supports(n, m, shape):
    import itertools
    rows, d = shape
    blocks = [np.isin(np.arange(m), c) for c in itertools.combinations(range(m), n)]
    for choice in itertools.product(blocks, repeat=rows * d // m):
        yield np.concatenate(choice).reshape(rows, d)


@pytest.mark.parametrize("k", [0, 1, 3, 6])
def test_hard_threshold_is_the_projection_by_brute_force(k):
    from lrsa.prox import hard_threshold
    rng = np.random.default_rng(k)
    V = rng.standard_normal((2, 3))
    got = hard_threshold(V, k)
    ref = _brute_projection(V, list(_supports_with_at_most(k, V.shape)))
    assert np.count_nonzero(got) == k
    np.testing.assert_allclose(np.linalg.norm(got - V), np.linalg.norm(ref - V), rtol=1e-12)


@pytest.mark.parametrize("n,m,shape", [(2, 4, (2, 4)), (1, 4, (2, 8)), (2, 4, (1, 8)),
                                       (1, 2, (3, 4))])
def test_n_m_projection_by_brute_force(n, m, shape):
    from lrsa.prox import project_n_m
    rng = np.random.default_rng(n * m)
    V = rng.standard_normal(shape)
    got = project_n_m(V, n, m)
    ref = _brute_projection(V, list(_n_m_supports(n, m, shape)))
    np.testing.assert_allclose(np.linalg.norm(got - V), np.linalg.norm(ref - V), rtol=1e-12)
    blocks = (got != 0).reshape(shape[0], -1, m).sum(-1)
    assert (blocks <= n).all() and blocks.sum() == n * V.size // m
    assert torch.is_tensor(project_n_m(torch.tensor(V), n, m))


def test_sparse_projections_refuse_bad_arguments():
    from lrsa.prox import hard_threshold, project_n_m
    with pytest.raises(ValueError, match="k must be an integer"):
        hard_threshold(np.ones((2, 2)), -1)
    with pytest.raises(ValueError, match="multiple of m=4"):
        project_n_m(np.ones((2, 6)), 2, 4)
    with pytest.raises(ValueError, match="0 <= n <= m"):
        project_n_m(np.ones((2, 4)), 5, 4)
