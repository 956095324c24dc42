"""Stochastic depth helper shared by the transformer blocks."""

from __future__ import annotations

import torch
from timm.layers import DropPath
from torch import nn


def drop_path_or_identity(rate: float) -> nn.Module:
    """``DropPath(rate)`` (per-sample residual dropping) or an identity when ``rate`` is 0."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"drop-path rate must be in [0, 1); got {rate}")
    return DropPath(rate) if rate > 0.0 else nn.Identity()


def drop_path_rates(max_rate: float, depth: int) -> list[float]:
    """Linearly increasing rates, the reference's float32 ``torch.linspace(0, max_rate, depth)``."""
    return torch.linspace(0, max_rate, depth, device="cpu").tolist()
