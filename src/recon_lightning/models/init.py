"""Weight initialisation schemes of the reference (spec §2.11)."""

from __future__ import annotations

from timm.layers import trunc_normal_
from torch import nn


def init_trunc_normal(module: nn.Module) -> None:
    """Encoder scheme: Linear/Conv1d weights trunc-normal(std 0.02), zero bias; LayerNorm 1/0."""
    if isinstance(module, nn.Linear | nn.Conv1d):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_xavier(module: nn.Module) -> None:
    """Decoder scheme: Linear weights Xavier-uniform, zero bias; LayerNorm 1/0."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_projection(module: nn.Module) -> None:
    """Projection scheme: Linear weights Normal(mean 0.02, std 0.01), zero bias; BatchNorm 1/0.

    The reference passes 0.02 as the *mean* of ``nn.init.normal_`` (probably meant as the std);
    kept as written so fresh models start where the reference's do.
    """
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.02, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
