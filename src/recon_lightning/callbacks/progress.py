"""Progress that fits where the output goes: a live bar on a terminal, plain lines in a log.

A SLURM or CI log cannot show a redrawn bar (it fills with carriage returns or stays empty until
the end), so when stderr is not a terminal training prints one line per epoch (and one at most
every ``interval_s`` seconds within a long epoch) with the time left, and each evaluation or
prediction stage prints one line when it ends.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

log = logging.getLogger("recon_lightning")
T = TypeVar("T")


def is_interactive() -> bool:
    """Whether stderr is a terminal that can redraw a progress bar."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


def format_duration(seconds: float) -> str:
    """``"1h02m"``, ``"3m05s"`` or ``"12.3s"``."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"


def _metric_order(key: str) -> tuple[int, str]:
    # Losses first, then other training and validation figures, learning rates last.
    rank = 0 if key.endswith("loss") else 2 if key.startswith("lr") else 1
    return rank, key


def _format_metrics(metrics: dict[str, Any], limit: int = 10) -> str:
    items = []
    for key in sorted(metrics, key=_metric_order):
        value = metrics[key]
        if key.endswith("_step") or key == "v_num":
            continue
        if f"{key}_epoch" in metrics:
            continue  # a step value whose epoch mean is shown (under the plain name) instead
        try:
            items.append(f"{key.removesuffix('_epoch')} {float(value):.4g}")
        except (TypeError, ValueError):
            continue
    return " ".join(items[:limit])


class LineProgressBar(ProgressBar):
    """Plain-line progress for logs (rank zero only, as every Lightning progress bar).

    Args:
        interval_s: within an epoch, print a line at most this often (0: only at epoch end).
    """

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = float(interval_s)
        self._enabled = True
        self._fit_start = 0.0
        self._epoch_start = 0.0
        self._last_line = 0.0
        self._epochs_done = 0
        self._stage_start = 0.0

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _print(self, message: str) -> None:
        if self._enabled:
            log.info(message)

    # ------------------------------------------------------------------ training

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._fit_start = time.monotonic()
        self._epochs_done = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start = self._last_line = time.monotonic()

    def _total_epochs(self, trainer: pl.Trainer) -> int | None:
        epochs = trainer.max_epochs
        return int(epochs) if epochs is not None and epochs > 0 else None

    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        now = time.monotonic()
        if not self.interval_s or now - self._last_line < self.interval_s:
            return
        self._last_line = now
        total = self.total_train_batches
        done = i + 1
        left = ""
        if isinstance(total, int) and total > done:
            eta = (now - self._epoch_start) / done * (total - done)
            left = f", epoch ends in ~{format_duration(eta)}"
        self._print(
            f"epoch {trainer.current_epoch}: step {done}/{total} "
            f"({format_duration(now - self._epoch_start)}{left}) "
            f"{_format_metrics(self.get_metrics(trainer, pl_module))}"
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        now = time.monotonic()
        self._epochs_done += 1
        total = self._total_epochs(trainer)
        progress = (
            f"epoch {trainer.current_epoch + 1}/{total}"
            if total
            else (f"epoch {trainer.current_epoch + 1}")
        )
        left = ""
        remaining = (total - trainer.current_epoch - 1) if total else 0
        if remaining > 0:
            per_epoch = (now - self._fit_start) / self._epochs_done
            left = f", ~{format_duration(per_epoch * remaining)} left"
        self._print(
            f"{progress} done in {format_duration(now - self._epoch_start)}{left} | "
            f"{_format_metrics(trainer.callback_metrics)}"
        )

    # ------------------------------------------------------------------ evaluation stages

    def _stage_started(self, *_: Any) -> None:
        self._stage_start = time.monotonic()

    on_test_start = on_predict_start = _stage_started

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stage_start = time.monotonic()

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Inside fit the epoch line reports validation; a stand-alone validate() gets its own.
        if trainer.state.fn == "validate":
            self._stage_line("validation", trainer, self.total_val_batches)

    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stage_line("test", trainer, sum(trainer.num_test_batches))

    def on_predict_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stage_line("predict", trainer, sum(trainer.num_predict_batches))

    def _stage_line(self, stage: str, trainer: pl.Trainer, batches: Any) -> None:
        self._print(
            f"{stage}: {batches} batches in {format_duration(time.monotonic() - self._stage_start)}"
        )


def auto_progress_bar(interval_s: float = 60.0) -> ProgressBar:
    """A live Rich bar on a terminal, :class:`LineProgressBar` when the output is a file/pipe."""
    return RichProgressBar() if is_interactive() else LineProgressBar(interval_s=interval_s)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Iterate ``items`` with progress: a Rich bar on a terminal, start/end lines otherwise."""
    if is_interactive():
        from rich.progress import track as rich_track

        yield from rich_track(items, description=description, total=total, transient=True)
        return
    start = time.monotonic()
    log.info("%s ...", description)
    count = 0
    for count, item in enumerate(items, 1):  # noqa: B007 - count is reported after the loop
        yield item
    log.info("%s: %d done in %s", description, count, format_duration(time.monotonic() - start))
