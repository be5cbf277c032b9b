"""lrsa: unified sparse + low-rank approximation of convolutional networks.

Ma, Chen, Li, Shang, Yu, Cho and Yu, "A Unified Approximation Framework for Compressing and
Accelerating Deep Neural Networks", ICTAI 2019.

One layer's maths, the proximal operators, the ADMM with its correction step and the exact
fits (:mod:`lrsa.prox`, :mod:`lrsa.admm`, :mod:`lrsa.solver`, :mod:`lrsa.structured_fit`,
:mod:`lrsa.baselines`), is written against the array API standard: it computes in NumPy
when given NumPy arrays (torch need not be installed) and in torch when given tensors. The
network pipeline's names load torch when they are first used.
"""

import importlib

from .admm import he_yuan_correction
from .baselines import reduced_rank_regression, truncated_svd
from .objective import layer_objective
from .prox import prox_l21, soft_threshold, svt
from .solution import LayerSolution
from .solver import solve_layer
from .structured_fit import StructuredFit

#: the top-level names that need torch (the pipeline's), loaded on first use
_LAZY = dict.fromkeys(["Budget", "CompressionReport", "LayerPlan", "LayerReport",
                       "SolverSettings", "compress", "compress_like", "finetune",
                       "load_compressed", "matching_plan", "save_compressed"], "pipeline")

__all__ = ["prox_l21", "svt", "soft_threshold", "he_yuan_correction", "solve_layer",
           "layer_objective", "LayerSolution", "StructuredFit", "truncated_svd",
           "reduced_rank_regression", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # once loaded, an ordinary attribute
        return value
    raise AttributeError(f"module 'lrsa' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
