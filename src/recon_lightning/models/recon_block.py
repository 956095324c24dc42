"""The ReCon block: a local self-attention stream and a global cross-attention stream."""

from __future__ import annotations

import torch
from torch import nn

from .attention import CrossAttention, SelfAttention
from .drop_path import drop_path_or_identity
from .mlp import Mlp


class StreamLayers(nn.Module):
    """The four sub-layers of one stream: ``norm1``, ``attn``, ``norm2``, ``mlp``."""

    def __init__(self, dim: int, attn: nn.Module, mlp_hidden_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, mlp_hidden_dim)


class ReConBlock(nn.Module):
    """One encoder layer with two streams of separate weights.

    - ``local``: the patch tokens self-attend (they never see the global queries).
    - ``queries``: the 3 global queries [cls, img, text] cross-attend to the layer's *normalised*
      local tokens only (not to each other). With ``stop_grad`` (pretraining) that key/value input
      is detached, so losses on the queries never reach the local stream.

    Both streams use the reference's residual on the normalised input (spec §2.5), not the usual
    pre-norm ``x + f(LN(x))``::

        a = LN1(x); b = a + DropPath(Attn(a)); c = LN2(b); out = c + DropPath(MLP(c))

    One ``DropPath`` module serves both streams; each call draws its own per-sample mask.
    """

    def __init__(
        self, dim: int, num_heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0
    ) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.local = StreamLayers(dim, SelfAttention(dim, num_heads), hidden)
        self.queries = StreamLayers(dim, CrossAttention(dim, num_heads), hidden)
        self.drop_path = drop_path_or_identity(drop_path)

    def forward(
        self, queries: torch.Tensor, local: torch.Tensor, stop_grad: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run both streams (inputs already carry their position vectors).

        Args:
            queries: (B, Q, C) global query tokens.
            local: (B, V, C) patch tokens.
            stop_grad: detach the cross-attention key/value input (pretraining).

        Returns:
            ``(queries, local)`` with the input shapes.
        """
        a = self.local.norm1(local)
        qa = self.queries.norm1(queries)
        context = a.detach() if stop_grad else a
        # Same call order as the reference (query attn, local attn, query mlp, local mlp), so the
        # drop-path draws line up with it under a shared seed.
        qb = qa + self.drop_path(self.queries.attn(qa, context))
        b = a + self.drop_path(self.local.attn(a))
        qc = self.queries.norm2(qb)
        c = self.local.norm2(b)
        queries = qc + self.drop_path(self.queries.mlp(qc))
        local = c + self.drop_path(self.local.mlp(c))
        return queries, local
