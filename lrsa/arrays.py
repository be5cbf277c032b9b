"""The few linear-algebra pieces the Python array API standard leaves out, for NumPy and torch.

The solver (:mod:`lrsa.solver`, :mod:`lrsa.objective`, :mod:`lrsa.structured_fit`) is written
once against the standard through ``array_api_compat``, as :mod:`lrsa.prox` is: it computes in
NumPy when given NumPy arrays (torch need not be installed) and in torch when given tensors
(any device), as in the pipeline. Only these two: the solver also assigns into arrays and
indexes with masks beside other indices, which both allow and the standard does not promise
(``check_floating`` refuses other arrays). The standard has a Cholesky factorization but no
triangular solve; SciPy gives NumPy one and torch has its own. Each helper takes its
namespace from its arguments and imports torch only when it is handed a tensor.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace, device, is_numpy_array, is_torch_array, to_device

__all__ = ["cho_solve", "cholesky_or_none", "like", "same_kind", "solve_triangular"]


def cholesky_or_none(S):
    """The lower Cholesky factor of a symmetric matrix, or None where it is not positive
    definite in its dtype (the caller decides what to do: retry in float64, add a ridge)."""
    if is_torch_array(S):
        import torch
        L, info = torch.linalg.cholesky_ex(S)
        return L if int(info) == 0 else None
    try:
        L = np.linalg.cholesky(S)
    except np.linalg.LinAlgError:
        return None
    # NumPy returns NaN, not an error, for some indefinite float32 inputs
    return L if bool(np.isfinite(L).all()) else None


def solve_triangular(L, B, *, lower=True):
    """X with L X = B, L triangular (``lower`` or upper)."""
    if is_torch_array(L):
        import torch
        return torch.linalg.solve_triangular(L, B, upper=not lower)
    import scipy.linalg
    return scipy.linalg.solve_triangular(L, B, lower=lower).astype(L.dtype, copy=False)


def cho_solve(L, B):
    """X with (L L^T) X = B, from the lower Cholesky factor L."""
    return solve_triangular(L.T, solve_triangular(L, B, lower=True), lower=False)


def same_kind(V, ref):
    """``V`` (a NumPy array or torch tensor, checked by the caller) in the array kind and on
    the device of ``ref``, its dtype kept: a NumPy start for a torch problem, or the reverse."""
    if is_numpy_array(ref) and is_torch_array(V):
        V = V.detach().cpu().numpy()
    elif is_torch_array(ref) and is_numpy_array(V):
        import torch
        V = torch.from_numpy(np.ascontiguousarray(V))
    return to_device(V, device(ref))


def like(V, ref):
    """``V`` in the array kind, device and dtype of ``ref`` (see :func:`same_kind`)."""
    return array_namespace(ref).astype(same_kind(V, ref), ref.dtype, copy=False)
