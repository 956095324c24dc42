"""Loggers that survive a resume.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when its folder is reused, so a run
resumed in its own folder (``resume=auto`` after a requeue or a kill) would lose the metrics of
every epoch before the interruption. :class:`ResumableCSVLogger` appends to it instead.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment


class _AppendingWriter(ExperimentWriter):
    """An experiment writer that keeps an existing ``metrics.csv`` and appends to it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
                # Known columns: rows are appended under the same header (or it is widened).
                self.metrics_keys = sorted(next(csv.reader(handle), []))


class ResumableCSVLogger(CSVLogger):
    """``CSVLogger`` whose ``metrics.csv`` outlives a resume in the same folder.

    Rows of the interrupted epoch that were logged before the kill stay in the file; a reader
    that wants one value per step keeps the last row of each step.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
