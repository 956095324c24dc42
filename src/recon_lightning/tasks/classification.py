"""Shape classification on a ReCon encoder (reference ``tools/runner_finetune.py``, spec §4.2-4.4).

Protocols (the reference's ``type``):

- ``full``: every parameter trains; MLP head.
- ``mlp3``: MLP head; only the reference's ``cls*`` parameters train (``cls_token``, ``cls_pos``
  and the head); the frozen backbone still runs in train mode (BatchNorm statistics drift,
  drop-path active), as in the reference.
- ``linear``: one Linear head; same frozen set as ``mlp3``.

Optimisation follows the reference: AdamW with three groups ([``cls*`` at 10x lr, no decay,
decay], the no-decay rule applied to the reference's parameter names), the per-epoch timm cosine
(:class:`~recon_lightning.tasks.optim.ReferenceCosineLR`), plain cross-entropy; gradient clipping
at norm 10 comes from the trainer (``trainer.gradient_clip_val``).

Evaluation: the validation loop runs on the dataset's ``val_split`` every epoch (the test split
for the reference datasets, as the reference does). ``val/acc`` is logged each epoch; the best
epoch is tracked *beside* the last one and both go into ``results.json``, labelled. ``trainer.test``
logs the plain accuracy ``test/acc`` and the voting accuracy ``test/vote_acc`` (one voting pass of
``vote.times`` views); the reference's maximum over ``vote.reference_repeats`` voting repeats is
computed only when asked for and reported as ``test/vote_acc_max_reference``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torchmetrics.classification import MulticlassAccuracy

from ..checkpoints.keymap import to_official
from ..data.transforms import get_batch_transform
from ..evaluation.results import build_results, write_json_atomic
from ..evaluation.voting import RepeatedVoteAccuracy, vote_logits, vote_pool
from ..models import HEAD_TYPES, ReConClassifier, build_classifier
from .config import compile_blocks, datamodule_of, encoder_kwargs, plain
from .init_weights import check_report_complete, initialise
from .optim import configure_reference_optimizer, reference_no_decay

log = logging.getLogger("recon_lightning")

PROTOCOLS = HEAD_TYPES  # ("full", "mlp3", "linear")

DEFAULT_OPTIMIZER: dict[str, float] = {"lr": 2e-5, "weight_decay": 0.05, "head_lr_mult": 10.0}
DEFAULT_VOTE: dict[str, Any] = {"times": 10, "reference_repeats": 0, "transform": None}

#: Explanations written next to the metrics in ``results.json``.
NOTES: dict[str, str] = {
    "last_epoch_acc": "accuracy of the final weights on the validation loop's split",
    "best_epoch_acc_test_selected": (
        "the reference's reported number: the best epoch, selected on the validation loop's "
        "split, which is the test split for ModelNet/ScanObjectNN/few-shot (optimistic)"
    ),
    "test_acc": "plain test accuracy (deterministic FPS) of the weights trainer.test ran on",
    "vote_acc": "one voting pass: mean logits over `vote_times` augmented views (spec §4.4)",
    "vote_acc_max_reference": (
        "the reference's headline convention: maximum voting accuracy over `vote_repeats` "
        "repeats of the whole evaluation (optimistic; never the default headline)"
    ),
    "vote_acc_mean_over_repeats": "mean voting accuracy over the same repeats",
}


def classifier_config(model: Mapping[str, Any], protocol: str) -> dict[str, Any]:
    """Constructor kwargs of :func:`build_classifier` from the task's ``model`` section.

    Accepts ``{encoder: {...}, cls_dim: K}`` (the Hydra layout) or an already flat dict (a saved
    checkpoint's hyper-parameters). ``head_type``, when present, must agree with ``protocol``
    (``full`` and ``mlp3`` share their layers).
    """
    model = dict(plain(model))
    flat = {**encoder_kwargs(model.pop("encoder", None)), **encoder_kwargs(model)}
    if "cls_dim" not in model:
        raise ValueError("the task's model section needs cls_dim (number of head outputs)")
    given = model.get("head_type")
    if given is not None and (given == "linear") != (protocol == "linear"):
        raise ValueError(f"model.head_type={given!r} does not fit protocol={protocol!r}")
    return {**flat, "cls_dim": int(model["cls_dim"]), "head_type": protocol}


class ClassificationTask(pl.LightningModule):
    """Fine-tuning / MLP-3 / linear probing of a ReCon classifier; see the module docstring.

    Args:
        model: ``{encoder: {trans_dim, depth, num_heads, num_group, group_size, drop_path_rate},
            cls_dim}`` (reference names).
        protocol: ``full`` | ``mlp3`` | ``linear``.
        ckpt_path: starting weights: our pretraining or classification ``.ckpt``, or an official
            checkpoint (pretraining or fine-tuned); None keeps the random initialisation
            (training from scratch).
        optimizer: ``lr``, ``weight_decay``, ``head_lr_mult`` (10: the reference's ``cls*`` rule).
        scheduler: kwargs of :class:`ReferenceCosineLR` (``epochs``, ``warmup_epochs``,
            ``warmup_lr_init``, ``lr_min``).
        vote: ``times`` (views per vote, 0 = no voting), ``reference_repeats`` (0 = off; 299
            reproduces the reference's max-over-repeats), ``transform`` (batch transform name;
            None = the DataModule's ``vote_transform``).
        setting: extra facts for ``results.json`` (e.g. few-shot ``way``, ``shot``, ``fold``).
        frozen_backbone_mode: ``train`` (reference: the frozen backbone of ``mlp3``/``linear``
            runs in train mode) or ``eval`` (BatchNorm statistics and drop-path frozen too).
    """

    #: Item format this task needs from a DataModule that can serve several (SyntheticShapes).
    data_mode = "classification"

    def __init__(
        self,
        model: Mapping[str, Any],
        protocol: str = "full",
        ckpt_path: str | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        vote: Mapping[str, Any] | None = None,
        setting: Mapping[str, Any] | None = None,
        frozen_backbone_mode: str = "train",
        compile: bool = False,
    ) -> None:
        super().__init__()
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}; got {protocol!r}")
        if frozen_backbone_mode not in ("train", "eval"):
            raise ValueError(
                f"frozen_backbone_mode must be 'train' or 'eval'; got {frozen_backbone_mode!r}"
            )
        config = classifier_config(model, protocol)
        self.protocol = protocol
        self.optimizer_cfg = {**DEFAULT_OPTIMIZER, **(plain(optimizer) or {})}
        self.scheduler_cfg = dict(plain(scheduler) or {})
        self.vote_cfg = {**DEFAULT_VOTE, **(plain(vote) or {})}
        self.setting = dict(plain(setting) or {})
        self.frozen_backbone_mode = frozen_backbone_mode
        # ckpt_path is not a hyper-parameter: a saved task restores from its own state dict.
        self.save_hyperparameters(
            {
                "model": config,
                "protocol": protocol,
                "optimizer": self.optimizer_cfg,
                "scheduler": self.scheduler_cfg,
                "vote": self.vote_cfg,
                "setting": self.setting,
                "frozen_backbone_mode": frozen_backbone_mode,
            }
        )
        self.model: ReConClassifier = build_classifier(**config)
        self.init_checkpoint = None if ckpt_path is None else str(ckpt_path)
        self.init_report = initialise(self.model, ckpt_path, f"classification ({protocol})")
        if protocol != "full":
            self.model.freeze_backbone()
        if compile:  # the encoder blocks; FPS and the tokenizer's ops stay eager
            compile_blocks(self.model)

        num_classes = config["cls_dim"]
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self.vote_acc = RepeatedVoteAccuracy(1)
        repeats = int(self.vote_cfg["reference_repeats"])
        self.vote_repeat_acc = RepeatedVoteAccuracy(repeats) if repeats > 0 else None
        #: (epoch, val accuracy in %) of every validation epoch (sanity checks excluded).
        self.val_history: list[tuple[int, float]] = []
        self.test_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ model

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) -> (B, cls_dim) logits."""
        return self.model(points)

    def train(self, mode: bool = True) -> ClassificationTask:
        """Lightning toggles modes through here; optionally keep a frozen backbone in eval."""
        super().train(mode)
        if mode and self.protocol != "full" and self.frozen_backbone_mode == "eval":
            self.model.encoder.eval()
        return self

    def setup(self, stage: str) -> None:
        """Fail early when the data cannot feed this head (wrong batch mode, too many classes)."""
        dm = datamodule_of(self)
        if dm is None:
            return
        if getattr(dm, "mode", "classification") != "classification":
            raise ValueError(
                f"the classification task needs classification batches; the DataModule is in "
                f"mode={dm.mode!r} (SyntheticShapes: data=synthetic or data=synthetic_cls)"
            )
        if dm.num_classes > self.model.cls_dim:
            raise ValueError(
                f"the dataset has {dm.num_classes} classes but the head only "
                f"{self.model.cls_dim} outputs; raise task.model.cls_dim"
            )

    # ------------------------------------------------------------------ steps

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        logits = self.model(batch["points"])
        label = batch["label"].reshape(-1)
        loss = F.cross_entropy(logits, label)
        self.train_acc.update(logits.argmax(-1), label)
        # Per step: this rank's loss, no collective; per epoch: the mean over every step of every
        # rank, reduced once at the epoch's end.
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log(
            "train/loss_epoch",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=label.shape[0],
            sync_dist=True,
        )
        return loss

    def _log_global(self, name: str, value: float, prog_bar: bool = False) -> None:
        """Log a value that is already the same on every rank (a synced torchmetrics result).

        ``sync_dist`` with ``max`` keeps it bit-exact (no averaging round-off) and spares
        Lightning's warning about unsynced epoch-level logs under DDP; one tiny all-reduce per
        epoch.
        """
        self.log(name, value, prog_bar=prog_bar, sync_dist=True, reduce_fx="max")

    def on_train_epoch_end(self) -> None:
        # Percent, like every accuracy this package logs (the reference prints percentages).
        # torchmetrics sums the counts of every rank in compute(): one reduction per epoch.
        self._log_global("train/acc", 100.0 * float(self.train_acc.compute()))
        self.train_acc.reset()

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        logits = self.model(batch["points"])
        self.val_acc.update(logits.argmax(-1), batch["label"].reshape(-1))

    def on_validation_epoch_end(self) -> None:
        # Synced over DDP ranks: correct and total counts are summed. With the unpadded
        # evaluation sampler every sample is counted once on any number of devices.
        acc = 100.0 * float(self.val_acc.compute())
        self.val_acc.reset()
        if self.trainer.sanity_checking:
            return
        self.val_history.append((int(self.current_epoch), acc))
        best_epoch, best = self.best_epoch()
        self._log_global("val/acc", acc, prog_bar=True)
        self._log_global("val/acc_best", best)
        self._log_global("val/acc_best_epoch", float(best_epoch))

    def best_epoch(self) -> tuple[int, float]:
        """``(epoch, accuracy %)`` of the best validation epoch so far (earliest on ties)."""
        if not self.val_history:
            raise RuntimeError("no validation epoch has run yet")
        return max(self.val_history, key=lambda item: (item[1], -item[0]))

    def _vote_transform(self):
        name = self.vote_cfg.get("transform")
        if name is not None:
            return get_batch_transform(name)
        dm = datamodule_of(self)
        if dm is None or not hasattr(dm, "vote_transform"):
            raise RuntimeError(
                "voting needs the dataset's test-time transform: run trainer.test with a "
                "DataModule, set task.vote.transform, or disable voting with task.vote.times=0"
            )
        return dm.vote_transform

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        points, label = batch["points"], batch["label"].reshape(-1)
        self.test_acc.update(self.model(points).argmax(-1), label)
        times = int(self.vote_cfg["times"])
        if times < 1:
            return
        if "points_raw" not in batch:
            raise RuntimeError(
                "voting needs the stored clouds (`points_raw`) that the DataModule adds to "
                "evaluation batches; disable voting with task.vote.times=0"
            )
        npoints = points.shape[1]
        pool = vote_pool(batch["points_raw"], npoints)
        transform = self._vote_transform()
        vote = vote_logits(self.model, pool, npoints, times, transform).argmax(-1)
        self.vote_acc.update(vote.unsqueeze(0), label)
        if self.vote_repeat_acc is not None:
            preds = [
                vote_logits(self.model, pool, npoints, times, transform).argmax(-1)
                for _ in range(self.vote_repeat_acc.repeats)
            ]
            self.vote_repeat_acc.update(torch.stack(preds), label)

    def on_test_epoch_end(self) -> None:
        metrics = {"test/acc": 100.0 * float(self.test_acc.compute())}
        self.test_acc.reset()
        if int(self.vote_cfg["times"]) > 0:
            metrics["test/vote_acc"] = 100.0 * float(self.vote_acc.compute().reshape(-1)[0])
            self.vote_acc.reset()
        if self.vote_repeat_acc is not None:
            accs = 100.0 * self.vote_repeat_acc.compute().reshape(-1)
            self.vote_repeat_acc.reset()
            metrics["test/vote_acc_max_reference"] = float(accs.max())
            metrics["test/vote_acc_mean_over_repeats"] = float(accs.mean())
        self.test_metrics = metrics
        for name, value in metrics.items():
            self._log_global(name, value)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """(B, cls_dim) logits of an evaluation batch."""
        return self.model(batch["points"])

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        head = set(self.model.head_parameter_names())
        head_type = self.model.head_type

        # The reference decides "no decay" on its own names (e.g. ``*token``): map ours back.
        def no_decay(name: str, p: torch.Tensor) -> bool:
            return reference_no_decay(to_official(name, "classification", head_type) or name, p)

        return configure_reference_optimizer(
            self,
            self.model.named_parameters(),
            self.optimizer_cfg,
            self.scheduler_cfg,
            is_no_decay=no_decay,
            is_head=lambda name: name in head,
        )

    # ------------------------------------------------------------------ state and results

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_history"] = [list(item) for item in self.val_history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = [(int(e), float(a)) for e, a in checkpoint.get("val_history", [])]

    def evaluate(self, trainer: pl.Trainer, datamodule: pl.LightningDataModule) -> dict[str, float]:
        """``recon-eval``: plain test + voting of a fine-tuned checkpoint (``test_net``)."""
        check_report_complete(self.init_report, self.init_checkpoint, "recon-eval (classification)")
        trainer.test(self, datamodule=datamodule)
        return dict(self.test_metrics)

    def results(self, info: Mapping[str, Any]) -> dict[str, Any]:
        """This run's ``results.json`` record (see :mod:`.results`)."""
        metrics: dict[str, Any] = {}
        if self.val_history:
            last_epoch, last = self.val_history[-1]
            best_epoch, best = self.best_epoch()
            metrics.update(
                last_epoch=last_epoch,
                last_epoch_acc=last,
                best_epoch=best_epoch,
                best_epoch_acc_test_selected=best,
                epochs_validated=len(self.val_history),
            )
        names = {
            "test/acc": "test_acc",
            "test/vote_acc": "vote_acc",
            "test/vote_acc_max_reference": "vote_acc_max_reference",
            "test/vote_acc_mean_over_repeats": "vote_acc_mean_over_repeats",
        }
        metrics.update({names[k]: v for k, v in self.test_metrics.items()})
        if "vote_acc" in metrics:
            metrics["vote_times"] = int(self.vote_cfg["times"])
        if "vote_acc_max_reference" in metrics:
            metrics["vote_repeats"] = int(self.vote_cfg["reference_repeats"])
        # None when neither a validation epoch nor a test ran (the record still says so).
        headline = next((m for m in ("test_acc", "last_epoch_acc") if m in metrics), None)
        dm = datamodule_of(self)
        setting = {
            "protocol": self.protocol,
            "dataset": getattr(dm, "dataset_name", None),
            "val_split": getattr(dm, "val_split", None),
            "test_split": getattr(dm, "test_split", None),
            "cls_dim": self.model.cls_dim,
            "initialised_from": self.init_checkpoint,
            "random_init_entries": None if self.init_report is None else self.init_report.missing,
            **self.setting,
        }
        notes = {k: v for k, v in NOTES.items() if k in metrics}
        return build_results("classification", info, metrics, headline, setting, notes)

    def write_results(self, path: str | Path, info: Mapping[str, Any]) -> Path:
        """Write :meth:`results` atomically to ``path``."""
        return write_json_atomic(path, self.results(info))
