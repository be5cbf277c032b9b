"""Whole networks: plan a budget, approximate layer after layer, store, fine-tune.

One job per module, each importing only the ones above it in this list:

* ``lrsa.pipeline.trace``: one traced forward pass (input shapes, which layers feed a
  ReLU); swapping a layer.
* ``lrsa.pipeline.layer``: one layer from its features (:func:`approximate_layer`,
  the structure choice) and :class:`SolverSettings`.
* ``lrsa.pipeline.results``: :class:`CompressionReport` and its :class:`LayerReport`
  rows, the model as stored.
* ``lrsa.pipeline.speed``: factored or dense (the fall-back rules), the whole-model
  check, and the speed-up budget's spread on measured times.
* ``lrsa.pipeline.budget``: :class:`Budget`, :class:`LayerPlan`, the spread of a
  whole-network target over the layers.
* ``lrsa.pipeline.network``: :func:`compress` (the loop, resume) and
  :func:`compress_like`.
* ``lrsa.pipeline.saving``, ``lrsa.pipeline.finetune``: after compressing.
"""

from .budget import Budget, LayerPlan, default_plan, matching_plan
from .finetune import MAX_GRAD_NORM, finetune
from .layer import (LayerFit, SolverSettings, approximate_layer, columns_per_channel,
                    layer_bias, lowered_weight)
from .network import compress, compress_like
from .results import CompressionReport, LayerReport
from .saving import load_compressed, save_compressed

__all__ = ["Budget", "CompressionReport", "LayerFit", "LayerPlan", "LayerReport", "MAX_GRAD_NORM",
           "SolverSettings", "approximate_layer", "columns_per_channel", "compress",
           "compress_like", "default_plan", "finetune", "layer_bias", "load_compressed",
           "lowered_weight", "matching_plan", "save_compressed"]
