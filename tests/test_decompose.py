"""Sparse + low-rank with single-weight sparsity under the output metric: each block against
its closed form, the whole against brute force where it is exact, OATS as the floor."""

import itertools

import numpy as np
import pytest
import torch

from lrsa.decompose import (_low_rank, _refit_support, _whitener, entry_storage,
                            fit_sparse_low_rank, nonzeros_within, oats, output_error, project)


def layer(n, d, N=300, seed=0, diagonal=False):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(d, N, generator=g, dtype=torch.float64) * torch.linspace(0.2, 3, d)[:, None]
    if not diagonal:
        X[1] += X[0]  # correlated inputs: G far from diagonal
    G = X @ X.T / N
    if diagonal:
        G = torch.diag(torch.diagonal(G))
    return torch.randn(n, d, generator=g, dtype=torch.float64), G


def test_low_rank_block_is_the_weighted_optimum():
    """min ||(W - UV) L||_F over rank r: the tail eigenvalues of W G W^T (closed form)."""
    W, G = layer(6, 8)
    L, _ = _whitener(G)
    for r in (0, 2, 5):
        U, V = _low_rank(W, L, r)
        tail = torch.linalg.eigvalsh(W @ G @ W.T)[:6 - r].sum()
        assert output_error(W, G, torch.zeros_like(W), U, V) == pytest.approx(float(tail),
                                                                               rel=1e-8)


def test_support_refit_is_row_wise_least_squares():
    W, G = layer(5, 8, seed=1)
    A = project("unstructured", W, 17)  # rows with different support sizes
    fitted = _refit_support(W, G, A)
    for i in range(5):
        S = torch.nonzero(A[i]).flatten()
        ref = torch.zeros(8, dtype=W.dtype)
        if S.numel():
            ref[S] = torch.linalg.solve(G[S][:, S], (W[i] @ G)[S])
        torch.testing.assert_close(fitted[i], ref, rtol=1e-6, atol=1e-9)


def _brute_n_m(W, G, n=2, m=4):
    """The best N:M A (rank 0) by trying every support of every row (rows separate)."""
    d = W.shape[1]
    per_block = list(itertools.combinations(range(m), n))
    total = 0.0
    for w in W:
        best = np.inf
        for choice in itertools.product(per_block, repeat=d // m):
            S = [b * m + j for b, c in enumerate(choice) for j in c]
            a = torch.zeros(d, dtype=W.dtype)
            a[S] = torch.linalg.solve(G[S][:, S], (w @ G)[S])
            best = min(best, float((w - a) @ G @ (w - a)))
        total += best
    return total


def test_n_m_fit_is_exact_when_the_metric_is_diagonal():
    W, G = layer(4, 8, diagonal=True)
    A, U, V = fit_sparse_low_rank(W, G, 0, "2:4", 1)
    assert output_error(W, G, A, U, V) == pytest.approx(_brute_n_m(W, G), rel=1e-9)


def test_n_m_fit_against_brute_force_on_correlated_inputs():
    """Not convex, so no guarantee. On six small layers with correlated inputs (measured:
    the optimum on five, 9 % above it on one) it never ends above OATS or above pruning
    the dense map by magnitude and refitting."""
    ratios = []
    for seed in range(6):
        W, G = layer(4, 8, seed=seed)
        A, U, V = fit_sparse_low_rank(W, G, 0, "2:4", 1)
        got = output_error(W, G, A, U, V)
        magnitude = _refit_support(W, G, project("2:4", W, 1))
        assert got <= output_error(W, G, magnitude, U, V) + 1e-12
        assert got <= output_error(W, G, *oats(W, G, 0, "2:4", 1)) + 1e-12
        ratios.append(got / _brute_n_m(W, G))
    assert min(ratios) >= 1 - 1e-9
    assert sum(r < 1 + 1e-6 for r in ratios) >= 4 and max(ratios) < 1.1


@pytest.mark.parametrize("sparsity,nonzeros", [("unstructured", 16), ("2:4", 1)])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_alternation_never_rises_and_never_ends_above_oats(sparsity, nonzeros, seed):
    W, G = layer(6, 8, seed=seed)
    errors = []
    A, U, V = fit_sparse_low_rank(W, G, 2, sparsity, nonzeros,
                                  callback=lambda k, e: errors.append(e))
    assert all(b <= a * (1 + 1e-12) for a, b in zip(errors, errors[1:]))
    assert errors[-1] == pytest.approx(output_error(W, G, A, U, V), rel=1e-9)
    assert errors[-1] <= output_error(W, G, *oats(W, G, 2, sparsity, nonzeros)) * (1 + 1e-12)
    assert U.shape == (6, 2) and V.shape == (2, 8)
    if sparsity == "unstructured":
        assert int((A != 0).sum()) <= nonzeros
    else:
        assert ((A != 0).reshape(6, 2, 4).sum(-1) <= 2).all()


def test_oats_with_the_identity_metric_is_robust_pca_by_thresholding():
    """G = I: OATS's scaling is 1, and with rank 0 its answer is the projection of W."""
    W, _ = layer(4, 8)
    A, U, V = oats(W, torch.eye(8, dtype=W.dtype), 0, "unstructured", 10)
    torch.testing.assert_close(A, project("unstructured", W, 10))
    assert U.shape[1] == 0


def test_storage_counts_values_with_their_indices():
    # CSR: 1.5 words per value (16-bit index) plus n + 1 row offsets
    assert entry_storage("unstructured", 100, 8) == 100 * 1.5 + 9
    assert entry_storage("2:4", 128, 8) == 128 * (1 + 2 / 32)
    assert entry_storage("1:8", 64, 8) == 64 * (1 + 3 / 32)
    assert entry_storage("unstructured", 0, 8) == 0
    k = nonzeros_within("unstructured", 500.0, 8, 64)
    assert entry_storage("unstructured", k, 8) <= 500 < entry_storage("unstructured", k + 1, 8)
    assert nonzeros_within("2:4", 16 * 64 / 2 * (1 + 2 / 32), 16, 64) == 16 * 64 // 2
    assert nonzeros_within("2:4", 16 * 64 / 2, 16, 64) == 0  # the pattern does not fit
