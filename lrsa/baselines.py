r"""The alternatives every lrsa figure is measured against, at the same stored size.

Both give balanced factors ``U`` (n x r), ``V`` (r x d) of a rank-r approximation of a layer's
lowered weight (n x d); :func:`lrsa.pipeline.compress` with ``method="svd"`` or ``"rrr"``
applies them layer by layer (asymmetric inputs for ``"rrr"``), and
:func:`lrsa.pipeline.matching_plan` gives them the per-layer sizes of an lrsa run.

* :func:`truncated_svd`: :math:`\min_{\operatorname{rank} B\le r}\|W - B\|_F`, data-free
  (Eckart-Young).
* :func:`reduced_rank_regression`: :math:`\min_{\operatorname{rank} B\le r}
  \|Z - b\mathbf 1^\top - BX\|_F` on sampled inputs X and pre-activation responses Z, the
  linear case of Zhang et al. (X. Zhang, J. Zou, K. He, J. Sun, "Accelerating Very Deep
  Convolutional Networks for Classification and Detection", IEEE TPAMI 38(10), 2016);
  :class:`lrsa.structured_fit.StructuredFit` with no sparse columns.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .solver import LayerProblem
from .structured_fit import StructuredFit

__all__ = ["reduced_rank_regression", "truncated_svd"]


def _balanced(P, s, Vh):
    root = array_namespace(s).sqrt(s)
    return P * root, root[:, None] * Vh


def truncated_svd(W, rank):
    """(U, V) with U V the best rank-``rank`` approximation of W (n x d) in Frobenius norm
    (a NumPy array or a tensor; the factors are of its kind)."""
    P, s, Vh = array_namespace(W).linalg.svd(W, full_matrices=False)
    r = max(0, min(int(rank), s.shape[0]))
    return _balanced(P[:, :r], s[:r], Vh[:r])


def reduced_rank_regression(X, Z, rank, bias=None):
    """(U, V) minimizing ``||Z - b - U V X||_F`` over rank ``rank``.

    X : (d, N) lowered inputs; Z : (n, N) responses; bias : (n,) fixed bias (default 0).
    """
    _, U, V, _ = StructuredFit(LayerProblem(X, Z, bias, "linear")).fit([], rank)
    return U, V
