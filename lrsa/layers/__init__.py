r"""Modules that realize an approximated layer ``W ~ A + B`` with ``B = U V`` (fast).

Lowered shapes follow :mod:`lrsa.features`: ``A`` and ``B`` are n x d with d = c k_h k_w in
PyTorch's channel-major order (column ``ch * k_h * k_w + i * k_w + j``), ``U`` is n x r and
``V`` is r x d.

:class:`SparseLowRankConv2d` computes ``y = conv(x, A) + conv(x, U V) + bias`` as

* a **low-rank branch**: a k x k conv with r filters (``V`` reshaped to r x c x k_h x k_w, no
  bias, the original stride/padding/dilation) followed by a 1 x 1 conv with ``U`` (n x r);
* a **sparse branch**: the input channels whose k_h k_w columns of ``A`` are all zero are
  dropped (``index_select`` over channels), and a conv with the reduced weight
  (n x c_kept x k_h x k_w) runs on the rest. Zero columns *inside* kept channels stay as
  zeros in that reduced weight (a boolean ``column_mask`` buffer remembers them, see
  :func:`keep_structure_hook`); the alternative, a true gather of individual columns
  (im2col of the kept columns then a GEMM), saves those MACs but loses cuDNN/oneDNN
  convolution kernels, so it is not used.

The bias lives in the last conv of the low-rank branch when there is one (fused), else in
the sparse conv, else in a lone parameter (both branches absent: the output is the bias).
An entirely zero ``A`` gives no sparse branch, ``r = 0`` no low-rank branch.
:class:`SparseLowRankLinear` is the same for ``nn.Linear`` (kept input features gathered +
a Linear; Linear(d -> r, no bias) then Linear(r -> n)).

Saving and loading a compressed model: each layer's ``structure()`` gives a JSON-friendly
dict, its class's ``from_structure`` an untrained module of the same shapes, so
``load_state_dict`` works; :func:`model_structure` / :func:`apply_structure` do it for a
whole model.

One job per module: ``lrsa.layers.conv`` (:class:`SparseLowRankConv2d`),
``lrsa.layers.linear`` (:class:`SparseLowRankLinear`, :class:`EntrySparseLowRankLinear`),
``lrsa.layers.structure`` (a whole model's factored modules: saved, rebuilt, kept during
fine-tuning, their MACs); the base class they share is in ``lrsa.layers._base``.
"""

from . import structure
from .conv import SparseLowRankConv2d
from .linear import EntrySparseLowRankLinear, SparseLowRankLinear
from .structure import (apply_structure, estimate_macs, factored_macs, keep_structure_hook,
                        model_structure)

# assigned here rather than imported, so that the API page documents it: autodoc reads the
# "#:" comments of the module it documents only
#: the modules that stand for an approximated layer
FACTORED_MODULES = structure.FACTORED_MODULES

__all__ = ["EntrySparseLowRankLinear", "FACTORED_MODULES", "SparseLowRankConv2d",
           "SparseLowRankLinear", "apply_structure", "estimate_macs", "factored_macs",
           "keep_structure_hook", "model_structure"]
