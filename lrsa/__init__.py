"""lrsa: unified sparse + low-rank approximation of convolutional networks.

Ma, Chen, Li, Shang, Yu, Cho and Yu, "A Unified Approximation Framework for Compressing and
Accelerating Deep Neural Networks", ICTAI 2019.

The proximal operators and the ADMM's correction step (:mod:`lrsa.prox`, :mod:`lrsa.admm`)
need NumPy only; every other name below loads torch when it is first used, so that
``import lrsa.prox`` works where torch is not installed.
"""

import importlib

from .admm import he_yuan_correction
from .prox import prox_l21, soft_threshold, svt

#: the top-level names that need torch, and the module defining each (loaded on first use)
_LAZY = {
    **dict.fromkeys(["truncated_svd", "reduced_rank_regression"], "baselines"),
    **dict.fromkeys(["Budget", "CompressionReport", "LayerPlan", "LayerReport",
                     "SolverSettings", "compress", "compress_like", "finetune",
                     "load_compressed", "matching_plan", "save_compressed"], "pipeline"),
    "LayerSolution": "solution",
    "layer_objective": "objective",
    "solve_layer": "solver",
    "StructuredFit": "structured_fit",
}

__all__ = ["prox_l21", "svt", "soft_threshold", "he_yuan_correction", *_LAZY]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # once loaded, an ordinary attribute
        return value
    raise AttributeError(f"module 'lrsa' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_LAZY})
