"""Network-level reporting: parameters, MACs, latency, accuracy and a Table-I-like summary.

CR follows the paper's eq. (15): approximated size / original size (x 100 %), and the
reduction factor is its inverse (the paper's "4.44x reduction of model size" for VGG-16).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

import torch
from torch import nn

from .layers import FACTORED_MODULES, estimate_macs
from .timing import compare_latency, measure_latency
from .utils import atomic_write_text, device_and_dtype, evaluating, format_table

__all__ = ["accuracy", "compare_latency", "count_macs", "count_parameters", "layer_macs",
           "markdown_table", "measure_latency", "network_summary", "write_report"]




def count_parameters(model):
    """Number of parameters of ``model``.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    int
        All parameters (shared ones once); a SparseLowRank module counts what it stores.
    """
    return sum(p.numel() for p in model.parameters())


def count_macs(model, input_shape):
    """Multiply-accumulates of one forward pass: the sum of :func:`layer_macs`.

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : tuple of int
        Full input shape, batch first (e.g. ``(1, 3, 32, 32)``).

    Returns
    -------
    int
    """
    return sum(layer_macs(model, input_shape).values())


def layer_macs(model, input_shape):
    """Multiply-accumulates of each layer in one traced forward pass on zeros of
    ``input_shape``: :func:`lrsa.layers.estimate_macs` of every nn.Conv2d, nn.Linear and
    SparseLowRank module called (modules inside a SparseLowRank module are not counted
    again; a module called twice counts twice). Other operations (BN, pooling, ...) are
    ignored.

    Returns
    -------
    dict
        Module name -> int, in the order of the first call.
    """
    inner = {id(c) for m in model.modules() if isinstance(m, FACTORED_MODULES)
             for c in m.modules() if c is not m}
    found, handles = {}, []

    def hook(name, mod, args):
        found[name] = found.get(name, 0) + int(estimate_macs(mod, tuple(args[0].shape)))

    for name, m in model.named_modules():
        if isinstance(m, (*FACTORED_MODULES, nn.Conv2d, nn.Linear)) and id(m) not in inner:
            handles.append(m.register_forward_pre_hook(
                lambda mod, args, name=name: hook(name, mod, args)))
    dev, dt = device_and_dtype(model)
    try:
        with evaluating(model), torch.inference_mode():
            model(torch.zeros(*input_shape, device=dev, dtype=dt))
    finally:
        for h in handles:
            h.remove()
    return found


def accuracy(model, loader, topk=(1,)):
    """Top-k accuracies in percent; see :func:`lrsa.train.evaluate`."""
    from .train import evaluate
    return evaluate(model, loader, topk=topk)


def network_summary(original, compressed, input_shape, *, latency_batches=(1, 128), repeats=5):
    """Parameters, MACs and interleaved latency of an original / compressed pair.

    Parameters
    ----------
    original, compressed : torch.nn.Module
    input_shape : tuple of int
        Input shape; its batch dimension (first) is replaced by each latency batch size and
        by 1 for the MAC count.
    latency_batches : sequence of int
        Batch sizes timed (empty: no timing).
    repeats : int
        Timed passes per model and batch size.

    Returns
    -------
    dict
        ``params_original``, ``params_compressed``, ``params_ratio`` (original / compressed),
        ``macs_original``, ``macs_compressed``, ``macs_ratio`` (per sample) and ``latency``:
        ``{"b1": compare_latency(...), "b128": ...}``.
    """
    sample = tuple(input_shape[1:])
    po, pc = count_parameters(original), count_parameters(compressed)
    mo, mc = count_macs(original, (1, *sample)), count_macs(compressed, (1, *sample))
    lat = {f"b{b}": compare_latency(original, compressed, (int(b), *sample), repeats=repeats)
           for b in latency_batches}
    return {"params_original": po, "params_compressed": pc,
            "params_ratio": po / pc if pc else float("inf"),
            "macs_original": mo, "macs_compressed": mc,
            "macs_ratio": mo / mc if mc else float("inf"), "latency": lat}


def _pct(v):
    return f"{v:.1f}"


def markdown_table(rows, paper=None, names=None, paper_ratio=None):
    """A Table-I-like markdown table of per-layer compression rates.

    Parameters
    ----------
    rows : list of dict
        :class:`lrsa.pipeline.CompressionReport`'s ``layers`` rows (``name``, ``size_a``,
        ``size_b``, ``size`` as fractions, ``params_original``, ``params_compressed``).
    paper : dict, optional
        Paper name -> (CR(A), CR(B), CR(A+B)) in %, e.g. :data:`lrsa.paper.PAPER_TABLE_I`; adds
        three columns beside ours.
    names : dict, optional
        Our module name -> paper name, e.g. :data:`lrsa.paper.VGG16_LAYER_NAMES`.
    paper_ratio : float, optional
        The paper's whole-network reduction factor (e.g. 4.44) for the last row.

    Returns
    -------
    str
        The table; its last row is the whole-network CR (sum of compressed / sum of
        original parameters) with the reduction factor.
    """
    names = names or {}
    columns = ["layer", "size(A) %", "size(B) %", "size(A+B) %"]
    if paper is not None:
        columns += ["paper size(A) %", "paper size(B) %", "paper size(A+B) %"]
    table = []
    for r in rows:
        label = names.get(r["name"], r["name"])
        row = [label, _pct(100 * r["size_a"]), _pct(100 * r["size_b"]), _pct(100 * r["size"])]
        if paper is not None:
            row += [_pct(v) for v in paper[label]] if label in paper else [None] * 3
        table.append(row)
    po = sum(r["params_original"] for r in rows)
    pc = sum(r["params_compressed"] for r in rows)
    size = pc / po if po else float("nan")
    factor = f"{1 / size:.2f}x" if size > 0 else "inf"
    total = ["**network**", "", "", f"{_pct(100 * size)} ({factor} reduction)"]
    if paper is not None:
        total += ["", "", f"{_pct(100 / paper_ratio)} ({paper_ratio:.2f}x reduction)"
                  if paper_ratio else None]
    return format_table(columns, table + [total])


def _json_default(o):
    if isinstance(o, Mapping):  # e.g. a LayerReport row
        return dict(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def write_report(path_stem, data):
    """Write ``path_stem.json`` atomically and ``path_stem.md`` if ``data["markdown"]``.

    Parameters
    ----------
    path_stem : str or os.PathLike
        Output path without extension; its folder is created if needed.
    data : dict
        JSON-serializable (tensors and numpy scalars/arrays are converted).

    Returns
    -------
    tuple of str
        Paths written (json first).
    """
    stem = os.fspath(path_stem)
    written = [atomic_write_text(stem + ".json",
                                 json.dumps(data, indent=2, default=_json_default) + "\n")]
    if data.get("markdown"):
        written.append(atomic_write_text(stem + ".md",
                                         str(data["markdown"]).rstrip("\n") + "\n"))
    return tuple(str(p) for p in written)
