"""A model's factored modules: which they are, their structure saved and rebuilt, kept during
fine-tuning, and the multiply-accumulates of a layer, factored or dense."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .conv import SparseLowRankConv2d, conv_output_hw
from .linear import EntrySparseLowRankLinear, SparseLowRankLinear

_TYPES = {"SparseLowRankConv2d": SparseLowRankConv2d,
          "SparseLowRankLinear": SparseLowRankLinear,
          "EntrySparseLowRankLinear": EntrySparseLowRankLinear}
FACTORED_MODULES = tuple(_TYPES.values())  # documented as lrsa.layers.FACTORED_MODULES


# ---------------------------------------------------------------------- fine-tuning

class _KeepStructure:
    def __init__(self, pairs):
        self.pairs = pairs

    @torch.no_grad()
    def __call__(self, *args, **kwargs):
        for weight, mask in self.pairs:
            weight.mul_(mask)

    def __len__(self):
        return len(self.pairs)


def keep_structure_hook(model):
    """A callable that re-zeroes the structurally zero columns of every sparse branch.

    Call it after each optimizer step, or register it:
    ``optimizer.register_step_post_hook(keep_structure_hook(model))`` (it ignores its
    arguments). Dropped channels/features need nothing (they are not in the weights); the
    zero columns inside kept channels of :class:`SparseLowRankConv2d` are re-zeroed with its
    ``column_mask`` buffer, the zeros of :class:`EntrySparseLowRankLinear` with its
    ``mask``. The modules are found when the hook is made.
    """
    pairs = []
    for m in model.modules():
        if isinstance(m, SparseLowRankConv2d) and m.sparse is not None \
                and not bool(m.column_mask.all()):
            pairs.append((m.sparse.weight, m.column_mask))
        if isinstance(m, EntrySparseLowRankLinear) and not bool(m.mask.all()):
            pairs.append((m.sparse.weight, m.mask))
    return _KeepStructure(pairs)


# ---------------------------------------------------------------------- whole models

def model_structure(model):
    """``{name: structure()}`` of every SparseLowRank module of ``model`` (JSON-friendly)."""
    return {name: m.structure() for name, m in model.named_modules()
            if isinstance(m, FACTORED_MODULES)}


def apply_structure(model, structures, *, device=None, dtype=None):
    """Replace, in place, the submodules named in ``structures`` (from
    :func:`model_structure`) by untrained SparseLowRank modules of those shapes, so that the
    compressed model's ``state_dict`` loads into ``model``. Returns ``model``."""
    for name, s in structures.items():
        if s.get("type") not in _TYPES:
            raise ValueError(f"unknown structure type {s.get('type')!r} for '{name}'")
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child, None)
        ref = next(old.parameters(), None) if isinstance(old, nn.Module) else None
        dev = device if device is not None else (ref.device if ref is not None else None)
        dt = dtype if dtype is not None else (ref.dtype if ref is not None else None)
        setattr(parent, child, _TYPES[s["type"]].from_structure(s, device=dev, dtype=dt))
    return model


# ---------------------------------------------------------------------- dense or factored

def factored_macs(positions, n, d, rank, sparse):
    """Multiply-adds of a factored layer A + U V with an n x d lowered weight at
    ``positions`` output positions: per position, the sparse part's ``sparse`` (n times its
    kept columns, or A's nonzeros), then V (r d) and U (n r)."""
    return positions * (sparse + rank * (d + n))


def estimate_macs(module, x_shape):
    """Multiply-accumulates of one forward of ``module`` on an input of shape ``x_shape``
    ((B, c, H, W) for convolutions, (..., d) for linear layers). Supports nn.Conv2d
    (any groups), nn.Linear and the SparseLowRank modules; for
    :class:`EntrySparseLowRankLinear` it counts A's nonzeros, the multiply-adds a sparse
    kernel performs (the module itself runs A densely)."""
    if isinstance(module, SparseLowRankConv2d):
        B, (ho, wo) = int(np.prod(x_shape[:-3])), module._out_hw(x_shape[-2], x_shape[-1])
        kk = int(np.prod(module.kernel_size))
        return factored_macs(B * ho * wo, module._n, module._d, module.rank,
                             module._n * module.kept_index.numel() * kk)
    if isinstance(module, (EntrySparseLowRankLinear, SparseLowRankLinear)):
        sparse = module.nonzeros if isinstance(module, EntrySparseLowRankLinear) \
            else module._n * module.nonzero_columns
        return factored_macs(int(np.prod(x_shape[:-1])), module._n, module._d, module.rank,
                             sparse)
    if isinstance(module, nn.Conv2d):
        B = int(np.prod(x_shape[:-3]))
        ho, wo = conv_output_hw(x_shape[-2], x_shape[-1], module.kernel_size, module.stride,
                              module.padding, module.dilation)
        return module.weight.numel() * B * ho * wo
    if isinstance(module, nn.Linear):
        return module.weight.numel() * int(np.prod(x_shape[:-1]))
    raise ValueError(f"estimate_macs: unsupported module {type(module).__name__}")
