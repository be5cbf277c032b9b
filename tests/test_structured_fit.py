"""StructuredFit: the least-squares optimum on a fixed structure (columns of A, rank of B),
and its refinement toward the ReLU response (refit), never worse and on the same structure."""

import pytest
import torch

from lrsa.solver import LayerProblem
from lrsa.structured_fit import StructuredFit


def _structured_data(seed, n=6, d=10, N=300):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, N, generator=g, dtype=torch.float64)
    X[3] = 0.5 * X[1] + 0.1 * torch.randn(N, generator=g, dtype=torch.float64)  # correlated
    W = torch.randn(n, 2, generator=g, dtype=torch.float64) @ torch.randn(
        2, d, generator=g, dtype=torch.float64)
    W[:, [4, 7]] += 3 * torch.randn(n, 2, generator=g, dtype=torch.float64)  # sparse columns
    b = torch.randn(n, generator=g, dtype=torch.float64)
    Z = W @ X + b[:, None] + 0.3 * torch.randn(n, N, generator=g, dtype=torch.float64)
    return X, Z, b


def _alternating(X, Z, b, S, r, iters=3000):
    """An independent solver: block coordinate descent between lstsq on X_S and RRR."""
    R0 = Z - b[:, None]
    A_S = torch.zeros(Z.shape[0], len(S), dtype=X.dtype)
    for _ in range(iters):
        T = R0 - A_S @ X[S]
        W_ls = torch.linalg.lstsq(X.T, T.T).solution.T
        P = torch.linalg.svd(W_ls @ X, full_matrices=False)[0][:, :r]
        B = P @ P.T @ W_ls
        A_S = torch.linalg.lstsq(X[S].T, (R0 - B @ X).T).solution.T if S else A_S
    return float(torch.linalg.norm(R0 - A_S @ X[S] - B @ X) ** 2) / (2 * X.shape[1])


@pytest.mark.parametrize("S,r", [([], 2), ([4], 2), ([4, 7], 1), ([1, 3, 4], 0), ([0], 3)])
def test_structured_fit_is_the_constrained_least_squares_optimum(S, r):
    X, Z, b = _structured_data(3)
    fit = StructuredFit(LayerProblem(X, Z, b, "linear"))
    A, U, V, f = fit.fit(S, r)
    direct = float(torch.linalg.norm(Z - b[:, None] - (A + U @ V) @ X) ** 2) / (2 * X.shape[1])
    assert f == pytest.approx(direct, rel=1e-6)  # the closed-form value is the real one
    assert set(torch.nonzero(A.abs().sum(0)).flatten().tolist()) <= set(S)
    assert U.shape[1] == V.shape[0] == r and torch.linalg.matrix_rank(U @ V) == r
    ref = _alternating(X, Z, b, S, r) if r else float(torch.linalg.norm(
        Z - b[:, None] - torch.linalg.lstsq(X[S].T, (Z - b[:, None]).T).solution.T @ X[S]
    ) ** 2) / (2 * X.shape[1])
    assert direct <= ref * (1 + 1e-7)  # never worse than the independent solver
    assert direct >= ref * (1 - 1e-5)  # and the same optimum


def test_sparse_column_pays_where_it_should():
    """The planted weight is rank 2 plus two strong columns: keeping them with rank 2 fits
    better than rank 3 alone, at a lower stored size (2n + 2(n+d) < 3(n+d)), and than two
    other columns with rank 2."""
    X, Z, b = _structured_data(4)
    fit = StructuredFit(LayerProblem(X, Z, b, "linear"))
    assert fit.fit([4, 7], 2)[3] < 0.5 * fit.fit([], 3)[3]
    assert fit.fit([4, 7], 2)[3] < 0.5 * fit.fit([0, 9], 2)[3]


def test_refine_relu_never_worse_and_keeps_the_structure():
    X, Z, b = _structured_data(5, n=8, d=12, N=500)
    lin = LayerProblem(X, Z, b, "linear")
    relu = lin.retarget(torch.relu(Z), "relu")
    fit = StructuredFit(lin)
    A, U, V, _ = fit.fit([4], 2)
    err = lambda A, U, V, bias=b: float(torch.linalg.norm(  # noqa: E731
        torch.relu(Z) - torch.relu((A + U @ V) @ X + bias[:, None])))
    A2, U2, V2, b2 = fit.refine_relu(relu, A, U, V, rounds=4, steps=5)
    assert err(A2, U2, V2, b2) < (1 - 1e-3) * err(A, U, V)
    assert torch.equal(A2.abs().sum(0) > 0, A.abs().sum(0) > 0) and U2.shape == U.shape
    # each round is monotone: more rounds never increase the error
    assert err(*fit.refine_relu(relu, A, U, V, rounds=8, steps=5)) <= err(A2, U2, V2, b2) + 1e-9
