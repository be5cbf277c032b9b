"""lrsa: unified sparse + low-rank approximation of convolutional networks.

Ma, Chen, Li, Shang, Yu, Cho and Yu, "A Unified Approximation Framework for Compressing and
Accelerating Deep Neural Networks", ICTAI 2019.
"""

from .admm import he_yuan_correction
from .prox import prox_l21, soft_threshold, svt
from .baselines import reduced_rank_regression, truncated_svd
from .pipeline import (Budget, LayerPlan, SolverSettings, compress, compress_like, finetune,
                       load_compressed, matching_plan, save_compressed)
from .solver import LayerSolution, StructuredFit, layer_objective, solve_layer

__all__ = ["prox_l21", "svt", "soft_threshold", "solve_layer", "LayerSolution",
           "layer_objective", "he_yuan_correction", "compress", "Budget", "LayerPlan",
           "SolverSettings", "finetune", "save_compressed",
           "load_compressed", "compress_like", "matching_plan", "StructuredFit", "truncated_svd",
           "reduced_rank_regression"]
__version__ = "0.1.0"
