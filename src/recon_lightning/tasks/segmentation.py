"""Part segmentation on a ReCon encoder (reference ``segmentation/main.py``, spec §3.6, §4.8).

The model is :class:`~recon_lightning.models.ReConPartSegmentation` (per-point log-probabilities
over all parts, e.g. ShapeNetPart's 50); the loss is the NLL of the true part of every point.
Predictions are restricted to the parts of each shape's own category
(:func:`~recon_lightning.evaluation.segmentation_metrics.masked_argmax`), and
:class:`~recon_lightning.evaluation.segmentation_metrics.PartSegmentationIoU` scores them: instance
mIoU (mean over shapes) and class mIoU (mean over categories), reduced once per epoch (torchmetrics
sums, exact under DDP). The category -> parts layout comes from the DataModule
(``category_to_parts``, ``num_parts``): ShapeNetPart's 16 -> 50 or the synthetic part family.

Optimisation follows the reference: AdamW (lr 1e-4, wd 0.05) over three groups [the 10x-lr head
(every parameter the reference names ``*conv*`` outside the encoder, see
:meth:`~recon_lightning.models.ReConPartSegmentation.head_parameter_names`), no decay (1-D, bias,
``token`` names), decay], the per-epoch timm cosine with 10 warm-up epochs
(:class:`~recon_lightning.tasks.optim.ReferenceCosineLR`); gradient clipping at norm 10 comes from
the trainer (``trainer.gradient_clip_val``).

**Double step.** The reference (inherited from Point-MAE) calls ``optimizer.step()`` right after
``backward`` and again after clipping, with the same gradients: two AdamW steps per batch, the
first unclipped. ``double_step: true`` reproduces it: :meth:`on_before_optimizer_step` (Lightning
calls it after the backward pass and before clipping) takes the extra, unclipped step; Lightning
then clips and takes its own step. The default is one step per batch.

Evaluation: the validation loop runs on the DataModule's ``val_split`` every epoch (the test split
for ShapeNetPart, as the reference). ``val/miou_instance`` and ``val/miou_class`` are logged per
epoch; ``results.json`` quotes the last epoch and, labelled beside it, the reference's numbers: the
best epoch's instance mIoU (selected on the test split) and the running maximum of the class mIoU
(possibly from another epoch). With ``eval_all_points`` batches (``points_all``, ``seg_all``,
``mask_all``) the predictions on the sampled points are carried to every original point
(:func:`~recon_lightning.data.shapenetpart.propagate_to_all_points`) and scored there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F

from ..atomic_io import write_text_atomic
from ..checkpoints.keymap import to_official
from ..data.shapenetpart import (
    CATEGORY_TO_PARTS,
    CLASS_NAMES,
    NUM_PARTS,
    part_mask,
    propagate_to_all_points,
)
from ..evaluation.results import build_results, write_json_atomic
from ..evaluation.segmentation_metrics import (
    PartSegmentationIoU,
    masked_argmax,
    segmentation_table,
)
from ..models import ReConPartSegmentation, build_partseg
from .config import ENCODER_KEYS, compile_blocks, datamodule_of, encoder_kwargs, plain
from .init_weights import initialise
from .optim import configure_reference_optimizer, reference_no_decay

log = logging.getLogger("recon_lightning")

DEFAULT_OPTIMIZER: dict[str, float] = {"lr": 1e-4, "weight_decay": 0.05, "head_lr_mult": 10.0}

#: Model keys beside the encoder's (reference name ``cls_dim`` = ``num_parts``).
PARTSEG_KEYS: tuple[str, ...] = (
    "num_parts",
    "num_categories",
    "feature_blocks",
    "label_dim",
    "propagation_dims",
    "head_dims",
    "dropout",
)

#: File names written beside ``results.json`` / into the run folder.
TABLE_FILE = "segmentation_table.md"
FIGURE_FILE = "partseg_examples.png"

#: Explanations written next to the metrics in ``results.json``.
NOTES: dict[str, str] = {
    "last_epoch_miou_instance": (
        "instance mIoU (%) of the final weights on the validation loop's split (the test split "
        "for ShapeNetPart, as the reference)"
    ),
    "best_epoch_miou_instance_test_selected": (
        "the reference's reported instance mIoU: the best epoch, selected on the validation "
        "loop's split, which is the test split (optimistic)"
    ),
    "best_miou_class_running_max": (
        "the reference's printed 'best class mIoU': the running maximum of the class mIoU over "
        "epochs, possibly from another epoch than the best instance mIoU (optimistic)"
    ),
    "test_miou_instance": "instance mIoU (%) of the weights trainer.test ran on",
    "miou_per_category": (
        "per-category mIoU (%) of the test run if there was one, else of the last validation "
        "epoch; the same numbers are in segmentation_table.md"
    ),
}

#: Part colours of the figures (a part's index within its category picks one).
PALETTE = np.array(
    [
        [0.122, 0.467, 0.706],
        [1.000, 0.498, 0.055],
        [0.173, 0.627, 0.173],
        [0.839, 0.153, 0.157],
        [0.580, 0.404, 0.741],
        [0.549, 0.337, 0.294],
        [0.890, 0.467, 0.761],
        [0.498, 0.498, 0.498],
    ]
)


def partseg_config(model: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor kwargs of :func:`build_partseg` from the task's ``model`` section.

    Accepts ``{encoder: {...}, num_parts: 50, num_categories: 16, ...}`` (the Hydra layout) or an
    already flat dict (a saved checkpoint's hyper-parameters, a converted official config).
    ``cls_dim`` is the reference's name of ``num_parts``. Sequences become lists, so the
    hyper-parameters stay plain YAML.

    Raises:
        ValueError: a key that is neither an encoder nor a segmentation-head setting.
    """
    model = dict(plain(model))
    flat = {**encoder_kwargs(model.pop("encoder", None)), **encoder_kwargs(model)}
    if "cls_dim" in model:
        parts = model.pop("cls_dim")
        if model.setdefault("num_parts", parts) != parts:
            raise ValueError(f"cls_dim={parts} contradicts num_parts={model['num_parts']}")
    unknown = sorted(set(model) - set(PARTSEG_KEYS) - set(ENCODER_KEYS) - {"encoder_dims"})
    if unknown:
        raise ValueError(
            f"unknown part-segmentation model settings {unknown}; expected encoder settings "
            f"{list(ENCODER_KEYS)} or {list(PARTSEG_KEYS)}"
        )
    for key in PARTSEG_KEYS:
        value = model.get(key)
        if value is not None:
            flat[key] = list(value) if isinstance(value, Sequence) else value
    return flat


