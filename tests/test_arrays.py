"""lrsa.arrays: the factorizations the array API lacks, checked against dense solves, on NumPy
and torch."""

import numpy as np
import pytest
import torch

from lrsa.arrays import cho_solve, cholesky_or_none, like, same_kind, solve_triangular

KINDS = {"numpy": np.asarray, "torch": torch.as_tensor}


def _spd(n=6, seed=0):
    M = np.random.default_rng(seed).standard_normal((n, n))
    return M @ M.T + n * np.eye(n)


@pytest.mark.parametrize("kind", KINDS)
def test_cholesky_or_none_factors_or_refuses(kind):
    S = KINDS[kind](_spd())
    L = cholesky_or_none(S)
    assert np.allclose(np.asarray(L @ L.T), _spd(), atol=1e-10)
    assert np.allclose(np.triu(np.asarray(L), 1), 0)
    indefinite = KINDS[kind](np.diag([1.0, -1.0, 2.0]))
    assert cholesky_or_none(indefinite) is None


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_solves_match_a_dense_solve_and_keep_the_dtype(kind, dtype):
    S = _spd().astype(dtype)
    B = np.random.default_rng(1).standard_normal((6, 3)).astype(dtype)
    L = cholesky_or_none(KINDS[kind](S))
    tol = 1e-4 if dtype == "float32" else 1e-10
    X = cho_solve(L, KINDS[kind](B))
    assert str(X.dtype).endswith(dtype)
    assert np.allclose(np.asarray(X), np.linalg.solve(S.astype(float), B), atol=tol)
    U = KINDS[kind](np.triu(S))
    assert np.allclose(np.asarray(U @ solve_triangular(U, KINDS[kind](B), lower=False)), B,
                       atol=tol)


def test_like_and_same_kind_cross_between_numpy_and_torch():
    a = np.arange(3.0)
    t32 = torch.zeros(2, dtype=torch.float32)
    assert like(a, t32).dtype == torch.float32 and torch.equal(like(a, t32),
                                                                torch.arange(3.0))
    assert same_kind(a, t32).dtype == torch.float64  # dtype kept
    back = like(torch.arange(3.0, dtype=torch.float64), np.zeros(1, dtype=np.float32))
    assert isinstance(back, np.ndarray) and back.dtype == np.float32
