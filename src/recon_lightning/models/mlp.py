"""Transformer feed-forward network."""

from __future__ import annotations

import torch
from torch import nn


class Mlp(nn.Module):
    """Linear(C, hidden) - GELU - Linear(hidden, C), no dropout (the reference's rate is 0)."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C)."""
        return self.fc2(self.act(self.fc1(x)))
