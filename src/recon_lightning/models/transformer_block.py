"""Standard pre-norm transformer block (the reconstruction decoder's layer)."""

from __future__ import annotations

import torch
from torch import nn

from .attention import SelfAttention
from .drop_path import drop_path_or_identity
from .mlp import Mlp


class TransformerBlock(nn.Module):
    """``x + DropPath(Attn(LN1(x)))`` then ``x + DropPath(MLP(LN2(x)))``."""

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def forward_rows(self, x: torch.Tensor, start: int) -> torch.Tensor:
        """Rows ``start:`` of ``forward(x)`` (B, N - start, C), without computing the others.

        Every row still serves as key and value; the drop-path draws are the same (one per sample).
        """
        x_out = x[:, start:] + self.drop_path(self.attn.forward_rows(self.norm1(x), start))
        return x_out + self.drop_path(self.mlp(self.norm2(x_out)))
