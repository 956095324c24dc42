"""Multi-head self- and cross-attention through ``scaled_dot_product_attention``.

Both compute softmax(q kᵀ / sqrt(head_dim)) v per head, as the reference's explicit formula, with
bias-free input projections and a biased output projection.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, H, N, C / H)."""
    b, n, c = x.shape
    return x.reshape(b, n, num_heads, c // num_heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) -> (B, N, H * D)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


def _check_heads(dim: int, num_heads: int) -> None:
    if num_heads < 1 or dim % num_heads:
        raise ValueError(f"dim={dim} must be a positive multiple of num_heads={num_heads}")


class SelfAttention(nn.Module):
    """Self-attention over one token sequence (``qkv`` has no bias, as in the reference)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, D)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Queries attend to a separate context sequence (bias-free ``q`` and ``kv``)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        _check_heads(dim, num_heads)
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, queries: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Attend.

        Args:
            queries: (B, Q, C).
            context: (B, N, C) keys and values.

        Returns:
            (B, Q, C).
        """
        b, n, c = context.shape
        k, v = self.kv(context).reshape(b, n, 2, self.num_heads, c // self.num_heads).unbind(2)
        q = _split_heads(self.q(queries), self.num_heads)
        out = F.scaled_dot_product_attention(q, k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(_merge_heads(out))
