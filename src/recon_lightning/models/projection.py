"""Projection heads of the contrastive branch: student tokens to teacher spaces."""

from __future__ import annotations

import torch
from torch import nn

from .init import init_projection


def teacher_projection(dim: int, out_dim: int) -> nn.Linear:
    """Linear(dim, out_dim) mapping an img/text query output to a teacher's feature space."""
    proj = nn.Linear(dim, out_dim)
    init_projection(proj)
    return proj


class SMCProjection(nn.Module):
    """Single-modal contrastive head on the cls output: Linear-BN-ReLU-Linear-BN (128-d)."""

    def __init__(self, dim: int, out_dim: int = 128) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, out_dim)
        self.bn1 = nn.BatchNorm1d(out_dim)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(out_dim, out_dim)
        self.bn2 = nn.BatchNorm1d(out_dim)
        self.apply(init_projection)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, 128), not normalised."""
        return self.bn2(self.fc2(self.act(self.bn1(self.fc1(x)))))
