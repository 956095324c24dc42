"""Mini-PointNet patch embedding: one token per local patch of points."""

from __future__ import annotations

import torch
import torch.nn.functional as F
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
        # Points as rows: the 1x1 convolutions become matrix products on (B*G*k, channels).
        x = patches.reshape(b * g * k, 3)
        x = self.act(self.bn1(F.linear(x, self.conv1_1.weight[..., 0], self.conv1_1.bias)))
        x = F.linear(x, self.conv1_2.weight[..., 0], self.conv1_2.bias).reshape(b * g, k, 256)
        pooled = x.max(dim=1).values  # (BG, 256)
        # conv2_1 on [pooled broadcast, x] equals W_pooled @ pooled (once per patch, not once
        # per point) + W_local @ x: the same sum, half the work of the widest layer.
        w = self.conv2_1.weight[..., 0]
        per_patch = F.linear(pooled, w[:, :256], self.conv2_1.bias).unsqueeze(1)  # (BG, 1, 512)
        x = (F.linear(x, w[:, 256:]) + per_patch).reshape(b * g * k, 512)
        x = F.linear(self.act(self.bn2(x)), self.conv2_2.weight[..., 0], self.conv2_2.bias)
        return x.reshape(b * g, k, self.embed_dim).max(dim=1).values.reshape(b, g, self.embed_dim)
