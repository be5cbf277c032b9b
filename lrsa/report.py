"""Network-level reporting: parameters, MACs, latency, accuracy and a Table-I-like summary.

CR follows the paper's eq. (15): approximated size / original size (x 100 %), and the
reduction factor is its inverse (the paper's "4.44x reduction of model size" for VGG-16).
"""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager

import torch
from torch import nn

from .layers import SparseLowRankConv2d, SparseLowRankLinear, estimate_macs
from .timing import device_and_dtype, compare_latency, measure_latency

__all__ = ["NIN_LAYER_NAMES", "PAPER_NIN", "PAPER_TABLE_I", "PAPER_TABLE_II", "PAPER_VGG16",
           "VGG16_LAYER_NAMES", "accuracy", "compare_latency",
           "count_macs", "count_parameters", "markdown_table", "measure_latency",
           "network_summary", "write_report"]

_SLR = (SparseLowRankConv2d, SparseLowRankLinear)

#: Paper Table I (VGG-16, CIFAR-10): layer -> (CR(A) %, CR(B) %, CR(A+B) %), verbatim.
#: Note: the paper's conv4-3 row does not add up (4.0 + 16.3 != 24.3); kept as printed.
PAPER_TABLE_I = {
    "conv1-1": (0.0, 100.0, 100.0), "conv1-2": (5.4, 52.1, 57.5),
    "conv2-1": (5.4, 38.2, 43.6), "conv2-2": (2.2, 28.6, 30.8),
    "conv3-1": (2.8, 47.7, 50.5), "conv3-2": (4.0, 54.3, 58.3),
    "conv3-3": (10.0, 59.0, 69.0), "conv4-1": (2.0, 16.0, 18.0),
    "conv4-2": (2.0, 22.4, 24.4), "conv4-3": (4.0, 16.3, 24.3),
    "conv5-1": (2.0, 9.8, 11.8), "conv5-2": (2.0, 8.7, 10.7),
    "conv5-3": (2.0, 6.7, 8.7), "fc1": (44.2, 0.0, 44.2),
    "fc2": (36.2, 0.0, 36.2), "fc3": (24.0, 0.0, 24.0),
}
#: Paper whole-network VGG-16 results (Tables I and III): size reduction, speed-up, top-1 drop (%).
PAPER_VGG16 = {"params_ratio": 4.44, "speedup": 2.2, "accuracy_drop": 0.40}

#: Paper Table II (NIN, CIFAR-10): layer -> (CR(A) %, CR(B) %, CR(A+B) %), verbatim. Only the
#: three spatial convolutions are approximated, and only by their low-rank part.
PAPER_TABLE_II = {
    "conv1": (0.0, 18.4, 18.4), "cccp1": (0.0, 100.0, 100.0), "cccp2": (0.0, 100.0, 100.0),
    "conv2": (0.0, 16.9, 16.9), "cccp3": (0.0, 100.0, 100.0), "cccp4": (0.0, 100.0, 100.0),
    "conv3": (0.0, 38.2, 38.2), "cccp5": (0.0, 100.0, 100.0), "cccp6": (0.0, 100.0, 100.0),
}
#: Paper whole-network NIN results (Tables II and III): CR 36.0 %, 2.77x smaller, top-1 drop
#: 0.41 points. Speed-up: Table II prints 2.2x, Table III and the text 1.70x.
PAPER_NIN = {"cr": 36.0, "params_ratio": 2.77, "speedup": 1.7, "speedup_table_ii": 2.2,
             "accuracy_drop": 0.41}
#: Our NIN module names -> the paper's layer names.
NIN_LAYER_NAMES = {f"features.{n}": n for n in PAPER_TABLE_II}

_CONV_IDX = (0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40)
_CONV_NAMES = [f"conv{s}-{i}" for s, n in ((1, 2), (2, 2), (3, 3), (4, 3), (5, 3))
               for i in range(1, n + 1)]