@dataclass
class SegmentationExample:
    """One evaluated shape kept for the figures: (N, 3) points, (N,) predicted and true global
    part ids, its category."""

    points: np.ndarray
    pred: np.ndarray
    target: np.ndarray
    category: int


class PartSegmentationTask(pl.LightningModule):
    """Fine-tuning of the ReCon part-segmentation model; see the module docstring.

    Args:
        model: ``{encoder: {trans_dim, depth, num_heads, num_group, group_size, drop_path_rate},
            num_parts, num_categories}`` and optionally ``feature_blocks``, ``label_dim``,
            ``propagation_dims``, ``head_dims``, ``dropout`` (see
            :class:`~recon_lightning.models.ReConPartSegmentation`).
        ckpt_path: starting weights: our pretraining ``.ckpt``, an official pretraining
            checkpoint (the encoder loads; the head stays new and is reported), or a
            segmentation checkpoint, ours or the reference's ``best_model.pth`` (everything
            loads); None keeps the random initialisation.
        optimizer: ``lr`` (1e-4), ``weight_decay`` (0.05), ``head_lr_mult`` (10).
        scheduler: kwargs of :class:`~recon_lightning.tasks.optim.ReferenceCosineLR`
            (``epochs: null`` follows ``trainer.max_epochs``).
        double_step: two AdamW steps per batch, the first unclipped, as the reference.
        all_points_method: how ``eval_all_points`` batches carry predictions to every point:
            ``three_nn`` (inverse-distance weights of the 3 nearest sampled points) or
            ``nearest``.
        num_examples: shapes (of distinct categories where possible) kept from each evaluation
            for the figure and the W&B point clouds; 0 disables both.
        setting: extra facts for ``results.json``.
    """

    #: Item format this task needs from a DataModule that can serve several (SyntheticShapes).
    data_mode = "partseg"

    def __init__(
        self,
        model: Mapping[str, Any],
        ckpt_path: str | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        double_step: bool = False,
        all_points_method: str = "three_nn",
        num_examples: int = 4,
        setting: Mapping[str, Any] | None = None,
        compile: bool = False,
    ) -> None:
        super().__init__()
        if all_points_method not in ("three_nn", "nearest"):
            raise ValueError(
                f"all_points_method must be 'three_nn' or 'nearest'; got {all_points_method!r}"
            )
        config = partseg_config(model)
        self.optimizer_cfg = {**DEFAULT_OPTIMIZER, **(plain(optimizer) or {})}
        self.scheduler_cfg = dict(plain(scheduler) or {})
        self.double_step = bool(double_step)
        self.all_points_method = all_points_method
        self.num_examples = int(num_examples)
        self.setting = dict(plain(setting) or {})
        # ckpt_path is not a hyper-parameter: a saved task restores from its own state dict.
        self.save_hyperparameters(
            {
                "model": config,
                "optimizer": self.optimizer_cfg,
                "scheduler": self.scheduler_cfg,
                "double_step": self.double_step,
                "all_points_method": all_points_method,
                "num_examples": self.num_examples,
                "setting": self.setting,
            }
        )
        self.model: ReConPartSegmentation = build_partseg(**config)
        self.init_checkpoint = None if ckpt_path is None else str(ckpt_path)
        self.init_report = initialise(self.model, ckpt_path, "part segmentation")
        if compile:  # the encoder blocks; the point ops stay eager
            compile_blocks(self.model)

        # Until a DataModule says otherwise: ShapeNetPart's layout when the head fits it, else
        # every part allowed for every category (no restriction).
        num_parts, num_categories = self.model.num_parts, self.model.num_categories
        if num_parts >= NUM_PARTS and num_categories >= len(CLASS_NAMES):
            table = part_mask(CATEGORY_TO_PARTS, num_parts)
            names = list(CLASS_NAMES)
        else:
            table = torch.ones(num_categories, num_parts, dtype=torch.bool)
            names = [f"category_{c}" for c in range(num_categories)]
        self.class_names: list[str] = names
        self.register_buffer("part_table", table, persistent=False)
        self.val_iou = PartSegmentationIoU(table)
        self.test_iou = PartSegmentationIoU(table)
        #: (epoch, instance mIoU %, class mIoU %) of every validation epoch (sanity checks
        #: excluded).
        self.val_history: list[tuple[int, float, float]] = []
        #: The last evaluation's full metric dict (per category included), and its stage.
        self.last_eval: dict[str, torch.Tensor] | None = None
        self.last_eval_stage: str | None = None
        self.test_metrics: dict[str, float] = {}
        self.examples: list[SegmentationExample] = []
        self._collecting: list[SegmentationExample] = []

    # ------------------------------------------------------------------ parts layout

    def set_part_layout(
        self,
        category_to_parts: Mapping[int, Sequence[int]] | Sequence[Sequence[int]],
        class_names: Sequence[str] | None = None,
    ) -> None:
        """Use a dataset's category -> global parts layout for predictions and metrics.

        Raises:
            ValueError: more categories or parts than the model has outputs for.
        """
        table = part_mask(category_to_parts, None)
        categories, parts = table.shape
        if parts > self.model.num_parts or categories > self.model.num_categories:
            raise ValueError(
                f"the dataset has {categories} categories and {parts} part labels but the model "
                f"takes {self.model.num_categories} categories and outputs "
                f"{self.model.num_parts} parts; raise task.model.num_categories / num_parts"
            )
        table = F.pad(table, (0, self.model.num_parts - parts))
        names = list(class_names) if class_names is not None else []
        if len(names) != categories:
            names = [f"category_{c}" for c in range(categories)]
        self.class_names = names
        if table.shape == self.part_table.shape and torch.equal(table, self.part_table.cpu()):
            return
        self.part_table = table.to(self.part_table.device)
        self.val_iou = PartSegmentationIoU(table).to(self.part_table.device)
        self.test_iou = PartSegmentationIoU(table).to(self.part_table.device)

    def setup(self, stage: str) -> None:
        """Take the part layout from the DataModule; fail early on a classification DataModule."""
        dm = datamodule_of(self)
        if dm is None:
            return
        mode = getattr(dm, "mode", "partseg")
        if mode != "partseg":
            raise ValueError(
                f"the part-segmentation task needs part-labelled batches; the DataModule is in "
                f"mode={mode!r} (SyntheticShapes: data=synthetic with mode auto or partseg)"
            )
        layout = getattr(dm, "category_to_parts", None)
        if layout is None:
            raise ValueError(
                f"{type(dm).__name__} has no category_to_parts: the part-segmentation task needs "
                "a part-labelled DataModule (data=shapenetpart or data=synthetic)"
            )
        self.set_part_layout(layout, getattr(dm, "class_names", None))

    # ------------------------------------------------------------------ model

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """(B, N, 3) points and (B,) categories -> (B, N, num_parts) log-probabilities."""
        return self.model(points, category)

    def predict_parts(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        """(B, N, 3), (B,) -> (B, N) int64 global part ids, restricted to each category's parts."""
        return masked_argmax(self.model(points, category), category, self.part_table)

    # ------------------------------------------------------------------ training

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        points, seg = batch["points"], batch["seg"]
        category = batch["category"].reshape(-1)
        log_probs = self.model(points, category)  # (B, N, P)
        # The reference's NLL over every point of the batch (mean over B·N).
        loss = F.nll_loss(log_probs.transpose(1, 2), seg)
        # The reference's training accuracy: unrestricted argmax over all parts.
        acc = 100.0 * (log_probs.detach().argmax(-1) == seg).float().mean()
        b = points.shape[0]
        # Per step: this rank's loss, no collective; the epoch mean is reduced once per epoch.
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        self.log(
            "train/loss_epoch", loss, on_step=False, on_epoch=True, batch_size=b, sync_dist=True
        )
        self.log("train/acc", acc, batch_size=b, on_step=False, on_epoch=True, sync_dist=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """``double_step``: the reference's first, unclipped AdamW step on the fresh gradients.

        Lightning calls this hook after the backward pass and before it clips the gradients and
        steps, so the batch ends with two steps on the same gradients, the second clipped.
        """
        if not self.double_step:
            return
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and not all(bool(torch.isfinite(g).all()) for g in grads):
            return  # fp16: the scaler will skip this batch's step too
        optimizer.step()

    # ------------------------------------------------------------------ evaluation

    def _evaluate_batch(self, batch: Mapping[str, Any], metric: PartSegmentationIoU) -> None:
        points = batch["points"]
        category = batch["category"].reshape(-1)
        log_probs = self.model(points, category)
        pred = masked_argmax(log_probs, category, self.part_table)
        if "points_all" in batch:
            values = propagate_to_all_points(
                points,
                log_probs,
                batch["points_all"],
                method=self.all_points_method,
                backend=self.model.encoder.group_backend,
            )
            pred_all = masked_argmax(values, category, self.part_table)
            metric.update(pred_all, batch["seg_all"], category, batch["mask_all"])
        else:
            metric.update(pred, batch["seg"], category)
        self._collect_examples(points, pred, batch["seg"], category)

    def _collect_examples(
        self, points: torch.Tensor, pred: torch.Tensor, seg: torch.Tensor, category: torch.Tensor
    ) -> None:
        """Keep up to ``num_examples`` shapes, one per category first (the test split is sorted
        by category, so the first batch alone would show one category)."""
        if len(self._collecting) >= self.num_examples:
            return
        seen = {ex.category for ex in self._collecting}
        for k, cat in enumerate(category.tolist()):
            if len(self._collecting) >= self.num_examples:
                break
            if cat in seen:
                continue
            seen.add(cat)
            self._collecting.append(
                SegmentationExample(
                    points=points[k].detach().float().cpu().numpy(),
                    pred=pred[k].cpu().numpy(),
                    target=seg[k].cpu().numpy(),
                    category=int(cat),
                )
            )

    def on_validation_epoch_start(self) -> None:
        self._collecting = []

    def on_test_epoch_start(self) -> None:
        self._collecting = []

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate_batch(batch, self.val_iou)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._evaluate_batch(batch, self.test_iou)

    def on_validation_epoch_end(self) -> None:
        out = self.val_iou.compute()  # synced over DDP ranks
        self.val_iou.reset()
        if self.trainer.sanity_checking:
            return
        inst, cls = 100.0 * float(out["miou_instance"]), 100.0 * float(out["miou_class"])
        self.val_history.append((int(self.current_epoch), inst, cls))
        self._finish_eval(out, "val")
        best_epoch, best_inst = self.best_epoch()
        self.log("val/miou_instance", inst, prog_bar=True, sync_dist=True, reduce_fx="max")
        self.log("val/miou_class", cls, prog_bar=True, sync_dist=True, reduce_fx="max")
        self.log("val/acc", 100.0 * float(out["accuracy"]), sync_dist=True, reduce_fx="max")
        self.log("val/miou_instance_best", best_inst, sync_dist=True, reduce_fx="max")
        self.log("val/miou_instance_best_epoch", float(best_epoch), sync_dist=True, reduce_fx="max")
        self.log("val/miou_class_best", self.best_class_miou()[1], sync_dist=True, reduce_fx="max")

    def on_test_epoch_end(self) -> None:
        out = self.test_iou.compute()
        self.test_iou.reset()
        self._finish_eval(out, "test")
        metrics = {
            "test/miou_instance": 100.0 * float(out["miou_instance"]),
            "test/miou_class": 100.0 * float(out["miou_class"]),
            "test/acc": 100.0 * float(out["accuracy"]),
        }
        self.test_metrics = metrics
        for name, value in metrics.items():
            self.log(name, value, sync_dist=True, reduce_fx="max")

    def _finish_eval(self, out: dict[str, torch.Tensor], stage: str) -> None:
        self.last_eval = {k: v.detach().cpu() for k, v in out.items()}
        self.last_eval_stage = stage
        self.examples = list(self._collecting)

    def best_epoch(self) -> tuple[int, float]:
        """``(epoch, instance mIoU %)`` of the best validation epoch so far (earliest on ties);
        the reference saves ``best_model.pth`` on this."""
        if not self.val_history:
            raise RuntimeError("no validation epoch has run yet")
        epoch, inst, _ = max(self.val_history, key=lambda item: (item[1], -item[0]))
        return epoch, inst

    def best_class_miou(self) -> tuple[int, float]:
        """``(epoch, class mIoU %)`` of the running maximum the reference prints."""
        if not self.val_history:
            raise RuntimeError("no validation epoch has run yet")
        epoch, _, cls = max(self.val_history, key=lambda item: (item[2], -item[0]))
        return epoch, cls

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        """(B, N) part ids of a batch, restricted to each shape's category."""
        return self.predict_parts(batch["points"], batch["category"].reshape(-1))

    # ------------------------------------------------------------------ optimisation

    def configure_optimizers(self) -> dict[str, Any]:
        head = set(self.model.head_parameter_names())

        # The reference decides "no decay" on its own names (e.g. ``cls_token``): map ours back.
        def no_decay(name: str, p: torch.Tensor) -> bool:
            return reference_no_decay(to_official(name, "partseg") or name, p)

        return configure_reference_optimizer(
            self,
            self.model.named_parameters(),
            self.optimizer_cfg,
            self.scheduler_cfg,
            is_no_decay=no_decay,
            is_head=lambda name: name in head,
        )

    # ------------------------------------------------------------------ figures

    def on_fit_end(self) -> None:
        self._publish_examples("val")

    def _publish_examples(self, stage: str) -> None:
        """The PNG into the run folder and, with a W&B logger, the point clouds (rank zero)."""
        if not self.examples or self._trainer is None or not self.trainer.is_global_zero:
            return
        folder = Path(self.trainer.default_root_dir)
        try:
            self.write_figure(folder / FIGURE_FILE)
        except OSError as err:  # a figure is never worth failing a finished run
            log.warning("could not write %s: %s", folder / FIGURE_FILE, err)
        self._log_wandb_examples(stage)

    def _local_parts(self, example: SegmentationExample, labels: np.ndarray) -> np.ndarray:
        """Global part ids -> index within the example's category (colour choice)."""
        row = self.part_table[example.category].cpu().numpy()
        position = np.cumsum(row) - 1
        return np.where(row[labels], position[labels], len(PALETTE) - 1) % len(PALETTE)

    def write_figure(self, path: str | Path) -> Path | None:
        """A PNG of the kept examples: prediction (left) beside ground truth (right).

        Returns:
            The written path, or None when no evaluation has kept examples.
        """
        if not self.examples:
            return None
        from matplotlib.figure import Figure  # Agg through savefig; no global backend change

        rows = len(self.examples)
        fig = Figure(figsize=(6.4, 3.2 * rows))
        for r, ex in enumerate(self.examples):
            name = self.class_names[ex.category] if ex.category < len(self.class_names) else ""
            correct = 100.0 * float((ex.pred == ex.target).mean())
            for c, (labels, title) in enumerate(
                ((ex.pred, f"{name}: predicted ({correct:.0f}% right)"), (ex.target, "truth"))
            ):
                ax = fig.add_subplot(rows, 2, 2 * r + c + 1, projection="3d")
                p = ex.points
                # Shapes stand along y: show y as matplotlib's vertical axis.
                ax.scatter(
                    p[:, 0], p[:, 2], p[:, 1], c=PALETTE[self._local_parts(ex, labels)], s=1.0
                )
                ax.set_title(title, fontsize=9)
                ax.set_axis_off()
                ax.set_box_aspect((1, 1, 1))
                lim = float(np.abs(p).max()) or 1.0
                for setter in (ax.set_xlim, ax.set_ylim, ax.set_zlim):
                    setter(-lim, lim)
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=80)
        return path

    def _log_wandb_examples(self, stage: str) -> None:
        """``wandb.Object3D`` point clouds coloured by predicted part, when W&B logs this run."""
        from lightning.pytorch.loggers import WandbLogger

        loggers = [lg for lg in self.loggers if isinstance(lg, WandbLogger)]
        if not loggers:
            return
        try:
            import wandb
        except ImportError:
            return
        clouds = []
        for ex in self.examples:
            for labels, kind in ((ex.pred, "predicted"), (ex.target, "truth")):
                rgb = 255.0 * PALETTE[self._local_parts(ex, labels)]
                name = self.class_names[ex.category] if ex.category < len(self.class_names) else ""
                cloud = np.concatenate([ex.points, rgb], axis=1)
                clouds.append(wandb.Object3D(cloud, caption=f"{name} {kind}"))
        for logger in loggers:
            logger.experiment.log({f"{stage}/segmentations": clouds})

    # ------------------------------------------------------------------ state and results

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["val_history"] = [list(item) for item in self.val_history]

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.val_history = [
            (int(e), float(i), float(c)) for e, i, c in checkpoint.get("val_history", [])
        ]

    def check_trained(self) -> None:
        """Raise unless every model entry came from ``ckpt_path`` (recon-eval of a trained net)."""
        what = "recon-eval (part segmentation)"
        if self.init_report is None:
            raise ValueError(
                f"{what} evaluates a trained model: pass ckpt_path=<fine-tuned segmentation "
                "checkpoint> (ours, or the reference's best_model.pth)"
            )
        missing = self.init_report.missing
        if missing:
            raise ValueError(
                f"{what}: {self.init_checkpoint} leaves {len(missing)} entries randomly "
                f"initialised ({', '.join(missing[:6])}{', ...' if len(missing) > 6 else ''}); "
                "this looks like a pretraining checkpoint, not a fine-tuned segmentation model. "
                "Fine-tune it first: recon-train experiment=partseg_shapenetpart ckpt_path=..."
            )

    def evaluate(self, trainer: pl.Trainer, datamodule: pl.LightningDataModule) -> dict[str, float]:
        """``recon-eval``: instance/class mIoU of a fine-tuned segmentation checkpoint."""
        self.check_trained()
        trainer.test(self, datamodule=datamodule)
        self._publish_examples("test")
        return dict(self.test_metrics)

    def per_category(self) -> dict[str, Any]:
        """``{name: mIoU %}`` and ``{name: shapes}`` of the last evaluation (empty if none)."""
        if self.last_eval is None:
            return {}
        values = self.last_eval["miou_per_category"].tolist()
        counts = self.last_eval["shapes_per_category"].tolist()
        names = self.class_names
        return {
            "miou_per_category": {
                n: None if math.isnan(v) else 100.0 * v for n, v in zip(names, values, strict=True)
            },
            "shapes_per_category": dict(zip(names, (int(c) for c in counts), strict=True)),
            "per_category_from": self.last_eval_stage,
        }

    def results(self, info: Mapping[str, Any]) -> dict[str, Any]:
        """This run's ``results.json`` record (see :mod:`recon_lightning.evaluation.results`)."""
        metrics: dict[str, Any] = {}
        if self.val_history:
            last_epoch, last_inst, last_cls = self.val_history[-1]
            best_epoch, best_inst = self.best_epoch()
            cls_epoch, best_cls = self.best_class_miou()
            metrics.update(
                last_epoch=last_epoch,
                last_epoch_miou_instance=last_inst,
                last_epoch_miou_class=last_cls,
                best_epoch=best_epoch,
                best_epoch_miou_instance_test_selected=best_inst,
                best_miou_class_running_max=best_cls,
                best_miou_class_epoch=cls_epoch,
                epochs_validated=len(self.val_history),
            )
        names = {
            "test/miou_instance": "test_miou_instance",
            "test/miou_class": "test_miou_class",
            "test/acc": "test_acc",
        }
        metrics.update({names[k]: v for k, v in self.test_metrics.items()})
        metrics.update(self.per_category())
        # The final weights' number; None when neither a validation epoch nor a test ran.
        headline = next(
            (m for m in ("test_miou_instance", "last_epoch_miou_instance") if m in metrics), None
        )
        dm = datamodule_of(self)
        setting = {
            "dataset": getattr(dm, "dataset_name", None),
            "val_split": getattr(dm, "val_split", None),
            "test_split": getattr(dm, "test_split", None),
            "npoints": getattr(dm, "npoints", None),
            "eval_all_points": bool(getattr(dm, "eval_all_points", False)),
            "num_parts": self.model.num_parts,
            "num_categories": self.model.num_categories,
            "double_step": self.double_step,
            "initialised_from": self.init_checkpoint,
            "random_init_entries": None if self.init_report is None else self.init_report.missing,
            **self.setting,
        }
        notes = {k: v for k, v in NOTES.items() if k in metrics}
        return build_results("partseg", info, metrics, headline, setting, notes)

    def write_results(self, path: str | Path, info: Mapping[str, Any]) -> Path:
        """Write :meth:`results` atomically to ``path`` and the per-category Markdown table
        (:data:`TABLE_FILE`) beside it."""
        path = write_json_atomic(path, self.results(info))
        if self.last_eval is not None:
            stage = "test run" if self.last_eval_stage == "test" else "last validation epoch"
            table = segmentation_table(self.last_eval, self.class_names)
            text = f"Part segmentation, {stage} (mIoU in %)\n\n{table}\n"
            write_text_atomic(path.parent / TABLE_FILE, text)
        return path
