"""Zero-shot point feature: projected img/text query outputs in the CLIP space."""

from __future__ import annotations

import torch
from torch import nn

from .encoder import EncoderOutput, downstream_encoder
from .projection import teacher_projection

FEATURE_TYPES = ("full", "text", "image")


class ReConZeroShot(nn.Module):
    """The reference's ``PointTransformerZeroShot``.

    ``text``: text_proj(text output); ``image``: img_proj(img output); ``full``:
    ``ratio * text + image``. ``full`` needs both projections in one space, i.e. a model
    pretrained with the CLIP image teacher (img_dim = text_dim = 512).

    Args:
        feature_type: ``full`` | ``text`` | ``image``.
        ratio: weight of the text feature in ``full``.
        img_dim, text_dim: projection output sizes (the teachers' feature sizes).
        trans_dim, depth, num_heads, num_group, group_size, drop_path_rate, mlp_ratio: encoder.
    """

    def __init__(
        self,
        feature_type: str = "full",
        ratio: float = 0.25,
        img_dim: int = 512,
        text_dim: int = 512,
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_group: int = 64,
        group_size: int = 32,
        drop_path_rate: float = 0.1,
        mlp_ratio: float = 4.0,
        group_backend: str = "auto",
    ) -> None:
        super().__init__()
        if feature_type not in FEATURE_TYPES:
            raise ValueError(f"feature_type must be one of {FEATURE_TYPES}; got {feature_type!r}")
        if feature_type == "full" and img_dim != text_dim:
            raise ValueError(
                f"feature_type='full' adds image ({img_dim}-d) and text ({text_dim}-d) features; "
                "they must share one space: use a model pretrained with the CLIP image teacher "
                "(img_dim=512), or feature_type 'text' / 'image'"
            )
        self.encoder = downstream_encoder(
            trans_dim=trans_dim,
            depth=depth,
            num_heads=num_heads,
            num_group=num_group,
            group_size=group_size,
            drop_path_rate=drop_path_rate,
            mlp_ratio=mlp_ratio,
            group_backend=group_backend,
        )
        uses_text = feature_type in ("full", "text")
        uses_img = feature_type in ("full", "image")
        self.text_proj = teacher_projection(trans_dim, text_dim) if uses_text else None
        self.img_proj = teacher_projection(trans_dim, img_dim) if uses_img else None
        self.feature_type = feature_type
        self.ratio = ratio

    def features_from(self, out: EncoderOutput) -> torch.Tensor:
        """(B, D) zero-shot feature of an encoder output."""
        if self.feature_type == "text":
            return self.text_proj(out.text)
        if self.feature_type == "image":
            return self.img_proj(out.img)
        return self.ratio * self.text_proj(out.text) + self.img_proj(out.img)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, D) point feature to compare with class text embeddings."""
        return self.features_from(self.encoder(points))
