"""The total gradient norm before each optimiser step, logged every ``log_every_n_steps``."""

from __future__ import annotations

import lightning.pytorch as pl
import torch


class GradNormMonitor(pl.Callback):
    """Logs ``train/grad_norm``: the 2-norm over every parameter's gradient (before clipping)."""

    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if trainer.global_step % max(trainer.log_every_n_steps, 1):
            return
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if not grads:
            return
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))
        pl_module.log("train/grad_norm", norm, on_step=True, on_epoch=False)
