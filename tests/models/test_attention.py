"""Attention through scaled_dot_product_attention equals the reference's explicit formula."""

from __future__ import annotations

import pytest
import torch

from recon_lightning.models import CrossAttention, SelfAttention


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The reference: softmax((q @ kᵀ) * head_dim^-0.5) @ v, per head."""
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return attn.softmax(dim=-1) @ v


def heads(x: torch.Tensor, h: int) -> torch.Tensor:
    b, n, c = x.shape
    return x.reshape(b, n, h, c // h).permute(0, 2, 1, 3)


def merge(x: torch.Tensor) -> torch.Tensor:
    b, h, n, d = x.shape
    return x.permute(0, 2, 1, 3).reshape(b, n, h * d)


def test_self_attention_equals_explicit_softmax():
    torch.manual_seed(0)
    attn = SelfAttention(24, 3).double()
    x = torch.randn(2, 7, 24, dtype=torch.float64) * 3
    q, k, v = attn.qkv(x).chunk(3, dim=-1)
    expected = attn.proj(merge(explicit(heads(q, 3), heads(k, 3), heads(v, 3))))
    torch.testing.assert_close(attn(x), expected, rtol=1e-12, atol=1e-12)


def test_cross_attention_equals_explicit_softmax():
    torch.manual_seed(1)
    attn = CrossAttention(24, 4).double()
    queries = torch.randn(2, 3, 24, dtype=torch.float64) * 3
    context = torch.randn(2, 9, 24, dtype=torch.float64) * 3
    k, v = attn.kv(context).chunk(2, dim=-1)
    expected = attn.proj(merge(explicit(heads(attn.q(queries), 4), heads(k, 4), heads(v, 4))))
    torch.testing.assert_close(attn(queries, context), expected, rtol=1e-12, atol=1e-12)


def test_projections_have_the_reference_biases():
    s, c = SelfAttention(12, 3), CrossAttention(12, 3)
    assert s.qkv.bias is None and c.q.bias is None and c.kv.bias is None
    assert s.proj.bias is not None and c.proj.bias is not None


@pytest.mark.parametrize("cls", [SelfAttention, CrossAttention])
def test_width_must_split_into_heads(cls):
    with pytest.raises(ValueError, match="multiple of num_heads"):
        cls(10, 3)