#: Our VGG-16 module names -> the paper's layer names.
VGG16_LAYER_NAMES = {
    **{f"features.{i}": nm for i, nm in zip(_CONV_IDX, _CONV_NAMES)},
    "classifier.0": "fc1", "classifier.3": "fc2", "classifier.6": "fc3",
}


@contextmanager
def _eval(model):
    was = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was)


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
    """Multiply-accumulates of one forward pass, from a traced forward.

    Parameters
    ----------
    model : torch.nn.Module
    input_shape : tuple of int
        Full input shape, batch first (e.g. ``(1, 3, 32, 32)``).

    Returns
    -------
    int
        Sum of :func:`lrsa.layers.estimate_macs` over every nn.Conv2d, nn.Linear,
        SparseLowRankConv2d and SparseLowRankLinear called (modules inside a SparseLowRank
        module are not counted again). Other operations (BN, pooling, ...) are ignored.
    """
    inner = {id(c) for m in model.modules() if isinstance(m, _SLR)
             for c in m.modules() if c is not m}
    total, handles = [0], []

    def hook(mod, args):
        total[0] += int(estimate_macs(mod, tuple(args[0].shape)))

    for m in model.modules():
        if isinstance(m, (*_SLR, nn.Conv2d, nn.Linear)) and id(m) not in inner:
            handles.append(m.register_forward_pre_hook(hook))
    dev, dt = device_and_dtype(model)
    try:
        with _eval(model), torch.inference_mode():
            model(torch.zeros(*input_shape, device=dev, dtype=dt))
    finally:
        for h in handles:
            h.remove()
    return total[0]


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
        :attr:`lrsa.compress.CompressionReport.layers` rows (``name``, ``cr_a``, ``cr_b``,
        ``cr`` as fractions, ``params_original``, ``params_compressed``).
    paper : dict, optional
        Paper name -> (CR(A) %, CR(B) %, CR(A+B) %), e.g. :data:`PAPER_TABLE_I`; adds
        three columns beside ours.
    names : dict, optional
        Our module name -> paper name, e.g. :data:`VGG16_LAYER_NAMES`.
    paper_ratio : float, optional
        The paper's whole-network reduction factor (e.g. 4.44) for the last row.

    Returns
    -------
    str
        The table; its last row is the whole-network CR (sum of compressed / sum of
        original parameters) with the reduction factor.
    """
    names = names or {}
    head = "| layer | CR(A) % | CR(B) % | CR(A+B) % |"
    sep = "|---|---:|---:|---:|"
    if paper is not None:
        head += " paper CR(A) % | paper CR(B) % | paper CR(A+B) % |"
        sep += "---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        label = names.get(r["name"], r["name"])
        line = f"| {label} | {_pct(100 * r['cr_a'])} | {_pct(100 * r['cr_b'])} | " \
               f"{_pct(100 * r['cr'])} |"
        if paper is not None:
            p = paper.get(label)
            line += " " + (" | ".join(_pct(v) for v in p) if p else "- | - | -") + " |"
        lines.append(line)
    po = sum(r["params_original"] for r in rows)
    pc = sum(r["params_compressed"] for r in rows)
    cr = pc / po if po else float("nan")
    factor = f"{1 / cr:.2f}x" if cr > 0 else "inf"
    line = f"| **network** | | | {_pct(100 * cr)} ({factor} reduction) |"
    if paper is not None:
        tail = f"{_pct(100 / paper_ratio)} ({paper_ratio:.2f}x reduction)" if paper_ratio \
            else "-"
        line += f" | | {tail} |"
    lines.append(line)
    return "\n".join(lines)


def _json_default(o):
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
    folder = os.path.dirname(os.path.abspath(stem))
    os.makedirs(folder, exist_ok=True)
    written = []
    payloads = [(stem + ".json", json.dumps(data, indent=2, default=_json_default) + "\n")]
    if data.get("markdown"):
        payloads.append((stem + ".md", str(data["markdown"]).rstrip("\n") + "\n"))
    for path, text in payloads:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        written.append(path)
    return tuple(written)
