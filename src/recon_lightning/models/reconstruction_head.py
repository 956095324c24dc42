"""Patch reconstruction head: a decoder token to the k points of its patch."""

from __future__ import annotations

import torch
from torch import nn


class ReconstructionHead(nn.Module):
    """Pointwise Conv1d(C, 3k) (the reference's ``increase_dim``), PyTorch default init."""

    def __init__(self, dim: int, group_size: int) -> None:
        super().__init__()
        self.group_size = group_size
        self.proj = nn.Conv1d(dim, 3 * group_size, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, M, C) mask-token outputs -> (B, M, k, 3) centre-relative patch points."""
        b, m, _ = x.shape
        return self.proj(x.transpose(1, 2)).transpose(1, 2).reshape(b, m, self.group_size, 3)
