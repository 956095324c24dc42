"""Part-segmentation mIoU against hand-computed values, masked argmax, DDP-style state merging."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics.utilities.data import dim_zero_sum

from recon_lightning.data.shapenetpart import CATEGORY_TO_PARTS, CLASS_NAMES, part_mask
from recon_lightning.evaluation.segmentation_metrics import (
    PartSegmentationIoU,
    masked_argmax,
    segmentation_table,
    shape_part_ious,
)

AIRPLANE, BAG, MUG = 0, 1, 11


def _reference_shape_iou(pred: list[int], target: list[int], category: int) -> float:
    """The reference's loop (segmentation/main.py), transcribed."""
    parts = CATEGORY_TO_PARTS[category]
    ious = []
    for part in parts:
        in_t = [t == part for t in target]
        in_p = [p == part for p in pred]
        if not any(in_t) and not any(in_p):
            ious.append(1.0)
        else:
            inter = sum(a and b for a, b in zip(in_t, in_p, strict=True))
            union = sum(a or b for a, b in zip(in_t, in_p, strict=True))
            ious.append(inter / union)
    return sum(ious) / len(ious)


def test_hand_computed_shape_ious() -> None:
    # Airplane (parts 0-3): part 0: inter 2 / union 3; part 1: 1 / 4; part 2: 0 / 2; part 3
    # absent from both -> 1. Mean (2/3 + 1/4 + 0 + 1) / 4.
    airplane = ([0, 0, 1, 1, 2, 0], [0, 0, 1, 2, 1, 1])
    # Bag (4, 5): perfect on part 4, part 5 absent from both -> 1, 1.
    bag = ([4, 4, 4, 4, 4, 4], [4, 4, 4, 4, 4, 4])
    pred = torch.tensor([airplane[0], bag[0]])
    target = torch.tensor([airplane[1], bag[1]])
    category = torch.tensor([AIRPLANE, BAG])
    ious = shape_part_ious(pred, target, category, part_mask())
    expected_airplane = (2 / 3 + 1 / 4 + 0 + 1) / 4
    torch.testing.assert_close(ious, torch.tensor([expected_airplane, 1.0], dtype=torch.float64))
    assert ious[0].item() == pytest.approx(_reference_shape_iou(*airplane, AIRPLANE))


def test_prediction_of_a_foreign_part_counts_as_a_miss() -> None:
    # A Mug point predicted as an Airplane part: part 36 loses it from its intersection; the
    # foreign part is not among the Mug's parts, so it adds no IoU term of its own.
    pred, target = [36, 0, 37, 37], [36, 36, 37, 37]
    metric = PartSegmentationIoU()
    metric.update(torch.tensor([pred]), torch.tensor([target]), torch.tensor([MUG]))
    out = metric.compute()
    expected = (1 / 2 + 1.0) / 2
    assert out["miou_instance"].item() == pytest.approx(expected)
    assert out["miou_instance"].item() == pytest.approx(_reference_shape_iou(pred, target, MUG))
    assert out["accuracy"].item() == pytest.approx(3 / 4)


def test_instance_class_and_per_category_miou() -> None:
    metric = PartSegmentationIoU()
    # Two airplanes and one mug; Bag (and 13 other categories) absent from the data.
    shapes = [
        ([0, 1, 2, 3], [0, 1, 2, 3], AIRPLANE),  # 1.0
        ([0, 0, 0, 0], [0, 0, 1, 1], AIRPLANE),  # part 0: 2/4, part 1: 0/2, 2 and 3 absent: 1, 1
        ([36, 36, 36, 36], [36, 36, 37, 37], MUG),  # part 36: 2/4, part 37: 0/2
    ]
    for pred, target, cat in shapes:
        metric.update(torch.tensor([pred]), torch.tensor([target]), torch.tensor([cat]))
    out = metric.compute()
    s = [1.0, (0.5 + 0 + 1 + 1) / 4, (0.5 + 0) / 2]
    assert out["miou_instance"].item() == pytest.approx(sum(s) / 3)
    assert out["miou_class"].item() == pytest.approx(((s[0] + s[1]) / 2 + s[2]) / 2)
    per = out["miou_per_category"]
    assert per.shape == (16,)
    assert per[AIRPLANE].item() == pytest.approx((s[0] + s[1]) / 2)
    assert per[MUG].item() == pytest.approx(s[2])
    assert math.isnan(per[BAG].item()) and int(torch.isnan(per).sum()) == 14
    assert out["shapes_per_category"][AIRPLANE] == 2 and out["shapes_per_category"].sum() == 3
    for pred, target, cat in shapes:
        assert _reference_shape_iou(pred, target, cat) == pytest.approx(
            shape_part_ious(
                torch.tensor([pred]), torch.tensor([target]), torch.tensor([cat]), part_mask()
            ).item()
        )


def test_mask_excludes_padding() -> None:
    pred = torch.tensor([[36, 37, 0, 0], [4, 5, 5, 4]])
    target = torch.tensor([[36, 37, -1, -1], [4, 5, 5, 4]])
    mask = target >= 0
    metric = PartSegmentationIoU()
    metric.update(pred, target, torch.tensor([MUG, BAG]), mask=mask)
    out = metric.compute()
    assert out["miou_instance"].item() == pytest.approx(1.0)
    assert out["accuracy"].item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="target part labels"):  # padding without the mask
        metric.update(pred, target, torch.tensor([MUG, BAG]))


