"""Multi-head self- and cross-attention.

Both compute softmax(q kᵀ / sqrt(head_dim)) v per head, as the reference's explicit formula, with
bias-free input projections and a biased output projection. Self-attention goes through
``scaled_dot_product_attention`` except on CPU in float32/float64, where at these lengths (tens of
tokens) the explicit formula is faster, forward and backward. Cross-attention of a few queries
multiplies in another order (see :class:`CrossAttention`).
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


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` (any torch >= 2.1)."""
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


def plain_float(x: torch.Tensor) -> bool:
    """float32/float64 outside autocast."""
    return x.dtype in (torch.float32, torch.float64) and not autocast_enabled(x.device.type)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ / sqrt(D)) v over (B, H, N, D) heads."""
    if q.device.type == "cpu" and plain_float(q):
        logits = (q @ k.transpose(-2, -1)).mul_(q.shape[-1] ** -0.5)
        return logits.softmax(dim=-1) @ v
    return F.scaled_dot_product_attention(q, k, v)


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
        return self.proj(_merge_heads(_attention(q, k, v)))

    def forward_rows(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rows ``start:`` of ``forward(x)``: every token is a key and value, only those query.

        (B, N, C) -> (B, N - start, C); the other rows' queries, projections and outputs are
        skipped (``qkv`` split by rows of its weight: the same products).
        """
        b, n, c = x.shape
        h = self.num_heads
        weight = self.qkv.weight
        q = _split_heads(F.linear(x[:, start:], weight[:c]), h)
        k, v = F.linear(x, weight[c:]).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(_merge_heads(_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Queries attend to a separate context sequence (bias-free ``q`` and ``kv``).

    With Q queries (3 in ReCon) and N context tokens, projecting the context to keys and values
    costs N x C x 2C; the same numbers come from moving the projections to the query side,
    ``q Wk_hᵀ ... = (q Wk_h) ... `` and ``P (ctx Wv_hᵀ) = (P ctx) Wv_hᵀ`` per head: about
    (6 C² + 6 H N C) per cloud instead of 2 N C², a sixth at N = 26, C = 384.
    """

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
        b, nq, c = queries.shape
        h = self.num_heads
        d = c // h
        w_k, w_v = self.kv.weight.reshape(2, h, d, c).unbind(0)  # (H, D, C) each
        q = self.q(queries).view(b, nq, h, d)
        q_k = torch.einsum("bqhd,hdc->bhqc", q, w_k)  # per head q Wk_h, (B, H, Q, C)
        logits = torch.einsum("bhqc,bnc->bhqn", q_k, context).mul_(d**-0.5)
        p_ctx = torch.einsum("bhqn,bnc->bhqc", logits.softmax(dim=-1), context)  # (B, H, Q, C)
        out = torch.einsum("bhqc,hdc->bqhd", p_ctx, w_v)  # (P ctx) Wv_hᵀ, (B, Q, H, D)
        return self.proj(out.reshape(b, nq, c))
