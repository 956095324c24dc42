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
from torchmetrics import MeanMetric

from ..checkpoints.keymap import to_official
from ..models import ReConPretrainer, build_pretrainer
from .config import compile_blocks, instantiate, plain
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

    Under DDP every trainable parameter is in every step's graph, so DDP runs with
    ``find_unused_parameters=False`` (no graph search each step) and without ``static_graph``.
    Without SMC the ``cls`` query feeds no loss, but the three queries travel through the
    encoder as one tensor: ``cls_token`` and ``cls_pos`` get an all-zero gradient, not ``None``,
    exactly as in the reference, and AdamW leaves them unchanged (zero moments, no decay on
    queries). The frozen teachers (``requires_grad=False``) are outside DDP's reducer.
    ``tests/distributed`` checks that every trainable parameter gets a gradient.
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
        compile: bool = False,
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
        if compile:
            compile_blocks(self.model)
        # Validation means as sums of (loss x samples) and of samples over every rank: the
        # unpadded evaluation sampler gives ranks uneven slices, and Lightning's ``sync_dist``
        # mean truncates the rank-averaged sample count to an integer, which skews such means.
        # Metric states are not persistent: checkpoints keep the model's keys only.
        self.val_losses = nn.ModuleDict({name: MeanMetric() for name in self.loss_names()})

    def loss_names(self) -> list[str]:
        """The loss terms this model computes: ``total``, ``chamfer`` and the enabled ones."""
        optional = {"img": self.model.img_proj, "text": self.model.text_proj}
        optional["smc"] = self.model.cls_proj
        return ["total", "chamfer", *(name for name, head in optional.items() if head is not None)]

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
        for name, value in losses.items():
            key = "train/loss" if name == "total" else f"train/{name}"
            # Per step: this rank's value, no collective (``sync_dist`` on a step log would cost
            # one all-reduce per metric per step). Per epoch: the mean over every step of every
            # rank, reduced once when the epoch ends.
            self.log(key, value, prog_bar=name == "total", on_step=True, on_epoch=False)
            self.log(
                f"{key}_epoch", value, on_step=False, on_epoch=True, batch_size=bs, sync_dist=True
            )
        return losses["total"]

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        losses = self._losses(batch)
        bs = batch["points"].shape[0]
        for name, value in losses.items():
            metric = self.val_losses[name]
            metric.update(value.detach(), weight=bs)
            # Epoch-level only: torchmetrics sums over the ranks once, when the epoch ends.
            key = f"val/{'loss' if name == 'total' else name}"
            self.log(key, metric, on_step=False, on_epoch=True, batch_size=bs)

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
