"""One log line at the start of every fit: what will run, on what, and where it writes."""

from __future__ import annotations

import logging
from typing import Any

import lightning.pytorch as pl

log = logging.getLogger("recon_lightning")


def _size(dataset: Any) -> int | None:
    try:
        return len(dataset)
    except TypeError:
        return None


def _split_sizes(trainer: pl.Trainer) -> dict[str, int | None]:
    dm = trainer.datamodule
    sizes: dict[str, int | None] = {"train": None, "val": None, "test": None}
    if dm is not None and hasattr(dm, "dataset"):
        for name, split in (("train", "train"), ("val", dm.val_split), ("test", dm.test_split)):
            sizes[name] = _size(dm.dataset(split))
        return sizes
    loader = trainer.train_dataloader
    if loader is not None:
        sizes["train"] = _size(getattr(loader, "dataset", None))
    return sizes


class RunSummary(pl.Callback):
    """Logs sample counts, batches per epoch, per-device batch, world size, precision, output."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        sizes = _split_sizes(trainer)
        loader = trainer.train_dataloader
        batch = getattr(loader, "batch_size", None)
        log.info(
            "fit: %s train / %s val / %s test samples, %s batches per epoch, %s per device x %d "
            "device(s), precision %s, output %s",
            *(sizes[k] if sizes[k] is not None else "?" for k in ("train", "val", "test")),
            trainer.num_training_batches,
            batch if batch is not None else "?",
            trainer.world_size,
            trainer.precision,
            trainer.default_root_dir,
        )
