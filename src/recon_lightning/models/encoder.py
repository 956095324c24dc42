"""The ReCon encoder: point tokenizer, 3 global queries and a stack of ReCon blocks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from timm.layers import trunc_normal_
from torch import nn

from ..ops import group
from .checks import check_dtype, check_point_cloud
from .drop_path import drop_path_rates
from .init import init_trunc_normal
from .patch_embed import MiniPointNet
from .pos_embed import PositionalMLP
from .recon_block import ReConBlock

#: Names of the three global queries, in sequence order.
QUERY_NAMES = ("cls", "img", "text")


class _Deferred:
    """A field value computed on first read (see :class:`_TensorField`)."""

    def __init__(self, compute: Callable[[], torch.Tensor]) -> None:
        self.compute = compute


class _TensorField:
    """Dataclass field that also accepts a :class:`_Deferred`, computed once on first read.

    Used for the tokens of all patches in the pretraining forward, whose masked rows feed nothing
    there: a caller that reads them pays for them, the training step does not.
    """

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = f"_{name}"

    def __get__(self, obj: object, owner: type | None = None) -> torch.Tensor:
        if obj is None:  # the dataclass machinery asking for a default: there is none
            raise AttributeError(self.slot)
        value = obj.__dict__[self.slot]
        if isinstance(value, _Deferred):
            value = obj.__dict__[self.slot] = value.compute()
        return value

    def __set__(self, obj: object, value: torch.Tensor | _Deferred) -> None:
        obj.__dict__[self.slot] = value


def _raw(obj: object, name: str) -> torch.Tensor | _Deferred:
    """A :class:`_TensorField` value as stored, without computing a deferred one."""
    stored = getattr(obj, "__dict__", {})
    return stored[f"_{name}"] if f"_{name}" in stored else getattr(obj, name)


@dataclass
class Tokens:
    """Output of the tokenizer.

    Attributes:
        tokens: (B, G, C) mini-PointNet embedding of every patch.
        neighborhood: (B, G, k, 3) patch points relative to their centre, nearest first.
        centers: (B, G, 3) FPS centres.
    """

    tokens: torch.Tensor = _TensorField()  # type: ignore[assignment]
    neighborhood: torch.Tensor
    centers: torch.Tensor


@dataclass
class EncoderOutput:
    """What the encoder returns; token outputs are after the shared final LayerNorm.

    Attributes:
        cls, img, text: (B, C) outputs of the three global queries.
        local: (B, V, C) outputs of the visible patch tokens, in FPS order (V = G without mask).
        centers: (B, G, 3) all patch centres.
        neighborhood: (B, G, k, 3) all patches, centre-relative.
        tokens: (B, G, C) mini-PointNet tokens of all patches (before the transformer). In the
            pretraining forward the masked rows, which feed no loss, are computed on first read
            and carry no gradient.
        mask: (B, G) bool, True = masked (hidden from the encoder), or None.
        hidden_states: per block, (B, V, C) local tokens before the final LayerNorm (on request).
        hidden_queries: per block, (B, 3, C) global queries before the final LayerNorm.
    """

    cls: torch.Tensor
    img: torch.Tensor
    text: torch.Tensor
    local: torch.Tensor
    centers: torch.Tensor
    neighborhood: torch.Tensor
    tokens: torch.Tensor = _TensorField()  # type: ignore[assignment]
    mask: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    hidden_queries: tuple[torch.Tensor, ...] | None = None

    @property
    def queries(self) -> torch.Tensor:
        """(B, 3, C) the three global outputs stacked as [cls, img, text]."""
        return torch.stack([self.cls, self.img, self.text], dim=1)


class ReConEncoder(nn.Module):
    """Patch tokenizer + global queries + ReCon blocks + shared final LayerNorm.

    Points are split into ``num_group`` FPS patches of ``group_size`` nearest points, embedded by
    a mini-PointNet, and (if a mask is given) only the visible patches enter the transformer. The
    queries [cls, img, text] are learnable tokens with their own learnable position vectors; the
    patches get ``pos_embed(centre)``. Position vectors are added to the input of every block.

    Args:
        trans_dim: token width C.
        depth: number of ReCon blocks.
        num_heads: attention heads (both streams).
        num_group: patches per cloud G.
        group_size: points per patch k.
        drop_path_rate: stochastic depth, linearly increasing from 0 to this over the blocks.
        mlp_ratio: MLP hidden width / C.
        stop_grad: detach the cross-attention keys/values (pretraining); False downstream.
        group_backend: backend of :func:`recon_lightning.ops.group`.
    """

    def __init__(
        self,
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_group: int = 64,
        group_size: int = 32,
        drop_path_rate: float = 0.1,
        mlp_ratio: float = 4.0,
        stop_grad: bool = False,
        group_backend: str = "auto",
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1; got {depth}")
        if num_group < 1 or group_size < 1:
            raise ValueError(
                f"num_group and group_size must be >= 1; got {num_group}, {group_size}"
            )
        self.trans_dim = trans_dim
        self.depth = depth
        self.num_heads = num_heads
        self.num_group = num_group
        self.group_size = group_size
        self.stop_grad = stop_grad
        self.group_backend = group_backend

        self.patch_embed = MiniPointNet(trans_dim)
        self.pos_embed = PositionalMLP(trans_dim)
        # One parameter per query and per position vector (not one stacked tensor), so optimiser
        # rules keyed on names (no decay on ``*token``, 10x lr on ``cls*``) can tell them apart.
        self.cls_token = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.img_token = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.text_token = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.cls_pos = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.img_pos = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.text_pos = nn.Parameter(torch.zeros(1, 1, trans_dim))
        self.blocks = nn.ModuleList(
            ReConBlock(trans_dim, num_heads, mlp_ratio, rate)
            for rate in drop_path_rates(drop_path_rate, depth)
        )
        self.norm = nn.LayerNorm(trans_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference's ``MaskTransformer`` init: trunc-normal(0.02) weights and queries."""
        self.apply(init_trunc_normal)
        for p in (self.cls_token, self.img_token, self.text_token):
            trunc_normal_(p, std=0.02)
        for p in (self.cls_pos, self.img_pos, self.text_pos):
            trunc_normal_(p, std=0.02)

    def no_weight_decay(self) -> set[str]:
        """timm-style: the query tokens and their position vectors."""
        return {f"{q}_{kind}" for q in QUERY_NAMES for kind in ("token", "pos")}

    def tokenize(self, points: torch.Tensor) -> Tokens:
        """Group ``points`` (B, N, 3) into patches and embed every patch."""
        neighborhood, centers = self.group_points(points)
        return Tokens(self.patch_embed(neighborhood), neighborhood, centers)

    def group_points(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(neighborhood, centers)``: (B, G, k, 3) centre-relative patches, (B, G, 3) centres."""
        check_point_cloud(points, self.num_group, self.group_size)
        check_dtype(points, self.cls_token)
        return group(points, self.num_group, self.group_size, backend=self.group_backend)

    def tokenize_masked(
        self, neighborhood: torch.Tensor, centers: torch.Tensor, mask: torch.Tensor
    ) -> tuple[Tokens, torch.Tensor]:
        """Embed grouped patches when a mask is known in advance (pretraining).

        The same values as ``Tokens(patch_embed(neighborhood), ...)`` and ``select_visible``, but
        the last mini-PointNet layer runs on the visible patches only; the masked patches' tokens
        in ``Tokens.tokens`` are computed on first read (see
        :meth:`MiniPointNet.forward_visible`).

        Returns:
            ``(tokens, visible)``: the :class:`Tokens` of all patches and the (B, V, C) visible
            tokens, ready for :meth:`encode_visible`.
        """
        check_mask(mask, neighborhood.shape[:2])
        visible, all_tokens = self.patch_embed.forward_visible(neighborhood, ~mask)
        return Tokens(_Deferred(all_tokens), neighborhood, centers), visible

    def encode(
        self,
        tokens: Tokens,
        mask: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> EncoderOutput:
        """Run the transformer on tokenised patches.

        Args:
            tokens: output of :meth:`tokenize`.
            mask: optional (B, G) bool, True = masked; every row must hide the same number.
            return_hidden: also return every block's outputs.
        """
        x = tokens.tokens if mask is None else select_visible(tokens.tokens, mask)
        return self.encode_visible(x, tokens, mask, return_hidden)

    def encode_visible(
        self,
        x: torch.Tensor,
        tokens: Tokens,
        mask: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> EncoderOutput:
        """:meth:`encode` given the visible tokens ``x`` (B, V, C) already selected by ``mask``."""
        centers = tokens.centers if mask is None else select_visible(tokens.centers, mask)
        b = x.shape[0]
        queries = torch.cat([self.cls_token, self.img_token, self.text_token], 1).expand(b, -1, -1)
        query_pos = torch.cat([self.cls_pos, self.img_pos, self.text_pos], 1).expand(b, -1, -1)
        pos = self.pos_embed(centers)
        hidden_local: list[torch.Tensor] = []
        hidden_queries: list[torch.Tensor] = []
        for block in self.blocks:
            queries, x = block(queries + query_pos, x + pos, stop_grad=self.stop_grad)
            if return_hidden:
                hidden_local.append(x)
                hidden_queries.append(queries)
        queries, x = self.norm(queries), self.norm(x)
        return EncoderOutput(
            cls=queries[:, 0],
            img=queries[:, 1],
            text=queries[:, 2],
            local=x,
            centers=tokens.centers,
            neighborhood=tokens.neighborhood,
            tokens=_raw(tokens, "tokens"),
            mask=mask,
            hidden_states=tuple(hidden_local) if return_hidden else None,
            hidden_queries=tuple(hidden_queries) if return_hidden else None,
        )

    def forward(
        self, points: torch.Tensor, mask: torch.Tensor | None = None, return_hidden: bool = False
    ) -> EncoderOutput:
        """Encode clouds.

        Args:
            points: (B, N, 3) with N >= num_group and N >= group_size.
            mask: optional (B, G) bool over the FPS patches, True = hidden from the encoder.
            return_hidden: also return per-block outputs.
        """
        return self.encode(self.tokenize(points), mask, return_hidden)


def select_visible(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Keep the unmasked entries of every row, in their original order.

    Args:
        x: (B, G, ...) per-patch values.
        mask: (B, G) bool, True = drop; every row must keep the same number V.

    Returns:
        (B, V, ...).
    """
    check_mask(mask, x.shape[:2])
    return x[~mask].reshape(x.shape[0], -1, *x.shape[2:])


def check_mask(mask: torch.Tensor, shape: torch.Size | tuple[int, ...]) -> None:
    """Raise ``ValueError`` unless ``mask`` is a (B, G) bool tensor hiding as many in every row."""
    if mask.dtype != torch.bool or mask.shape != tuple(shape):
        raise ValueError(
            f"mask must be a bool tensor of shape {tuple(shape)}; "
            f"got {mask.dtype} {tuple(mask.shape)}"
        )
    visible = (~mask).sum(dim=1)
    if bool((visible != visible[0]).any()):
        raise ValueError(
            f"every row of mask must hide the same number of patches; visible counts {visible}"
        )


def downstream_encoder(**kwargs: Any) -> ReConEncoder:
    """The encoder of every downstream model (reference ``PointTransformer*``).

    No stop-gradient (the queries train the local stream too) and ``cls_token`` at zeros, as the
    reference's classifier and zero-shot constructors leave it.
    """
    encoder = ReConEncoder(stop_grad=False, **kwargs)
    nn.init.zeros_(encoder.cls_token)
    return encoder
