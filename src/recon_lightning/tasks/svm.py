"""Linear-SVM evaluation of a frozen encoder as a task (reference ``runner_svm``, spec §4.7).

Features: [max over the 3 global-token outputs, max + mean over local tokens] (2C) after the
final LayerNorm, computed without gradient on deterministic FPS-``npoints`` inputs, for the
training split (the DataModule's training loader: shuffled, last partial batch dropped, as the
reference's) and the whole test split; scikit-learn ``LinearSVC(C=0.075)``; test accuracy.
``ckpt_path=null`` evaluates a randomly initialised encoder, the baseline a pretraining must beat.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch

from ..data.transforms import fps_sample
from ..evaluation.linear_svm import linear_svm_accuracy
from ..evaluation.results import build_results, write_json_atomic
from ..models import ReConEncoder, build_encoder, svm_features
from .config import encoder_kwargs, plain
from .eval_only import EVAL_ONLY_MESSAGE, EvalOnlyMixin
from .init_weights import initialise


class SVMTask(EvalOnlyMixin, pl.LightningModule):
    """Linear-SVM probe of a (pretrained) encoder; ``recon-eval`` calls :meth:`evaluate`.

    Args:
        model: ``{encoder: {trans_dim, depth, num_heads, num_group, group_size, ...}}``.
        ckpt_path: a pretraining checkpoint (ours or official) or a fine-tuned classifier (its
            encoder is used); None keeps the random initialisation.
        c: the SVM's regularisation constant (0.075 in the reference).
        seed: ``LinearSVC``'s random_state.
    """

    #: Item format this task needs from a DataModule that can serve several (SyntheticShapes).
    data_mode = "classification"

    task_name = "svm"

    def __init__(
        self,
        model: Mapping[str, Any],
        ckpt_path: str | None = None,
        c: float = 0.075,
        seed: int = 0,
    ) -> None:
        super().__init__()
        model = dict(plain(model))
        config = {**encoder_kwargs(model.pop("encoder", None)), **encoder_kwargs(model)}
        self.save_hyperparameters({"model": config, "c": c, "seed": seed})
        # The reference's PointTransformerSVM trunc-normal-initialises every query token, which
        # is ReConEncoder's own initialisation.
        self.encoder: ReConEncoder = build_encoder(**config)
        self.init_checkpoint = None if ckpt_path is None else str(ckpt_path)
        self.init_report = initialise(self.encoder, ckpt_path, "svm")
        self.c, self.seed = float(c), int(seed)
        self.npoints: int | None = None
        self.metrics: dict[str, Any] = {}
        self.dataset_name: str | None = None

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, 2C) SVM features."""
        return svm_features(self.encoder(points))

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> tuple[torch.Tensor, ...]:
        points = batch["points"]
        if self.npoints is not None and points.shape[1] != self.npoints:
            points = fps_sample(points, self.npoints)  # deterministic, as the reference's misc.fps
        return self(points).float(), batch["label"].reshape(-1)

    def features(self, trainer: pl.Trainer, loader: Iterable) -> tuple[np.ndarray, np.ndarray]:
        """``(features (S, 2C), labels (S,))`` of every batch of ``loader``."""
        outs = trainer.predict(self, dataloaders=loader)
        feats = torch.cat([f for f, _ in outs]).cpu().numpy()
        labels = torch.cat([y for _, y in outs]).cpu().numpy()
        # Lightning's predict loop turns drop_last off; the reference's training loader drops its
        # last partial batch, so drop it here (predictions come in loader order).
        if getattr(loader, "drop_last", False) and loader.batch_size:
            keep = len(labels) // loader.batch_size * loader.batch_size
            feats, labels = feats[:keep], labels[:keep]
        return feats, labels

    def evaluate(self, trainer: pl.Trainer, datamodule: Any) -> dict[str, Any]:
        """Train-split features -> LinearSVC -> test-split accuracy (percent)."""
        self.require_single_device(trainer)
        datamodule.setup("fit")
        datamodule.setup("test")
        self.npoints = int(datamodule.npoints)
        self.dataset_name = getattr(datamodule, "dataset_name", None)
        train = self.features(trainer, datamodule.train_dataloader())
        test = self.features(trainer, datamodule.test_dataloader())
        acc = 100.0 * linear_svm_accuracy(train, test, c=self.c, seed=self.seed)
        self.metrics = {"svm_acc": acc, "num_train": len(train[1]), "num_test": len(test[1])}
        return dict(self.metrics)

    def write_results(self, path: str | Path, info: Mapping[str, Any]) -> Path:
        """Write this run's ``results.json`` (after :meth:`evaluate`)."""
        if not self.metrics:
            raise RuntimeError(EVAL_ONLY_MESSAGE.format(name=self.task_name))
        setting = {
            "dataset": self.dataset_name,
            "c": self.c,
            "npoints": self.npoints,
            "initialised_from": self.init_checkpoint,
            "random_init": self.init_checkpoint is None,
        }
        notes = {"svm_acc": "LinearSVC on frozen features, train split -> test split (§4.7)"}
        record = build_results("svm", info, self.metrics, "svm_acc", setting, notes)
        return write_json_atomic(path, record)
