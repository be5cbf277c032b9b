"""Wall-clock latency: one model, or two interleaved in the same run (A, B, B, A, ...).

Used by :mod:`lrsa.report` for whole networks and by ``lrsa.pipeline.speed.realize``
for one layer in place (dense or factored, whichever is faster where it runs).
"""

from __future__ import annotations

import os
import statistics
import time
from contextlib import contextmanager

import torch

from .utils import device_and_dtype

__all__ = ["KEEP_MEMORY", "allocator", "compare_latency", "measure_latency"]

#: ``GLIBC_TUNABLES`` that make glibc's malloc keep freed memory for reuse: no allocation by
#: mmap, no trimming of the heap below 16 GiB. Read when a process starts, so it is set in
#: the environment of the command (``GLIBC_TUNABLES=... python ...``), never from Python.
KEEP_MEMORY = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=17179869184"


def allocator():
    """How this process's memory allocator was set when it started: ``GLIBC_TUNABLES``, or
    "glibc default".

    Batch inference on a CPU allocates one large activation per layer and frees it; by
    default glibc serves each from fresh pages (mmap) and hands them back at once, so every
    forward pass page-faults its activations anew; :data:`KEEP_MEMORY` keeps them (what that
    is worth, measured by ``benchmarks/allocator.py``: docs, Benchmarks). Timings are
    comparable only under the same setting, so benchmarks record it.
    """
    return os.environ.get("GLIBC_TUNABLES") or "glibc default"


def _sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(model, x, dev):
    _sync(dev)
    t0 = time.perf_counter()
    model(x)
    _sync(dev)
    return time.perf_counter() - t0


def _prepare(model, input_shape, channels_last):
    dev, dt = device_and_dtype(model)
    x = torch.randn(*input_shape, device=dev, dtype=dt)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, dev


@contextmanager
def _timing(models, channels_last, threads):
    """Eval mode, inference mode, optional channels_last and thread count, all restored."""
    old_threads = torch.get_num_threads()
    states = [(m, m.training, [p.data for p in m.parameters()]) for m in models]
    try:
        if threads is not None:
            torch.set_num_threads(int(threads))
        for m in models:
            m.eval()
            if channels_last:
                for p in m.parameters():
                    if p.dim() == 4:
                        p.data = p.data.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            yield
    finally:
        for m, was, data in states:
            for p, d in zip(m.parameters(), data):
                p.data = d
            m.train(was)
        torch.set_num_threads(old_threads)


def measure_latency(model, input_shape, *, repeats=10, warmup=2, channels_last=False,
                    threads=None):
    """Wall-clock time of one forward pass on a random input.

    Parameters
    ----------
    model : torch.nn.Module
        Timed in eval mode under ``torch.inference_mode``; its mode is restored.
    input_shape : tuple of int
        Input shape, batch first.
    repeats, warmup : int
        Timed and untimed forward passes.
    channels_last : bool
        Use channels_last memory format for the input and 4-D weights (restored after).
    threads : int, optional
        ``torch.set_num_threads`` for the measurement (restored after).

    Returns
    -------
    dict
        ``median_s``, ``min_s`` (seconds) and ``repeats``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    with _timing([model], channels_last, threads):
        x, dev = _prepare(model, input_shape, channels_last)
        for _ in range(warmup):
            model(x)
        times = [_timed(model, x, dev) for _ in range(repeats)]
    return {"median_s": statistics.median(times), "min_s": min(times), "repeats": repeats}


def compare_latency(original, compressed, input_shape, *, repeats=10, channels_last=False,
                    warmup=2, threads=None):
    """Latency of two models measured interleaved (A, B, A, B, ...) in the same run.

    Parameters
    ----------
    original, compressed : torch.nn.Module
    input_shape : tuple of int
        Input shape, batch first.
    repeats : int
        Timed passes per model; each repeat runs both models (order alternates too).
    channels_last : bool
        As in :func:`measure_latency`.
    warmup : int
        Untimed passes per model.
    threads : int, optional
        As in :func:`measure_latency`.

    Returns
    -------
    dict
        ``original_median_s``, ``compressed_median_s``, ``original_min_s``,
        ``compressed_min_s``, ``repeats``, ``speedup`` = original / compressed median, and
        the raw times, ``original_times_s`` and ``compressed_times_s`` (lists, in order).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    models = (original, compressed)
    with _timing(models, channels_last, threads):
        x, dev = _prepare(original, input_shape, channels_last)
        for _ in range(warmup):
            for m in models:
                m(x)
        times = ([], [])
        for i in range(repeats):
            order = (0, 1) if i % 2 == 0 else (1, 0)
            for j in order:
                times[j].append(_timed(models[j], x, dev))
    med = [statistics.median(t) for t in times]
    return {"original_median_s": med[0], "compressed_median_s": med[1],
            "original_min_s": min(times[0]), "compressed_min_s": min(times[1]),
            "repeats": repeats, "speedup": med[0] / med[1] if med[1] > 0 else float("inf"),
            "original_times_s": times[0], "compressed_times_s": times[1]}
