"""Tasks that only evaluate a frozen model (SVM probe, zero-shot): refuse training loops."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl

EVAL_ONLY_MESSAGE = (
    "the {name} task evaluates a frozen encoder and does not train; run it with "
    "`recon-eval experiment=... ckpt_path=...` instead of recon-train"
)


class EvalOnlyMixin:
    """Tasks that only evaluate: a clear error when a training loop is started on them."""

    task_name = "evaluation"

    def training_step(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(EVAL_ONLY_MESSAGE.format(name=self.task_name))

    def configure_optimizers(self) -> None:
        raise RuntimeError(EVAL_ONLY_MESSAGE.format(name=self.task_name))

    def require_single_device(self, trainer: pl.Trainer) -> None:
        """The evaluation gathers every feature in one process: refuse multi-device trainers."""
        if trainer.world_size > 1:
            raise ValueError(
                f"the {self.task_name} evaluation runs on one device; got a trainer with "
                f"world_size={trainer.world_size}: set trainer.devices=1"
            )
