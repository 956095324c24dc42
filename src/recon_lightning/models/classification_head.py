"""Classification heads on the pooled 4C feature [cls, img, text, max(local)]."""

from __future__ import annotations

import torch
from torch import nn

HEAD_TYPES = ("full", "mlp3", "linear")


class ClassificationHead(nn.Module):
    """``full`` / ``mlp3``: Linear-BN-ReLU-Dropout(0.5) x2 then Linear; ``linear``: one Linear.

    ``full`` and ``mlp3`` build the same layers (the reference only tests for ``linear``); they
    differ in what the training recipe freezes. PyTorch default init, as the reference's head.
    """

    def __init__(
        self, in_dim: int, num_classes: int, head_type: str = "full", hidden_dim: int = 256
    ) -> None:
        super().__init__()
        if head_type not in HEAD_TYPES:
            raise ValueError(f"head_type must be one of {HEAD_TYPES}; got {head_type!r}")
        self.head_type = head_type
        if head_type == "linear":
            self.out = nn.Linear(in_dim, num_classes)
            return
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.bn1 = nn.BatchNorm1d(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, hidden_dim)
        self.bn2 = nn.BatchNorm1d(hidden_dim)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(0.5)
        self.out = nn.Linear(hidden_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 4C) -> (B, num_classes) logits."""
        if self.head_type != "linear":
            x = self.drop(self.act(self.bn1(self.fc1(x))))
            x = self.drop(self.act(self.bn2(self.fc2(x))))
        return self.out(x)
