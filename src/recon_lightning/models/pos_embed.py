"""Positional MLP: patch centre coordinates to a position vector."""

from __future__ import annotations

import torch
from torch import nn


class PositionalMLP(nn.Module):
    """Linear(3, 128) - GELU - Linear(128, C) applied to each centre."""

    def __init__(self, embed_dim: int, hidden_dim: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, embed_dim)

    def forward(self, centers: torch.Tensor) -> torch.Tensor:
        """(..., 3) centres -> (..., C) position vectors."""
        return self.fc2(self.act(self.fc1(centers)))
