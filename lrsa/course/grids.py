"""The lambda grid behind the slider explorers of notebooks 05 and 06: one layer solved for
every (relative_lam1, ratio) of a grid, on features collected once, cacheable to JSON, so
that :mod:`lrsa.course.explorer` answers a slider move by a lookup. Lambdas and compression
rates are those of :mod:`lrsa.course.experiments`.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import torch

from ..batchnorm import fold_batchnorm
from ..features import collect_features
from ..parallel import map_on
from ..pipeline import LayerPlan
from ..utils import atomic_write_text, progress_bar, weights_fingerprint
from .experiments import relative_error
from .setups import cache_key

__all__ = ["lambda_grid"]


def lambda_grid(model, layer_name, calib, relative_lam1s, ratios, *, response="relu",
                samples_per_image=10, max_samples=10_000, max_iter=200, tol=1e-3,
                cache=None, progress=True, client=None):
    """Solve one layer for every (relative_lam1, ratio) of a grid, for an instant slider explorer.

    The solves are exactly those of ``compress`` for ``plan={layer_name: LayerPlan(relative_lam1,
    ratio)}``, on features collected once.

    Parameters
    ----------
    model : nn.Module
        The original network (not modified).
    layer_name : str
        The Conv2d/Linear module.
    calib : list
        Calibration batches.
    relative_lam1s, ratios : sequence of float
        Grid axes (``ratio`` may be math.inf: sparse only).
    response : str
        ``"relu"`` or ``"linear"``.
    samples_per_image, max_samples, max_iter, tol
        As in :func:`lrsa.pipeline.compress`.
    cache : path, optional
        JSON file: read when it holds this very grid (same weights, layer and settings),
        else computed and written (atomically; an infinite ratio is written as Python's
        ``Infinity``).
    progress : bool
        A tqdm bar over the grid.
    client : dask.distributed.Client, optional
        Solve the points in parallel on its workers (:func:`lrsa.parallel.dask_client`: a
        local cluster, or a scheduler's address); the features are sent to each worker
        once. The points are the serial ones, in the same order.

    Returns
    -------
    dict
        ``layer``, ``response``, ``n``, ``d``, ``relative_lam1s``, ``ratios``, ``key`` and
        ``points``: one dict per (relative_lam1, ratio) with ``relative_lam1``, ``ratio``,
        ``lam1``, ``lam2``, ``size_a``, ``size_b``, ``size``, ``rank``, ``nonzero_columns``,
        ``rel_error`` (fitted response), ``relu_error``, ``column_norms`` (of A, length d) and
        ``singular_values`` (of B, descending), ``converged``; ``seconds`` (the time the grid
        took when it was solved) and ``cached`` (True when this call read it from ``cache``).
    """
    from ..pipeline import columns_per_channel, layer_bias, lowered_weight

    relative_lam1s = [float(f) for f in relative_lam1s]
    ratios = [float(r) for r in ratios]
    # "fields" names the points' keys: a cache written under older names is solved again
    settings = dict(fields="size", layer=layer_name, response=response,
                    relative_lam1s=relative_lam1s, ratios=ratios, spi=samples_per_image,
                    max_samples=max_samples,
                    max_iter=max_iter, tol=tol, n_calib=sum(len(b) for b in calib))
    key = cache_key(weights_fingerprint(model), settings)
    if cache is not None and Path(cache).is_file():
        try:
            got = json.loads(Path(cache).read_text())
            if got.get("key") == key:
                return {**got, "cached": True}
        except (OSError, ValueError):
            pass
    start = time.perf_counter()
    folded = fold_batchnorm(copy.deepcopy(model).eval())
    mod = folded.get_submodule(layer_name)
    feats = collect_features(folded, [layer_name], calib, samples_per_image=samples_per_image,
                             max_samples=max_samples, seed=0)[layer_name]
    W, b = lowered_weight(mod).to(feats.X), layer_bias(mod).to(feats.X)
    n, d = W.shape
    shared = (feats.X, feats.Z, W, b)
    items = [(relative_lam1, ratio, response, columns_per_channel(mod), max_iter, tol)
             for ratio in ratios for relative_lam1 in relative_lam1s]
    with progress_bar(progress, len(items), f"lambda grid {layer_name}") as bar:
        if client is None:
            points = []
            for item in items:
                points.append(_grid_point(*shared, *item))
                bar.update(1)
        else:
            points = map_on(client, _grid_point, shared, items, progress=bar)
    grid = {"key": key, "layer": layer_name, "response": response, "n": n, "d": d,
            "relative_lam1s": relative_lam1s, "ratios": ratios, "points": points,
            "seconds": time.perf_counter() - start, "cached": False}
    if cache is not None:
        atomic_write_text(cache, json.dumps(grid))
    return grid


def _grid_point(X, Z, W, b, relative_lam1, ratio, response, group, max_iter, tol):
    """One point of :func:`lambda_grid`: the layer approximated at (relative_lam1, ratio)."""
    from ..pipeline import SolverSettings, approximate_layer

    n, d = W.shape
    plan = LayerPlan(relative_lam1=relative_lam1, ratio=ratio)
    fit = approximate_layer(X, Z, W, b, plan, response, group, "lrsa",
                            SolverSettings(max_iter=max_iter, tol=tol))
    size_a = fit.kept_channels * group / d
    size_b = fit.rank * (n + d) / (n * d)
    B = fit.U @ fit.V
    Z_hat = (fit.A + B) @ X + fit.bias[:, None]  # the ReLU refinement may move the bias
    relu_error = relative_error(torch.relu(Z_hat), torch.relu(Z))  # = experiments.relu_output_error
    rel = relu_error if response == "relu" else relative_error(Z_hat, Z)
    sv = torch.linalg.svdvals(B.double()) if fit.rank else torch.zeros(0)
    return {"relative_lam1": relative_lam1, "ratio": ratio, "lam1": fit.admm.lam1,
            "lam2": fit.admm.lam2, "size_a": size_a, "size_b": size_b, "size": size_a + size_b,
            "rank": fit.rank, "nonzero_columns": fit.nonzero_columns, "rel_error": rel,
            "relu_error": relu_error,
            "column_norms": [float(f"{v:.6g}") for v in
                             torch.linalg.vector_norm(fit.A, dim=0).tolist()],
            "singular_values": [float(f"{v:.6g}") for v in sv[:fit.rank].tolist()],
            "converged": fit.converged}
