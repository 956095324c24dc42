"""Part-segmentation metrics with the reference's conventions (ShapeNetPart mIoU).

Per shape, the IoU of every part of the shape's category is computed over its points and
averaged; a part absent from both the prediction and the ground truth counts as IoU 1 (the
reference's ``segmentation/main.py``). Then:

- instance mIoU (``miou_instance``): the mean over all shapes;
- class mIoU (``miou_class``): the mean over categories of the per-category mean over shapes.
  The reference averages all 16 categories (NaN if one is missing from the data); here it is the
  mean over the categories present, which is the same number on the full test split.

Predictions are argmax restricted to the category's parts (:func:`masked_argmax`), as the
reference does with ``np.argmax(logits[:, seg_classes[cat]]) + seg_classes[cat][0]``.

Values are fractions in [0, 1]; :func:`segmentation_table` prints percentages.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

from recon_lightning.data.shapenetpart import CATEGORY_TO_PARTS, CLASS_NAMES, part_mask

PartsSpec = Mapping[int, Sequence[int]] | Sequence[Sequence[int]] | torch.Tensor


def _as_part_mask(
    category_to_parts: PartsSpec, num_parts: int | None, device: torch.device | None
) -> torch.Tensor:
    """A (C, P) bool table from a table or a category -> parts mapping."""
    if isinstance(category_to_parts, torch.Tensor):
        if category_to_parts.dim() != 2 or category_to_parts.dtype != torch.bool:
            raise ValueError(
                "a part table must be a (C, P) bool tensor; got "
                f"{category_to_parts.dtype} {tuple(category_to_parts.shape)}"
            )
        return category_to_parts.to(device)
    return part_mask(category_to_parts, num_parts, device)


def masked_argmax(
    log_probs: torch.Tensor,
    category: torch.Tensor,
    category_to_parts: PartsSpec = CATEGORY_TO_PARTS,
) -> torch.Tensor:
    """Per-point part label, restricted to the parts of each shape's category.

    Args:
        log_probs: (B, N, P) per-point scores (log-probabilities or logits) over all P parts.
        category: (B,) int category of each shape.
        category_to_parts: global part labels per category (default: ShapeNetPart's), or a
            (C, P) bool table such as :func:`~recon_lightning.data.shapenetpart.part_mask`.

    Returns:
        (B, N) int64 global part labels; ties go to the lowest label, as ``np.argmax``.
    """
    if log_probs.dim() != 3 or category.shape != log_probs.shape[:1]:
        raise ValueError(
            f"expected log_probs (B, N, P) and category (B,); got {tuple(log_probs.shape)} and "
            f"{tuple(category.shape)}"
        )
    table = _as_part_mask(category_to_parts, log_probs.shape[-1], log_probs.device)
    if table.shape[1] != log_probs.shape[-1]:
        raise ValueError(
            f"the part table has {table.shape[1]} parts, log_probs {log_probs.shape[-1]}"
        )
    allowed = table[category.long()]  # (B, P)
    scores = log_probs.masked_fill(~allowed.unsqueeze(1), float("-inf"))
    return scores.argmax(dim=-1)


def shape_part_ious(
    pred: torch.Tensor,
    target: torch.Tensor,
    category: torch.Tensor,
    table: torch.Tensor,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean part IoU of each shape over its category's parts (absent in both -> 1).

    Args:
        pred: (B, N) int predicted global part labels.
        target: (B, N) int ground-truth global part labels.
        category: (B,) int categories.
        table: (C, P) bool part table.
        mask: (B, N) bool; only True points count (padding of ``eval_all_points`` batches).

    Returns:
        (B,) float64 per-shape mean IoU.
    """
    b, n = target.shape
    num_parts = table.shape[1]
    if pred.shape != target.shape or category.shape != (b,):
        raise ValueError(
            f"expected pred and target (B, N) and category (B,); got {tuple(pred.shape)}, "
            f"{tuple(target.shape)}, {tuple(category.shape)}"
        )
    if mask is None:
        mask = torch.ones_like(target, dtype=torch.bool)
    elif mask.shape != target.shape:
        raise ValueError(f"mask must be (B, N) = {(b, n)}; got {tuple(mask.shape)}")
    category = category.long()
    if b and (category.min() < 0 or category.max() >= table.shape[0]):
        raise ValueError(f"category labels must lie in [0, {table.shape[0]})")
    mask = mask.bool()
    shape_idx = torch.arange(b, device=target.device).unsqueeze(1).expand(b, n)[mask]
    t, p = target[mask].long(), pred[mask].long()
    for name, labels in (("target", t), ("pred", p)):
        if labels.numel() and (labels.min() < 0 or labels.max() >= num_parts):
            raise ValueError(f"{name} part labels must lie in [0, {num_parts}) on counted points")
    if t.numel() and not table[category[shape_idx], t].all():
        raise ValueError("a target part label does not belong to its shape's category")
    # Per (shape, part) counts as flat bincounts (unweighted: deterministic on CUDA too).
    size = b * num_parts
    t_flat, p_flat = shape_idx * num_parts + t, shape_idx * num_parts + p
    tgt = torch.bincount(t_flat, minlength=size).view(b, num_parts)
    prd = torch.bincount(p_flat, minlength=size).view(b, num_parts)
    inter = torch.bincount(t_flat[t == p], minlength=size).view(b, num_parts)
    union = (tgt + prd - inter).double()
    iou = torch.where(union > 0, inter.double() / union.clamp_min(1), torch.ones_like(union))
    own = table[category].double()  # (B, P): the parts that count for each shape
    return (iou * own).sum(1) / own.sum(1)


class PartSegmentationIoU(Metric):
    """Instance, class and per-category mIoU of part segmentation; DDP-safe sums.

    States (all ``sum``-reduced, so a DDP sync or :meth:`merge_state` is exact): the per-category
    sum of shape IoUs and number of shapes, plus correct/total point counts for the accuracy.
    Under DDP, Lightning's distributed sampler repeats a few shapes to even out the ranks; they
    count twice (use one device, or a sampler without padding, for exact test numbers).

    Args:
        category_to_parts: global part labels per category (default: ShapeNetPart's 16 -> 50),
            or a (C, P) bool table.
        num_parts: P when ``category_to_parts`` is a mapping (default: largest label + 1).
        kwargs: passed to :class:`torchmetrics.Metric`.

    ``update(pred, target, category, mask=None)``: pred/target (B, N) int global part labels,
    category (B,) int, mask (B, N) bool (True on points that count).

    ``compute()`` returns a dict of float32 tensors: ``miou_instance`` (), ``miou_class`` (),
    ``miou_per_category`` (C,) with NaN for categories without shapes, ``shapes_per_category``
    (C,) int64 and ``accuracy`` () (fraction of counted points labelled correctly).
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    iou_sum: torch.Tensor
    shape_count: torch.Tensor
    correct: torch.Tensor
    total: torch.Tensor

    def __init__(
        self,
        category_to_parts: PartsSpec = CATEGORY_TO_PARTS,
        num_parts: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        table = _as_part_mask(category_to_parts, num_parts, None).cpu()
        if not table.any(1).all():
            raise ValueError("every category needs at least one part")
        self.register_buffer("part_table", table, persistent=False)
        c = table.shape[0]
        # float64: sums over thousands of shapes keep the reference's float precision.
        self.add_state("iou_sum", torch.zeros(c, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("shape_count", torch.zeros(c, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("correct", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    @property
    def num_categories(self) -> int:
        """C, the number of categories."""
        return int(self.part_table.shape[0])

    def update(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        category: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> None:
        """Add a batch: pred/target (B, N) int, category (B,) int, mask (B, N) bool or None."""
        table = self.part_table.to(target.device)
        ious = shape_part_ious(pred, target, category, table, mask)
        # One-hot matmul instead of index_add_: deterministic on CUDA.
        onehot = torch.nn.functional.one_hot(category.long(), self.num_categories).double()
        self.iou_sum += onehot.T @ ious
        self.shape_count += onehot.sum(0).long()
        counted = torch.ones_like(target, dtype=torch.bool) if mask is None else mask.bool()
        self.correct += ((pred == target) & counted).sum()
        self.total += counted.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        """Instance/class/per-category mIoU and point accuracy; see the class docstring."""
        count = self.shape_count
        per_category = self.iou_sum / count.double()  # NaN where no shapes (0 / 0)
        present = count > 0
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=count.device)
        instance = self.iou_sum.sum() / count.sum() if present.any() else nan
        klass = per_category[present].mean() if present.any() else nan
        accuracy = self.correct.double() / self.total if self.total > 0 else nan
        return {
            "miou_instance": instance.float(),
            "miou_class": klass.float(),
            "miou_per_category": per_category.float(),
            "shapes_per_category": count.clone(),
            "accuracy": accuracy.float(),
        }


def _value(x: Any) -> float:
    return float(x.item() if isinstance(x, torch.Tensor) else x)


def segmentation_table(
    results: Mapping[str, Any],
    class_names: Sequence[str] = CLASS_NAMES,
    digits: int = 2,
) -> str:
    """A Markdown table of per-category mIoU, then class and instance mIoU, in percent.

    Args:
        results: :meth:`PartSegmentationIoU.compute`'s dict (tensors or plain numbers; the
            per-category entries as a sequence or tensor in category order).
        class_names: category names in label order.
        digits: decimals of the percentages.

    Returns:
        The table; categories without shapes show ``–``.
    """
    per_category = [_value(v) for v in results["miou_per_category"]]
    if len(per_category) != len(class_names):
        raise ValueError(
            f"{len(per_category)} per-category values but {len(class_names)} class names"
        )
    raw_counts = results.get("shapes_per_category")
    counts = (
        [str(int(_value(v))) for v in raw_counts]
        if raw_counts is not None
        else [""] * len(per_category)
    )
    total = str(sum(int(c) for c in counts)) if raw_counts is not None else ""

    def pct(v: float) -> str:
        return "–" if math.isnan(v) else f"{100.0 * v:.{digits}f}"

    lines = ["| Category | Shapes | mIoU (%) |", "|---|---:|---:|"]
    for name, value, count in zip(class_names, per_category, counts, strict=True):
        lines.append(f"| {name} | {count} | {pct(value)} |")
    lines.append(f"| **Class mIoU** | | {pct(_value(results['miou_class']))} |")
    lines.append(f"| **Instance mIoU** | {total} | {pct(_value(results['miou_instance']))} |")
    return "\n".join(lines)
