"""Mini-PointNet patch embedding: one token per local patch of points."""

from __future__ import annotations

import torch
from torch import nn


class MiniPointNet(nn.Module):
    """Shared PointNet over the points of each patch (the reference's ``Encoder``).

    Two stages of pointwise convolutions (3 -> 128 -> 256, then 512 -> 512 -> C); after each stage
    a max over the patch's points. The first stage's pooled feature is broadcast back to every
    point and concatenated with the per-point features, so the second stage sees local and
    patch-level context. BatchNorm runs over all points of all patches of the batch.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.conv1_1 = nn.Conv1d(3, 128, 1)
        self.bn1 = nn.BatchNorm1d(128)
        self.conv1_2 = nn.Conv1d(128, 256, 1)
        self.conv2_1 = nn.Conv1d(512, 512, 1)
        self.bn2 = nn.BatchNorm1d(512)
        self.conv2_2 = nn.Conv1d(512, embed_dim, 1)
        self.act = nn.ReLU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Embed patches.

        Args:
            patches: (B, G, k, 3) centre-relative patch coordinates.

        Returns:
            (B, G, C) tokens; the result does not depend on the order of points in a patch.
        """
        b, g, k, _ = patches.shape
        x = patches.reshape(b * g, k, 3).transpose(1, 2)  # (BG, 3, k)
        x = self.conv1_2(self.act(self.bn1(self.conv1_1(x))))  # (BG, 256, k)
        pooled = x.amax(dim=2, keepdim=True)  # (BG, 256, 1)
        x = torch.cat([pooled.expand(-1, -1, k), x], dim=1)  # (BG, 512, k)
        x = self.conv2_2(self.act(self.bn2(self.conv2_1(x))))  # (BG, C, k)
        return x.amax(dim=2).reshape(b, g, self.embed_dim)
