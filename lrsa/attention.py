r"""Attention whose four projections are ``nn.Linear`` modules, so lrsa can approximate them.

``nn.MultiheadAttention`` keeps the query, key and value projections in one parameter
(``in_proj_weight``, 3E x E) and reads ``out_proj.weight`` directly inside
:func:`torch.nn.functional.multi_head_attention_forward`, and ``nn.TransformerEncoderLayer``
in eval mode may run a fused kernel that reads every weight itself. None of these calls a
``Linear`` module, so no hook sees their inputs and no factored module can stand in.
:class:`SplitProjectionAttention` computes the same function,

.. math::

    \operatorname{out}\big(\operatorname{concat}_h \operatorname{softmax}\big(
    q_h k_h^\top / \sqrt{E/H} + \text{mask}\big) v_h\big),\qquad
    q = \operatorname{q\_proj}(x_q),\ k = \operatorname{k\_proj}(x_k),\
    v = \operatorname{v\_proj}(x_v),

with ``q_proj``, ``k_proj``, ``v_proj`` and ``out_proj`` four ``nn.Linear`` modules called as
modules. :func:`split_attention` swaps it in for every ``nn.MultiheadAttention`` of a model
(weights copied, outputs equal up to rounding) and reports the ones it cannot take.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .utils import set_module

__all__ = ["AttentionSplit", "SplitProjectionAttention", "split_attention"]


class SplitProjectionAttention(nn.Module):
    """``nn.MultiheadAttention``'s forward (same arguments, same ``(output, weights)``
    result) with the projections as separate ``nn.Linear`` modules.

    Attributes
    ----------
    q_proj, k_proj, v_proj : nn.Linear
        (E -> E), (kdim -> E), (vdim -> E).
    out_proj : nn.Linear
        (E -> E).
    num_heads, head_dim, dropout, batch_first : as in ``nn.MultiheadAttention``.
    """

    # read by nn.TransformerEncoderLayer's fast-path check: with this False it calls
    # self_attn(...) like any module instead of a fused kernel that reads in_proj_weight
    _qkv_same_embed_dim = False
    in_proj_bias = None

    def __init__(self, embed_dim, num_heads, *, kdim=None, vdim=None, bias=True, dropout=0.0,
                 batch_first=False, device=None, dtype=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim={embed_dim} must be divisible by num_heads={num_heads}")
        fk = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads = int(embed_dim), int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout, self.batch_first = float(dropout), bool(batch_first)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **fk)
        self.k_proj = nn.Linear(kdim or embed_dim, embed_dim, bias=bias, **fk)
        self.v_proj = nn.Linear(vdim or embed_dim, embed_dim, bias=bias, **fk)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **fk)

    @classmethod
    def from_mha(cls, mha):
        """The same attention as ``mha`` (an ``nn.MultiheadAttention``), weights copied.
        A ValueError names what it cannot take: ``add_bias_kv`` and ``add_zero_attn``."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn add key and value rows outside the "
                             "projections; such attention is kept as it is")
        w = mha.out_proj.weight
        new = cls(mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim,
                  bias=mha.in_proj_bias is not None, dropout=mha.dropout,
                  batch_first=mha.batch_first, device=w.device, dtype=w.dtype)
        E = mha.embed_dim
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.split(E)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        biases = (mha.in_proj_bias.split(E) if mha.in_proj_bias is not None
                  else (None, None, None))
        with torch.no_grad():
            for proj, weight, bias in zip((new.q_proj, new.k_proj, new.v_proj), weights,
                                          biases):
                proj.weight.copy_(weight)
                if bias is not None:
                    proj.bias.copy_(bias)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        return new.train(mha.training)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True,
                attn_mask=None, average_attn_weights=True, is_causal=False):
        batched = query.dim() == 3
        if not batched:  # (L, E): one sequence
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            key_padding_mask = (None if key_padding_mask is None
                                else key_padding_mask.unsqueeze(0))
        elif self.batch_first:  # work in (L, B, E) like nn.MultiheadAttention
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        if is_causal and attn_mask is None:
            raise RuntimeError("is_causal is a hint that attn_mask is causal; give attn_mask")
        L, B, _ = query.shape
        S = key.shape[0]
        q, k, v = (self._heads(proj(x), B) for proj, x in
                   ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        mask = self._merged_mask(attn_mask, key_padding_mask, B, L, S, q.dtype)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
            weights = torch.softmax(scores if mask is None else scores + mask, dim=-1)
            weights = F.dropout(weights, p) if p else weights
            out = weights @ v
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.permute(2, 0, 1, 3).reshape(L, B, self.embed_dim))
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            return out.squeeze(1), None if weights is None else weights.squeeze(0)
        return (out.transpose(0, 1) if self.batch_first else out), weights

    def _heads(self, x, B):
        """(length, B, E) -> (B, heads, length, head_dim)."""
        return x.reshape(x.shape[0], B, self.num_heads, self.head_dim).permute(1, 2, 0, 3)

    def _merged_mask(self, attn_mask, key_padding_mask, B, L, S, dtype):
        """One additive mask (B, heads, L, S) or None; boolean masks mark what may NOT be
        attended (True), as in nn.MultiheadAttention."""
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, dtype)
            mask = (mask.reshape(1, 1, L, S) if mask.dim() == 2
                    else mask.reshape(B, self.num_heads, L, S))
        if key_padding_mask is not None:
            pad = _additive(key_padding_mask, dtype).reshape(B, 1, 1, S)
            mask = pad if mask is None else mask + pad
        return mask

    def extra_repr(self):
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, "
                f"dropout={self.dropout}, batch_first={self.batch_first}")


def _additive(mask, dtype):
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(
            mask, float("-inf"))
    return mask.to(dtype)


class AttentionSplit(NamedTuple):
    """What :func:`split_attention` did: the ``replaced`` module names, and the attention
    modules ``kept`` as they are, as (name, reason) pairs."""

    replaced: list
    kept: list


def split_attention(model):
    """Replace, in place, every ``nn.MultiheadAttention`` of ``model`` by the equivalent
    :class:`SplitProjectionAttention`. A ``nn.TransformerEncoder`` holding one stops using
    nested tensors (its fast path reads ``in_proj_weight``).

    Returns
    -------
    AttentionSplit
    """
    done = AttentionSplit([], [])
    for name, mha in [(n, m) for n, m in model.named_modules()
                      if isinstance(m, nn.MultiheadAttention)]:
        try:
            set_module(model, name, SplitProjectionAttention.from_mha(mha))
            done.replaced.append(name)
        except ValueError as exc:
            done.kept.append((name, str(exc)))
    for m in model.modules():
        if isinstance(m, nn.TransformerEncoder) and any(
                isinstance(x, SplitProjectionAttention) for x in m.modules()):
            m.use_nested_tensor = False
    return done
