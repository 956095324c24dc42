"""ReCon part segmentation: the reference's ``segmentation/models/pt.py`` ``get_model``.

Per-patch features of three encoder blocks are propagated back to every input point (PointNet++
3-NN feature propagation) and classified per point together with a global shape descriptor and
an embedding of the object category (ShapeNetPart: 16 categories, 50 parts).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..ops import three_nn_interpolate
from .encoder import EncoderOutput, downstream_encoder


def default_feature_blocks(depth: int) -> tuple[int, ...]:
    """The blocks whose local tokens feed the head: the last of each third of the encoder.

    ``(3, 7, 11)`` for the reference's 12 blocks (its layers 4, 8, 12); ``(0, 1, 2)`` for 3.

    Raises:
        ValueError: ``depth`` < 3 (pass ``feature_blocks`` explicitly).
    """
    if depth < 3:
        raise ValueError(f"depth={depth} has no thirds; pass feature_blocks explicitly")
    return (depth // 3 - 1, 2 * depth // 3 - 1, depth - 1)


@dataclass
class SegmentationFeatures:
    """Everything :meth:`ReConPartSegmentation.forward_features` computes before the head.

    Attributes:
        encoder: the encoder output, with ``hidden_states`` / ``hidden_queries`` of every block.
        local: (B, G, L·C) LayerNorm-ed local tokens of the L feature blocks, concatenated in
            block order.
        x_max, x_avg: (B, L·C) max and mean of ``local`` over the G patches.
        global_tokens: (B, 3, C) outputs of the three queries [cls, img, text] of the last block,
            before the final LayerNorm.
        label_feature: (B, D_label) category embedding.
        point_features: (B, P, N) the propagated per-point features (channels first).
    """

    encoder: EncoderOutput
    local: torch.Tensor
    x_max: torch.Tensor
    x_avg: torch.Tensor
    global_tokens: torch.Tensor
    label_feature: torch.Tensor
    point_features: torch.Tensor

    @property
    def center(self) -> torch.Tensor:
        """(B, G, 3) the FPS patch centres."""
        return self.encoder.centers

    @property
    def global_feature(self) -> torch.Tensor:
        """(B, 2·L·C + C + D_label) [x_max, x_avg, max over the 3 queries, label_feature].

        The channel order of the reference's ``x_global_feature``; every point gets a copy.
        """
        query_max = self.global_tokens.max(dim=1).values
        return torch.cat([self.x_max, self.x_avg, query_max, self.label_feature], dim=1)


class LabelEmbedding(nn.Module):
    """One-hot category -> Conv1d (no bias) + BatchNorm + LeakyReLU(0.2), as ``label_conv``.

    A kernel-1 ``Conv1d`` on a length-1 sequence is a Linear layer; it stays a ``Conv1d`` so its
    weight has the reference's shape (D, K, 1).
    """

    def __init__(self, num_categories: int, dim: int = 64) -> None:
        super().__init__()
        self.conv = nn.Conv1d(num_categories, dim, 1, bias=False)
        self.bn = nn.BatchNorm1d(dim)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, one_hot: torch.Tensor) -> torch.Tensor:
        """(B, K) one-hot -> (B, D)."""
        return self.act(self.bn(self.conv(one_hot.unsqueeze(-1)))).squeeze(-1)


class FeaturePropagation(nn.Module):
    """PointNet++ feature propagation from patch centres to points, then a Conv1d-BN-ReLU MLP.

    Each point gets the 3-NN inverse-squared-distance average (weights 1/(d² + 1e-8), normalised)
    of the centre features; [xyz, interpolated] goes through the MLP, as the reference's
    ``PointNetFeaturePropagation`` with the points' xyz as ``points1``.

    The first layer is applied to the G centre features *before* interpolating: a linear layer
    commutes with a weighted average, so ``W·interp(f) + W_xyz·xyz + b`` equals the reference's
    ``conv([xyz, interp(f)])`` up to rounding, at G instead of N points (16x fewer multiply-adds
    for 128 patches and 2048 points, and no (B, 3 + F, N) input held for the backward pass).

    Args:
        in_dim: width F of the centre features.
        dims: output width of each layer (the first layer sees 3 + F channels).
        backend: kNN backend of :func:`~recon_lightning.ops.three_nn_interpolate`.
    """

    def __init__(self, in_dim: int, dims: Sequence[int], backend: str = "auto") -> None:
        super().__init__()
        if not dims:
            raise ValueError("FeaturePropagation needs at least one layer")
        widths = [3 + in_dim, *dims]
        self.convs = nn.ModuleList(
            nn.Conv1d(a, b, 1) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.bns = nn.ModuleList(nn.BatchNorm1d(b) for b in dims)
        self.backend = backend

    def forward(
        self, xyz: torch.Tensor, centers: torch.Tensor, features: torch.Tensor
    ) -> torch.Tensor:
        """Propagate.

        Args:
            xyz: (B, N, 3) the points.
            centers: (B, G, 3) the patch centres (G >= 3).
            features: (B, G, F) centre features.

        Returns:
            (B, dims[-1], N).
        """
        first = self.convs[0]
        w = first.weight.squeeze(-1)  # (D0, 3 + F): xyz channels first, as the reference
        at_centers = F.linear(features, w[:, 3:])
        x = three_nn_interpolate(xyz, centers, at_centers, backend=self.backend)
        x = (x + F.linear(xyz, w[:, :3], first.bias)).transpose(1, 2)
        x = F.relu(self.bns[0](x))
        for conv, bn in zip(self.convs[1:], self.bns[1:], strict=True):
            x = F.relu(bn(conv(x)))
        return x


class SegmentationHead(nn.Module):
    """Per-point classifier on [point feature, global feature]: the reference's ``convs1-3``.

    Conv1d-BN-ReLU -> Dropout -> Conv1d-BN-ReLU -> Conv1d, then log-softmax over the parts.

    The reference repeats the global feature over the N points and concatenates; the first
    layer's global half is instead applied once per cloud and broadcast (equal up to rounding),
    which avoids a (B, P + D, N) tensor (about 0.5 GB at 16 x 2048 points in float32).
    """

    def __init__(
        self,
        point_dim: int,
        global_dim: int,
        num_parts: int,
        hidden_dims: tuple[int, int] = (512, 256),
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        if len(hidden_dims) != 2:
            raise ValueError(f"hidden_dims must hold two widths; got {hidden_dims}")
        self.point_dim = point_dim
        self.conv1 = nn.Conv1d(point_dim + global_dim, hidden_dims[0], 1)
        self.bn1 = nn.BatchNorm1d(hidden_dims[0])
        self.conv2 = nn.Conv1d(hidden_dims[0], hidden_dims[1], 1)
        self.bn2 = nn.BatchNorm1d(hidden_dims[1])
        self.out = nn.Conv1d(hidden_dims[1], num_parts, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, point_features: torch.Tensor, global_feature: torch.Tensor) -> torch.Tensor:
        """(B, P, N) point features and (B, D) global feature -> (B, N, num_parts) log-probs."""
        w = self.conv1.weight
        per_cloud = F.linear(global_feature, w[:, self.point_dim :, 0], self.conv1.bias)
        x = F.conv1d(point_features, w[:, : self.point_dim]) + per_cloud.unsqueeze(-1)
        x = self.drop(F.relu(self.bn1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.log_softmax(self.out(x), dim=1).transpose(1, 2)


class ReConPartSegmentation(nn.Module):
    """The reference's part-segmentation model (``segmentation/models/pt.py`` ``get_model``).

    - Encoder: the downstream ReCon encoder (all patches, no stop-gradient, global queries).
    - Local features: the local tokens of ``feature_blocks`` (default: blocks 4, 8, 12), each
      through the shared final LayerNorm, concatenated -> L·C per patch.
    - Global feature: max and mean of those over the patches, the max over the 3 query outputs of
      the last block (not LayerNorm-ed) and the category embedding -> 2·L·C + C + 64.
    - Propagation of the patch features to the points (3-NN), [xyz, features] -> MLP
      (4·C, 1024); head on [point feature, global feature] -> 512 -> 256 -> ``num_parts``.

    At the base size (C = 384, L = 3) these are the reference's 1152 / 1155 / 3776 channels and
    48,542,386 parameters. ``cls_token`` starts at zeros as in every downstream model; load
    pretrained weights before training (the reference always fine-tunes from a checkpoint).

    Args:
        num_parts: part labels over all categories (reference ``cls_dim``; 50 for ShapeNetPart).
        num_categories: object categories of the one-hot label (16).
        trans_dim, depth, num_heads, num_group, group_size, drop_path_rate, mlp_ratio: encoder
            size (reference names; the reference uses 128 patches of 32 points).
        feature_blocks: 0-based encoder blocks whose local tokens are used; default
            :func:`default_feature_blocks` (``(3, 7, 11)`` for depth 12).
        label_dim: width of the category embedding (64).
        propagation_dims: widths of the propagation MLP; default ``(4 * trans_dim, 1024)``.
        head_dims: widths of the two hidden head layers (512, 256).
        dropout: dropout between the head's hidden layers.
        group_backend: kNN backend of the grouping and of the 3-NN interpolation.
    """

    def __init__(
        self,
        num_parts: int = 50,
        num_categories: int = 16,
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_group: int = 128,
        group_size: int = 32,
        drop_path_rate: float = 0.1,
        mlp_ratio: float = 4.0,
        feature_blocks: Sequence[int] | None = None,
        label_dim: int = 64,
        propagation_dims: Sequence[int] | None = None,
        head_dims: Sequence[int] = (512, 256),
        dropout: float = 0.5,
        group_backend: str = "auto",
    ) -> None:
        super().__init__()
        if num_group < 3:
            raise ValueError(f"3-NN propagation needs num_group >= 3; got {num_group}")
        blocks = default_feature_blocks(depth) if feature_blocks is None else feature_blocks
        blocks = tuple(int(i) for i in blocks)
        if not blocks or any(not 0 <= i < depth for i in blocks):
            raise ValueError(f"feature_blocks must be indices in [0, {depth}); got {blocks}")
        prop_dims = (4 * trans_dim, 1024) if propagation_dims is None else propagation_dims
        self.num_parts = num_parts
        self.num_categories = num_categories
        self.feature_blocks = blocks
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
        local_dim = len(blocks) * trans_dim
        self.label_embed = LabelEmbedding(num_categories, label_dim)
        self.propagation = FeaturePropagation(local_dim, tuple(prop_dims), group_backend)
        global_dim = 2 * local_dim + trans_dim + label_dim
        self.head = SegmentationHead(
            prop_dims[-1], global_dim, num_parts, tuple(head_dims), dropout
        )

    def one_hot(self, category: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """(B,) integer categories, or an already one-hot (B, K), -> (B, K) of ``dtype``."""
        if category.dim() == 2 and category.shape[1] == self.num_categories:
            return category.to(dtype)
        if category.dim() != 1 or category.is_floating_point() or category.dtype == torch.bool:
            raise ValueError(
                f"category must be (B,) integer labels or (B, {self.num_categories}) one-hot; "
                f"got {category.dtype} {tuple(category.shape)}"
            )
        return F.one_hot(category.long(), self.num_categories).to(dtype)

    def forward_features(
        self, points: torch.Tensor, category: torch.Tensor
    ) -> SegmentationFeatures:
        """Everything before the head.

        Args:
            points: (B, N, 3) clouds, N >= num_group and N >= group_size.
            category: (B,) int64 object categories in [0, num_categories), or (B, K) one-hot.
        """
        if category.shape[0] != points.shape[0]:
            raise ValueError(
                f"category has {category.shape[0]} entries for a batch of {points.shape[0]}"
            )
        out = self.encoder(points, return_hidden=True)
        assert out.hidden_states is not None and out.hidden_queries is not None
        norm = self.encoder.norm
        local = torch.cat([norm(out.hidden_states[i]) for i in self.feature_blocks], dim=-1)
        label = self.label_embed(self.one_hot(category, points.dtype))
        return SegmentationFeatures(
            encoder=out,
            local=local,
            x_max=local.max(dim=1).values,
            x_avg=local.mean(dim=1),
            global_tokens=out.hidden_queries[-1],
            label_feature=label,
            point_features=self.propagation(points, out.centers, local),
        )

    def forward_head(self, features: SegmentationFeatures) -> torch.Tensor:
        """-> (B, N, num_parts) per-point log-probabilities."""
        return self.head(features.point_features, features.global_feature)

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) points and (B,) categories -> (B, N, num_parts) log-probabilities."""
        return self.forward_head(self.forward_features(points, category))

    def no_weight_decay(self) -> set[str]:
        """timm-style: the encoder's query tokens and position vectors."""
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()}

    def head_parameter_names(self) -> list[str]:
        """Our names of the parameters the reference trains at 10x lr.

        segmentation/main.py puts every parameter whose name contains ``conv`` but not
        ``encoder`` in that group: ``label_conv.*`` (its BatchNorm included), the propagation
        convolutions and ``convs1-3``, but not the BatchNorms ``mlp_bns`` / ``bns1`` / ``bns2``.
        """
        prefixes = ("label_embed.", "propagation.convs.", "head.conv1.", "head.conv2.", "head.out.")
        return [n for n, _ in self.named_parameters() if n.startswith(prefixes)]
