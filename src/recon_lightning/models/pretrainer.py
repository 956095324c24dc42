"""The ReCon pretraining model: masked reconstruction + distillation to frozen teachers."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from .decoder import MaskedDecoder
from .encoder import EncoderOutput, ReConEncoder, select_visible
from .losses import RECONSTRUCTION_LOSSES, distillation_loss, reconstruction_loss, smc_loss
from .masking import PatchMasker
from .projection import SMCProjection, teacher_projection
from .reconstruction_head import ReconstructionHead


@dataclass
class Reconstruction:
    """Predicted and true masked patches, for losses and plots.

    Attributes:
        pred: (B, M, k, 3) predicted masked patches, relative to their centres.
        target: (B, M, k, 3) true masked patches, relative to their centres (nearest first).
        mask: (B, G) bool, True = masked.
        centers: (B, G, 3) all centres.
        neighborhood: (B, G, k, 3) all true patches, centre-relative.
    """

    pred: torch.Tensor
    target: torch.Tensor
    mask: torch.Tensor
    centers: torch.Tensor
    neighborhood: torch.Tensor

    def masked_centers(self) -> torch.Tensor:
        """(B, M, 3) centres of the masked patches (add to ``pred``/``target`` to place them)."""
        return select_visible(self.centers, ~self.mask)

    def visible_points(self) -> torch.Tensor:
        """(B, V*k, 3) absolute coordinates of the points the encoder saw."""
        vis = select_visible(self.neighborhood, self.mask)
        centers = select_visible(self.centers, self.mask)
        return (vis + centers.unsqueeze(2)).flatten(1, 2)

    def predicted_points(self) -> torch.Tensor:
        """(B, M*k, 3) absolute coordinates of the reconstructed masked patches."""
        return (self.pred + self.masked_centers().unsqueeze(2)).flatten(1, 2)


@dataclass
class PretrainOutput:
    """Everything one pretraining forward produces.

    Attributes:
        encoder: the encoder output (visible tokens only).
        reconstruction: predicted / true masked patches.
        img_pred, text_pred: (B, img_dim) / (B, text_dim) projected student tokens (or None).
        cls_proj: (B, 128) SMC projection of the cls output (or None).
        losses: scalar tensors ``chamfer``, ``img``, ``text`` (and ``smc``) that could be computed
            from the given targets, plus their sum ``total``.
        decoder_hidden: per decoder block (B, G, C) outputs, on request.
    """

    encoder: EncoderOutput
    reconstruction: Reconstruction
    img_pred: torch.Tensor | None
    text_pred: torch.Tensor | None
    cls_proj: torch.Tensor | None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    decoder_hidden: tuple[torch.Tensor, ...] | None = None


class ReConPretrainer(nn.Module):
    """ReCon pretraining (the reference's ``ReCon`` model) without the frozen teachers.

    Teachers stay outside: :meth:`losses` takes their precomputed features. The encoder runs in
    stop-gradient mode, so the distillation losses train only the global stream, the shared final
    LayerNorm and the projections.

    Args:
        trans_dim, depth, num_heads, num_group, group_size, drop_path_rate, mlp_ratio: encoder
            size (reference names).
        mask_ratio, mask_type: masking (``rand`` | ``block``).
        decoder_depth, decoder_num_heads: decoder size (heads default to ``num_heads``).
        loss: reconstruction loss, ``cdl2`` | ``cdl1``.
        img_dim: image-teacher feature size (768 in21k ViT-B/16, 512 CLIP ViT-B/32); None: no
            image distillation.
        text_dim: text-teacher feature size (512 CLIP); None: no text distillation.
        self_contrastive: add the SMC head and loss (needs ``labels``).
        smc_temperature: tau of the SMC loss.
        group_backend: backend of the grouping op.
    """

    def __init__(
        self,
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        num_group: int = 64,
        group_size: int = 32,
        drop_path_rate: float = 0.1,
        mask_ratio: float = 0.6,
        mask_type: str = "rand",
        decoder_depth: int = 4,
        decoder_num_heads: int | None = None,
        loss: str = "cdl2",
        img_dim: int | None = 768,
        text_dim: int | None = 512,
        self_contrastive: bool = False,
        smc_temperature: float = 0.1,
        mlp_ratio: float = 4.0,
        group_backend: str = "auto",
    ) -> None:
        super().__init__()
        if loss not in RECONSTRUCTION_LOSSES:
            raise ValueError(f"loss must be one of {RECONSTRUCTION_LOSSES}; got {loss!r}")
        self.encoder = ReConEncoder(
            trans_dim=trans_dim,
            depth=depth,
            num_heads=num_heads,
            num_group=num_group,
            group_size=group_size,
            drop_path_rate=drop_path_rate,
            mlp_ratio=mlp_ratio,
            stop_grad=True,
            group_backend=group_backend,
        )
        self.masker = PatchMasker(mask_ratio, mask_type)
        num_masked = self.masker.num_masked(num_group)
        if not 0 < num_masked < num_group:
            raise ValueError(
                f"mask_ratio={mask_ratio} masks {num_masked} of {num_group} patches; pretraining "
                "needs at least one masked and one visible patch"
            )
        self.decoder = MaskedDecoder(
            trans_dim, decoder_depth, decoder_num_heads or num_heads, drop_path_rate, mlp_ratio
        )
        self.recon_head = ReconstructionHead(trans_dim, group_size)
        self.img_proj = teacher_projection(trans_dim, img_dim) if img_dim else None
        self.text_proj = teacher_projection(trans_dim, text_dim) if text_dim else None
        self.cls_proj = SMCProjection(trans_dim) if self_contrastive else None
        self.loss = loss
        self.smc_temperature = smc_temperature

    def no_weight_decay(self) -> set[str]:
        """timm-style: the encoder's tokens and position vectors and the mask token."""
        return {f"encoder.{n}" for n in self.encoder.no_weight_decay()} | {"decoder.mask_token"}

    def forward(
        self,
        points: torch.Tensor,
        img_target: torch.Tensor | None = None,
        text_target: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_hidden: bool = False,
    ) -> PretrainOutput:
        """One pretraining forward.

        Args:
            points: (B, N, 3).
            img_target: (B, img_dim) image-teacher features; the ``img`` loss needs it.
            text_target: (B, text_dim) text-teacher features; the ``text`` loss needs it.
            mask: (B, G) bool, True = masked; None draws one with the masking module.
            labels: (B,) categories for the SMC loss.
            return_hidden: keep per-block encoder and decoder outputs.

        Returns:
            :class:`PretrainOutput`; ``losses`` holds the terms its inputs allow and ``total``.
        """
        neighborhood, centers = self.encoder.group_points(points)
        if mask is None:
            mask = self.masker(centers)
        # The mask is known before the embedding: the last mini-PointNet layer runs on the
        # visible patches only (``enc.tokens`` computes the masked ones if read).
        tokens, visible = self.encoder.tokenize_masked(neighborhood, centers, mask)
        enc = self.encoder.encode_visible(visible, tokens, mask, return_hidden)
        decoded, dec_hidden = self.decoder(enc.local, tokens.centers, mask, return_hidden)
        recon = Reconstruction(
            pred=self.recon_head(decoded),
            target=select_visible(tokens.neighborhood, ~mask),
            mask=mask,
            centers=tokens.centers,
            neighborhood=tokens.neighborhood,
        )
        k = self.recon_head.group_size
        losses = {
            "chamfer": reconstruction_loss(
                recon.pred.reshape(-1, k, 3), recon.target.reshape(-1, k, 3), self.loss
            )
        }
        img_pred = self.img_proj(enc.img) if self.img_proj is not None else None
        text_pred = self.text_proj(enc.text) if self.text_proj is not None else None
        cls_proj = self.cls_proj(enc.cls) if self.cls_proj is not None else None
        if img_pred is not None and img_target is not None:
            losses["img"] = distillation_loss(img_pred, img_target)
        if text_pred is not None and text_target is not None:
            losses["text"] = distillation_loss(text_pred, text_target)
        if cls_proj is not None and labels is not None:
            losses["smc"] = smc_loss(cls_proj, labels, self.smc_temperature)
        # Python's sum, as the reference: it also promotes mixed dtypes under autocast.
        losses["total"] = sum(losses.values(), torch.zeros((), device=points.device))
        return PretrainOutput(enc, recon, img_pred, text_pred, cls_proj, losses, dec_hidden)

    def losses(
        self,
        points: torch.Tensor,
        img_target: torch.Tensor | None,
        text_target: torch.Tensor | None,
        mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Loss terms ``chamfer``, ``img``, ``text`` (``smc`` with ``self_contrastive``), ``total``.

        Every enabled term must get its input: a target for each projection, ``labels`` for SMC.
        """
        for name, needed, given in (
            ("img_target", self.img_proj is not None, img_target is not None),
            ("text_target", self.text_proj is not None, text_target is not None),
            ("labels", self.cls_proj is not None, labels is not None),
        ):
            if needed and not given:
                raise ValueError(f"{name} is required by this model's configuration")
        return self.forward(points, img_target, text_target, mask, labels).losses

    @torch.no_grad()
    def reconstruct(self, points: torch.Tensor, mask: torch.Tensor | None = None) -> Reconstruction:
        """Predicted and true masked patches of ``points`` (no gradients), e.g. for plots."""
        return self.forward(points, mask=mask).reconstruction
