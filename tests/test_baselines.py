"""Truncated SVD and reduced-rank regression against closed forms and brute force."""

import itertools

import pytest
import torch

from lrsa.baselines import reduced_rank_regression, truncated_svd



def test_truncated_svd_error_is_the_tail_of_the_spectrum():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(7, 12, generator=g, dtype=torch.float64)
    s = torch.linalg.svdvals(W)
    for r in range(0, 8):
        U, V = truncated_svd(W, r)
        assert U.shape == (7, r) and V.shape == (r, 12)
        err = torch.linalg.norm(W - U @ V) ** 2
        assert float(err) == pytest.approx(float((s[r:] ** 2).sum()), rel=1e-10, abs=1e-12)
        # balanced: both factors carry the square roots of the singular values
        torch.testing.assert_close(torch.linalg.norm(U, dim=0), torch.linalg.norm(V, dim=1))


def test_rrr_beats_every_rank_r_weight_from_a_brute_force_family():
    """Within the rank-r weights spanned by any r of the full fit's principal directions,
    and against the truncated SVD of the least-squares weight, RRR is never worse."""
    g = torch.Generator().manual_seed(1)
    n, d, N, r = 5, 9, 400, 2
    X = torch.randn(d, N, generator=g, dtype=torch.float64)
    X = X * torch.linspace(0.2, 3, d, dtype=torch.float64)[:, None]
    W = torch.randn(n, d, generator=g, dtype=torch.float64)
    b = torch.randn(n, generator=g, dtype=torch.float64)
    Z = W @ X + b[:, None] + 0.5 * torch.randn(n, N, generator=g, dtype=torch.float64)
    U, V = reduced_rank_regression(X, Z, r, bias=b)
    best = float(torch.linalg.norm(Z - b[:, None] - U @ V @ X) ** 2)
    W_ls = torch.linalg.lstsq(X.T, (Z - b[:, None]).T).solution.T
    P, s, Vh = torch.linalg.svd(W_ls @ X, full_matrices=False)
    for idx in itertools.combinations(range(n), r):
        Pr = P[:, list(idx)]
        cand = Pr @ Pr.T @ W_ls  # projection of the full fit on r output directions
        assert best <= float(torch.linalg.norm(Z - b[:, None] - cand @ X) ** 2) * (1 + 1e-9)
    Us, Vs = truncated_svd(W_ls, r)
    assert best <= float(torch.linalg.norm(Z - b[:, None] - Us @ Vs @ X) ** 2) * (1 + 1e-9)
    # and it equals the closed form through the SVD of the fitted values
    closed = P[:, :r] @ P[:, :r].T @ W_ls
    torch.testing.assert_close(U @ V, closed, rtol=1e-6, atol=1e-8)
