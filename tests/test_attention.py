"""SplitProjectionAttention against torch's own nn.MultiheadAttention and encoder layers."""

import pytest
import torch
from torch import nn

from lrsa.attention import SplitProjectionAttention, split_attention


def _inputs(batch_first, kdim, B=3, L=5, S=6, E=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (lambda n, e: (B, n, e)) if batch_first else (lambda n, e: (n, B, e))
    q = torch.randn(*shape(L, E), generator=g)
    k = torch.randn(*shape(S, kdim or E), generator=g)
    v = torch.randn(*shape(S, kdim or E), generator=g)
    return q, k, v


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kdim", [None, 12])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("need_weights,average", [(True, True), (True, False), (False, True)])
def test_equals_multihead_attention(batch_first, kdim, bias, need_weights, average):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, kdim=kdim, vdim=kdim,
                                bias=bias).eval()
    split = SplitProjectionAttention.from_mha(mha)
    q, k, v = _inputs(batch_first, kdim)
    attn_mask = torch.rand(5, 6, generator=torch.Generator().manual_seed(1)) > 0.7
    attn_mask[:, 0] = False  # every query sees a key
    padding = torch.zeros(3, 6, dtype=torch.bool)
    padding[0, -2:] = True
    for masks in ({}, {"attn_mask": attn_mask}, {"key_padding_mask": padding},
                  {"attn_mask": attn_mask.float() * -3.0, "key_padding_mask": padding}):
        want = mha(q, k, v, need_weights=need_weights, average_attn_weights=average, **masks)
        got = split(q, k, v, need_weights=need_weights, average_attn_weights=average, **masks)
        torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-6)
        if need_weights:
            torch.testing.assert_close(got[1], want[1], rtol=1e-5, atol=1e-6)
        else:
            assert got[1] is None and want[1] is None


def test_unbatched_input_and_per_head_masks():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2).eval()
    split = SplitProjectionAttention.from_mha(mha)
    x = torch.randn(4, 8)
    torch.testing.assert_close(split(x, x, x)[0], mha(x, x, x)[0], rtol=1e-5, atol=1e-6)
    xb = torch.randn(4, 3, 8)
    per_head = torch.randn(3 * 2, 4, 4)
    torch.testing.assert_close(split(xb, xb, xb, attn_mask=per_head)[0],
                               mha(xb, xb, xb, attn_mask=per_head)[0], rtol=1e-5, atol=1e-6)


def test_gradients_equal_those_of_multihead_attention():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=True)
    split = SplitProjectionAttention.from_mha(mha)
    q, _, _ = _inputs(True, None)
    mha(q, q, q)[0].square().sum().backward()
    split(q, q, q)[0].square().sum().backward()
    grad_in = torch.cat([split.q_proj.weight.grad, split.k_proj.weight.grad,
                         split.v_proj.weight.grad])
    torch.testing.assert_close(grad_in, mha.in_proj_weight.grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(split.out_proj.weight.grad, mha.out_proj.weight.grad,
                               rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_split_encoder_equals_torch_encoder_on_its_fast_path(norm_first, activation):
    """In eval mode under no_grad torch runs its fused kernel (nested tensors with a padding
    mask); the split model runs module by module and gives the same outputs."""
    torch.manual_seed(0)
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(
        32, 4, 64, batch_first=True, activation=activation, norm_first=norm_first), 2).eval()
    x = torch.randn(4, 7, 32)
    padding = torch.zeros(4, 7, dtype=torch.bool)
    padding[1, -3:] = True
    with torch.no_grad():
        want = enc(x), enc(x, src_key_padding_mask=padding)
        assert split_attention(enc) == ([f"layers.{i}.self_attn" for i in range(2)], [])
        got = enc(x), enc(x, src_key_padding_mask=padding)
    assert all(isinstance(layer.self_attn, SplitProjectionAttention) for layer in enc.layers)
    torch.testing.assert_close(got[0], want[0], rtol=1e-4, atol=1e-5)
    keep = ~padding  # padded positions are undefined (zeros on the nested path)
    torch.testing.assert_close(got[1][keep], want[1][keep], rtol=1e-4, atol=1e-5)


def test_attention_it_cannot_take_is_reported_and_kept():
    model = nn.Sequential(nn.MultiheadAttention(8, 2, add_bias_kv=True))
    replaced, kept = split_attention(model)
    assert replaced == [] and [name for name, _ in kept] == ["0"] and "add_bias_kv" in kept[0][1]
    assert isinstance(model[0], nn.MultiheadAttention)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        SplitProjectionAttention(10, 3)
    split = SplitProjectionAttention(8, 2)
    x = torch.randn(2, 3, 8)
    with pytest.raises(RuntimeError, match="give attn_mask"):
        split(x, x, x, is_causal=True)
