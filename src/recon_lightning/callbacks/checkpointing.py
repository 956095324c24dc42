"""Checkpoints that survive a kill: atomic writes, and a ``last.ckpt`` when SIGTERM stops a run.

**Atomic writes.** Lightning's ``TorchCheckpointIO`` serialises the checkpoint into memory and
writes it through an fsspec transaction, whose local implementation writes a temporary file in
the *system* temporary folder and moves it over the target with ``shutil.move``. When that
folder is on another filesystem than the run folder (``/tmp`` on a node's disk, runs on
NFS/Lustre: the usual cluster layout) the move is a copy into the target path, so a kill during
the copy leaves a truncated ``last.ckpt`` (and the temporary file behind in ``/tmp``); nothing is
fsynced either. :class:`AtomicCheckpointIO` writes a temporary file next to the target, fsyncs
it, moves it into place with ``os.replace`` (:mod:`recon_lightning.atomic_io`) and fsyncs the
folder: a reader sees the old checkpoint or the new one, never a part. It also streams
``torch.save`` to the file instead of holding a second copy of the checkpoint in memory. Remote
paths (``s3://``...) keep Lightning's writer.

**SIGTERM.** Lightning's own handling (outside SLURM's requeue signal, SIGUSR1, which writes an
``hpc_ckpt``) saves nothing and exits with status 0, and under DDP it can hang: its signal
handler runs a ``broadcast`` from inside the handler, i.e. at whatever point the main thread was
interrupted, which pairs with another rank's per-step broadcast or barrier at random (seen here:
one hang in two 2-process runs). :class:`CheckpointOnSigterm` replaces the handler during
training with one that only notes the signal; at the end of each training batch the ranks agree
on "any rank was signalled" (one 1-element all-reduce per step, as cheap as the broadcast
Lightning already makes every step under DDP; none on one process) and stop together with
``SIGTERMException``. The run's ``last.ckpt`` is then saved by every rank together (rank 0
writes), so ``resume=auto`` or ``resume=<run>/checkpoints/last.ckpt`` continues mid-epoch with
the batches not yet seen, and ``recon-train`` exits with status 143 (128 + SIGTERM) so that
schedulers see the run as stopped, not finished.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

from ..atomic_io import write_with_atomic

log = logging.getLogger("recon_lightning")


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class AtomicCheckpointIO(TorchCheckpointIO):
    """``TorchCheckpointIO`` that writes local checkpoints atomically; see the module docstring."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        fs = get_filesystem(path)
        if storage_options is not None or not isinstance(fs, LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(fs._strip_protocol(str(path)))
        write_with_atomic(target, lambda handle: torch.save(checkpoint, handle))
        _fsync_dir(target.parent)


def last_checkpoint_path(trainer: pl.Trainer) -> Path:
    """Where this run's ``last.ckpt`` lives: ModelCheckpoint's folder, else ``<root>/checkpoints``.

    The fallback is the folder ``resume=auto`` looks in (the run folder is the trainer's
    ``default_root_dir``).
    """
    callback = trainer.checkpoint_callback
    if isinstance(callback, ModelCheckpoint) and callback.dirpath is not None:
        name = callback.CHECKPOINT_NAME_LAST + callback.FILE_EXTENSION
        return Path(callback.dirpath) / name
    return Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt"


class CheckpointOnSigterm(pl.Callback):
    """Stop every rank at the same batch on SIGTERM and save ``last.ckpt``; see the module docs.

    Attributes:
        saved: the checkpoint written after a SIGTERM, else None.
    """

    def __init__(self) -> None:
        self.saved: Path | None = None
        self._requested = False
        self._installed = False
        self._chained: Any = None

    # ------------------------------------------------------------------ the signal

    def _install(self, trainer: pl.Trainer) -> None:
        """Take SIGTERM over from Lightning (which registers its handler as fit's stage starts)."""
        if self._installed or threading.current_thread() is not threading.main_thread():
            return
        # Whatever was installed before Lightning (a launcher's own handler) still runs.
        connector = getattr(trainer, "_signal_connector", None)
        original = getattr(connector, "_original_handlers", {}).get(signal.SIGTERM)
        self._chained = original if callable(original) else None
        signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def _on_sigterm(self, signum: int, frame: FrameType | None) -> None:
        # Only note it: a handler runs between any two bytecodes of the main thread, where no
        # collective may start. The ranks decide together at the end of the batch.
        if not self._requested:
            log.warning("SIGTERM received: stopping after the current training batch")
        self._requested = True
        if self._chained is not None:
            self._chained(signum, frame)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._install(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        stop = self._requested
        if trainer.world_size > 1:  # every rank stops at this batch if any was signalled
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            raise SIGTERMException()

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # Lightning puts the handlers it found back when a stage ends.
        self._installed = False

    # ------------------------------------------------------------------ the checkpoint

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        path = last_checkpoint_path(trainer)
        trainer.save_checkpoint(path)
        self.saved = path
        if trainer.is_global_zero:
            log.warning(
                "SIGTERM: stopped in epoch %d after %d batch(es) of it; saved %s (resume=auto in "
                "this run folder, or resume=%s, continues from there)",
                trainer.current_epoch,
                trainer.fit_loop.epoch_loop.batch_progress.current.processed,
                path,
                path,
            )
