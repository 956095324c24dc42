"""ReCon classifier: the encoder over all patches plus a classification head."""

from __future__ import annotations

import torch
from torch import nn

from .classification_head import ClassificationHead
from .encoder import EncoderOutput, downstream_encoder
from .pooling import classification_features


class ReConClassifier(nn.Module):
    """The reference's ``PointTransformer``: no masking, no stop-gradient, head on 4C features.

    timm-style: ``forward_features(points)`` gives the pooled (B, 4C) feature, ``forward_head``
    the logits. ``cls_token`` starts at zeros, as in the reference's constructor.

    Args:
        cls_dim: number of classes.
        head_type: ``full`` | ``mlp3`` | ``linear``.
        trans_dim, depth, num_heads, num_group, group_size, drop_path_rate, mlp_ratio: encoder
            size (reference names).
        group_backend: backend of the grouping op.
    """

    def __init__(
        self,
        cls_dim: int = 40,
        head_type: str = "full",
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_group: int = 64,
        group_size: int = 32,
        drop_path_rate: float = 0.2,
        mlp_ratio: float = 4.0,
        group_backend: str = "auto",
    ) -> None:
        super().__init__()
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
        self.head = ClassificationHead(4 * trans_dim, cls_dim, head_type)
        self.cls_dim = cls_dim
        self.head_type = head_type

    def forward_encoder(self, points: torch.Tensor, return_hidden: bool = False) -> EncoderOutput:
        """The encoder output for (B, N, 3) ``points`` (all patches visible)."""
        return self.encoder(points, return_hidden=return_hidden)

    def forward_features(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, 4C) pooled [cls, img, text, max(local)] feature."""
        return classification_features(self.encoder(points))

    def forward_head(self, features: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, 4C) -> (B, cls_dim) logits, or the features unchanged with ``pre_logits``."""
        return features if pre_logits else self.head(features)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, cls_dim) logits."""
        return self.forward_head(self.forward_features(points))

    def no_weight_decay(self) -> set[str]:
        """timm-style: the encoder's query tokens and position vectors."""
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def head_parameter_names(self) -> list[str]:
        """Our names of the reference's ``cls*`` parameters (10x lr; trainable in mlp3/linear).

        These are ``encoder.cls_token``, ``encoder.cls_pos`` and every head parameter, in
        ``named_parameters`` order.
        """
        names = {"encoder.cls_token", "encoder.cls_pos"}
        return [n for n, _ in self.named_parameters() if n in names or n.startswith("head.")]

    def freeze_backbone(self) -> None:
        """Freeze every parameter except :meth:`head_parameter_names` (the reference's probes).

        As in the reference, only ``requires_grad`` changes: the frozen backbone still runs in
        whatever train/eval mode the model is in.
        """
        keep = set(self.head_parameter_names())
        for name, p in self.named_parameters():
            p.requires_grad_(name in keep)
