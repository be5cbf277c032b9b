"""lrsa.objective: F(A, B) and the sparse block's penalties, against direct formulas."""

import math

import numpy as np
import pytest

from lrsa.objective import layer_objective, sparse_penalty


def _problem(seed=0):
    rng = np.random.default_rng(seed)
    X, Y = rng.standard_normal((5, 40)), np.abs(rng.standard_normal((4, 40)))
    A, B, b = rng.standard_normal((4, 5)), rng.standard_normal((4, 5)), rng.standard_normal(4)
    return X, Y, A, B, b


@pytest.mark.parametrize("response", ["relu", "linear"])
@pytest.mark.parametrize("sparsity", ["column", "unstructured"])
def test_the_objective_is_the_data_term_plus_both_penalties(response, sparsity):
    X, Y, A, B, b = _problem()
    out = (A + B) @ X + b[:, None]
    out = np.maximum(out, 0) if response == "relu" else out
    data = 0.5 * np.sum((Y - out) ** 2) / X.shape[1]
    sparse = np.linalg.norm(A, axis=0).sum() if sparsity == "column" else np.abs(A).sum()
    nuclear = np.linalg.svd(B, compute_uv=False).sum()
    got = layer_objective(X, Y, A, B, 0.3, 0.7, response=response, bias=b, sparsity=sparsity)
    assert got == pytest.approx(data + 0.3 * sparse + 0.7 * nuclear, rel=1e-12)


def test_an_infinite_lambda_costs_nothing_on_a_zero_part():
    X, Y, _, B, b = _problem(1)
    got = layer_objective(X, Y, np.zeros_like(B), B, math.inf, 0.0, bias=b)
    assert math.isfinite(got)


def test_an_unknown_sparsity_is_named():
    with pytest.raises(ValueError, match="rows"):
        sparse_penalty("rows")
