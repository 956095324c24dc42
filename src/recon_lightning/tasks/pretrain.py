"""ReCon pretraining as a LightningModule (reference ``tools/runner_pretrain.py``).

One step: the frozen teachers turn the batch's image and category text into targets, the
:class:`~recon_lightning.models.ReConPretrainer` computes Chamfer reconstruction + SmoothL1
distillation (+ optional SMC), and AdamW steps with the reference's parameter groups and per-epoch
cosine schedule. No gradient clipping, as in the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from torch import nn

from ..checkpoints.keymap import to_official
from ..models import ReConPretrainer, build_pretrainer
from .config import instantiate, plain
from .init_weights import initialise
from .optim import configure_reference_optimizer, reference_no_decay


def pretrainer_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """Flatten the task's ``model`` section (``encoder`` + ``masking`` + options) to kwargs."""
    model = dict(plain(model))
    flat = {**model.pop("encoder", {}), **model.pop("masking", {}), **model}
    return flat


def build_teachers_from_config(teachers: Any) -> nn.Module | None:
    """Instantiate a teachers config (``_target_``) or pass a built module through."""
    if teachers is None or isinstance(teachers, nn.Module):
        return teachers
    return instantiate(teachers)


class PretrainTask(pl.LightningModule):
    """ReCon pretraining.

    Args:
        model: ``{encoder: {...}, masking: {...}, loss, self_contrastive, ...}`` with reference
            hyper-parameter names; the teacher feature sizes are filled in from ``teachers``.
        teachers: a teachers config with ``_target_`` or a built module with ``targets(batch)``,
            ``img_dim`` and ``text_dim``; its weights are not written into checkpoints.
        optimizer: ``lr``, ``weight_decay`` (AdamW).
        scheduler: ``epochs`` (null: follow ``trainer.max_epochs``), ``warmup_epochs``,
            ``warmup_lr_init``, ``lr_min``.
        ckpt_path: weights to start from (the reference's ``--start_ckpts``): our pretraining
            ``.ckpt`` or an official pretraining checkpoint; the model only, with a fresh
            optimiser and schedule (use ``resume=`` to continue a run instead).
    """

    #: Item format this task needs from a DataModule that can serve several (SyntheticShapes).
    data_mode = "pretrain"

    def __init__(
        self,
        model: Mapping[str, Any],
        teachers: Any = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        ckpt_path: str | None = None,
    ) -> None:
        super().__init__()
        self.teachers = build_teachers_from_config(teachers)
        cfg = pretrainer_config(model)
        if self.teachers is not None:
            cfg.setdefault("img_dim", self.teachers.img_dim)
            cfg.setdefault("text_dim", self.teachers.text_dim)
        self.optimizer_cfg = dict(plain(optimizer) or {"lr": 5e-4, "weight_decay": 0.05})
        self.scheduler_cfg = dict(plain(scheduler) or {})
        # The resolved model config goes into the checkpoint so downstream tasks can rebuild it.
        self.save_hyperparameters(
            {"model": cfg, "optimizer": self.optimizer_cfg, "scheduler": self.scheduler_cfg}
        )
        self.model: ReConPretrainer = build_pretrainer(**cfg)
        self.init_report = initialise(self.model, ckpt_path, "pretrain")
        if self.init_report is not None and not self.init_report.loaded:
            raise ValueError(f"ckpt_path={ckpt_path} holds no weights of the pretraining model")

    def forward(self, points: torch.Tensor):
        """Encoder features of ``points`` (B, N, 3) -> ``EncoderOutput`` (no masking)."""
        return self.model.encoder(points)

    def _losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        if self.teachers is None:
            raise RuntimeError("PretrainTask needs teachers to compute the distillation targets")
        with torch.no_grad():
            img_target, text_target = self.teachers.targets(batch)
        labels = batch.get("label") if self.model.cls_proj is not None else None
        return self.model.losses(
            batch["points"], img_target.float(), text_target.float(), labels=labels
        )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        losses = self._losses(batch)
        bs = batch["points"].shape[0]
        self.log("train/loss", losses["total"], prog_bar=True, batch_size=bs, sync_dist=True)
        for name, value in losses.items():
            if name != "total":
                self.log(f"train/{name}", value, batch_size=bs, sync_dist=True)
        return losses["total"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        losses = self._losses(batch)
        bs = batch["points"].shape[0]
        for name, value in losses.items():
            self.log(
                f"val/{'loss' if name == 'total' else name}", value, batch_size=bs, sync_dist=True
            )

    def configure_optimizers(self) -> dict[str, Any]:
        # The reference's no-decay rule reads its own parameter names: map ours back first.
        def no_decay(name: str, p: torch.Tensor) -> bool:
            return reference_no_decay(to_official(name, "pretrain") or name, p)

        return configure_reference_optimizer(
            self,
            self.model.named_parameters(),
            self.optimizer_cfg,
            self.scheduler_cfg,
            is_no_decay=no_decay,
        )