def test_invalid_inputs_are_refused() -> None:
    metric = PartSegmentationIoU()
    with pytest.raises(ValueError, match="does not belong"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 36]]), torch.tensor([AIRPLANE]))
    with pytest.raises(ValueError, match="pred part labels"):
        metric.update(torch.tensor([[0, 50]]), torch.tensor([[0, 1]]), torch.tensor([AIRPLANE]))
    with pytest.raises(ValueError, match="category labels"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]), torch.tensor([16]))
    with pytest.raises(ValueError, match=r"\(B, N\)"):
        metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1, 1]]), torch.tensor([0]))
    with pytest.warns(UserWarning, match="before the ``update``"):
        empty = PartSegmentationIoU().compute()
    assert math.isnan(empty["miou_instance"].item()) and math.isnan(empty["miou_class"].item())


def _random_batches(seed: int, count: int) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    table = part_mask()
    batches = []
    for _ in range(count):
        category = torch.randint(0, 16, (5,), generator=g)
        allowed = table[category].float()  # (B, 50)
        target = torch.multinomial(allowed, 64, replacement=True, generator=g)
        noise = torch.multinomial(allowed, 64, replacement=True, generator=g)
        keep = torch.rand(5, 64, generator=g) < 0.7
        pred = torch.where(keep, target, noise)
        batches.append((pred, target, category))
    return batches


def test_merged_states_equal_one_metric_over_all_data() -> None:
    batches = _random_batches(0, 6)
    whole = PartSegmentationIoU()
    for b in batches:
        whole.update(*b)
    # Two "ranks", each with half of the batches, merged as a DDP sync would sum their states.
    rank0, rank1 = PartSegmentationIoU(), PartSegmentationIoU()
    for k, b in enumerate(batches):
        (rank0 if k % 2 == 0 else rank1).update(*b)
    rank0.merge_state(rank1)
    merged, expected = rank0.compute(), whole.compute()
    for key in ("miou_instance", "miou_class", "accuracy"):
        torch.testing.assert_close(merged[key], expected[key])
    torch.testing.assert_close(
        merged["miou_per_category"], expected["miou_per_category"], equal_nan=True
    )
    # The explicit sum of the raw states (what dist_reduce_fx="sum" does) gives the same.
    a, b = PartSegmentationIoU(), PartSegmentationIoU()
    for k, batch in enumerate(batches):
        (a if k < 2 else b).update(*batch)
    for name in ("iou_sum", "shape_count", "correct", "total"):
        assert a._reductions[name] is dim_zero_sum
        setattr(a, name, getattr(a, name) + getattr(b, name))
    torch.testing.assert_close(a.compute()["miou_instance"], expected["miou_instance"])
    # And it matches the reference's per-shape loop.
    shape_ious = {c: [] for c in range(16)}
    for pred, target, category in batches:
        for i in range(len(category)):
            c = int(category[i])
            shape_ious[c].append(_reference_shape_iou(pred[i].tolist(), target[i].tolist(), c))
    flat = [v for vs in shape_ious.values() for v in vs]
    assert expected["miou_instance"].item() == pytest.approx(sum(flat) / len(flat), rel=1e-6)
    present = [sum(vs) / len(vs) for vs in shape_ious.values() if vs]
    assert expected["miou_class"].item() == pytest.approx(sum(present) / len(present), rel=1e-6)


def test_masked_argmax_restricts_to_category_parts() -> None:
    g = torch.Generator().manual_seed(1)
    log_probs = torch.randn(3, 10, 50, generator=g).log_softmax(-1)
    log_probs[:, :, 49] = 10.0  # a foreign part with the highest score everywhere
    category = torch.tensor([AIRPLANE, MUG, 15])
    labels = masked_argmax(log_probs, category)
    assert labels.shape == (3, 10) and labels.dtype == torch.int64
    for b, c in enumerate(category.tolist()):
        parts = list(CATEGORY_TO_PARTS[c])
        # The reference: argmax over the category's columns, plus the first part id.
        expected = log_probs[b][:, parts].argmax(-1) + parts[0]
        assert torch.equal(labels[b], expected)
    assert bool((labels[2] == 49).all())  # Table owns part 49
    assert torch.equal(masked_argmax(log_probs, category, part_mask()), labels)
    with pytest.raises(ValueError, match="B, N, P"):
        masked_argmax(log_probs[0], category)


def test_custom_part_table() -> None:
    metric = PartSegmentationIoU(category_to_parts=[[0, 1], [2]])
    metric.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]), torch.tensor([0]))
    assert metric.compute()["miou_instance"].item() == pytest.approx((1 / 2 + 1 / 2) / 2)
    assert metric.compute()["miou_per_category"].shape == (2,)


def test_markdown_table() -> None:
    metric = PartSegmentationIoU()
    metric.update(torch.tensor([[0, 1]]), torch.tensor([[0, 1]]), torch.tensor([AIRPLANE]))
    metric.update(torch.tensor([[36, 36]]), torch.tensor([[36, 37]]), torch.tensor([MUG]))
    table = segmentation_table(metric.compute())
    lines = table.splitlines()
    assert lines[0] == "| Category | Shapes | mIoU (%) |" and len(lines) == 2 + 16 + 2
    assert lines[2] == "| Airplane | 1 | 100.00 |"
    assert lines[3] == "| Bag | 0 | – |"
    assert lines[2 + MUG] == "| Mug | 1 | 25.00 |"
    assert lines[-2] == "| **Class mIoU** | | 62.50 |"
    assert lines[-1] == "| **Instance mIoU** | 2 | 62.50 |"
    plain = {
        "miou_per_category": [float("nan")] * 15 + [0.5],
        "miou_class": 0.5,
        "miou_instance": 0.5,
    }
    assert segmentation_table(plain, digits=1).splitlines()[-1] == "| **Instance mIoU** |  | 50.0 |"
    with pytest.raises(ValueError, match="class names"):
        segmentation_table(plain, class_names=CLASS_NAMES[:3])
