import importlib.util

import pytest
import torch

#: the reference-solver checks need cvxpy (the "verify" extra); every other check runs without
needs_cvxpy = pytest.mark.skipif(importlib.util.find_spec("cvxpy") is None,
                                 reason="cvxpy is not installed (pip install lrsa[verify])")


@pytest.fixture(scope="module")
def one_thread():
    """Small models on a shared 2-core machine: one intra-op thread avoids OpenMP contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
