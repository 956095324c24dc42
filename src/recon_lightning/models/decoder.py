"""Masked-patch decoder of the generative branch."""

from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from torch import nn

from .drop_path import drop_path_rates
from .encoder import select_visible
from .init import init_xavier
from .pos_embed import PositionalMLP
from .transformer_block import TransformerBlock


class MaskedDecoder(nn.Module):
    """Standard pre-norm transformer over [visible encoder outputs, mask tokens].

    The visible tokens (in FPS order) are followed by one learnable ``mask_token`` per masked
    patch; each gets ``pos_embed(centre)`` (its own MLP, not the encoder's) added before every
    block. A final LayerNorm is applied to the mask-token outputs only.
    """

    def __init__(
        self,
        dim: int = 384,
        depth: int = 4,
        num_heads: int = 6,
        drop_path_rate: float = 0.1,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = PositionalMLP(dim)
        self.blocks = nn.ModuleList(
            TransformerBlock(dim, num_heads, mlp_ratio, rate)
            for rate in drop_path_rates(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Reference init: Xavier blocks and norm, trunc-normal mask token, default pos MLP."""
        self.blocks.apply(init_xavier)
        self.norm.apply(init_xavier)
        trunc_normal_(self.mask_token, std=0.02)

    def forward(
        self,
        visible: torch.Tensor,
        centers: torch.Tensor,
        mask: torch.Tensor,
        return_hidden: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        """Decode.

        Args:
            visible: (B, V, C) encoder outputs of the visible patches.
            centers: (B, G, 3) all centres.
            mask: (B, G) bool, True = masked; M = G - V per row.
            return_hidden: also return every block's (B, G, C) output.

        Returns:
            ``(out, hidden)``: (B, M, C) mask-token outputs and the per-block outputs or None.
        """
        b, v, c = visible.shape
        centers_ordered = torch.cat(
            [select_visible(centers, mask), select_visible(centers, ~mask)], dim=1
        )
        pos = self.pos_embed(centers_ordered)
        m = centers_ordered.shape[1] - v
        x = torch.cat([visible, self.mask_token.expand(b, m, c)], dim=1)
        hidden: list[torch.Tensor] = []
        *blocks, last = self.blocks
        for block in blocks:
            x = block(x + pos)
            if return_hidden:
                hidden.append(x)
        if return_hidden:
            x = last(x + pos)
            hidden.append(x)
            return self.norm(x[:, v:]), tuple(hidden)
        # Only the mask tokens' outputs are read: the last block computes those rows alone (the
        # visible rows still serve as its keys and values).
        return self.norm(last.forward_rows(x + pos, v)), None
