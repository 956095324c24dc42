"""SyntheticShapes: the embedded default dataset, procedurally generated and needing no download.

Twelve classes of parametric solids and surfaces (see
:data:`~recon_lightning.data.synthetic_geometry.SHAPE_CLASSES`: sphere, cube, cylinder, cone,
torus, pyramid, capsule, spring, bumpy plane, L-bracket, table, hourglass). Each item is a pure
function of ``(seed, split, index)``:

1. the class is ``index % num_classes`` (balanced splits); its sampler draws the surface with
   random proportions;
2. random deformation (anisotropic scale, taper, twist, bend; scaled by ``deformation``), a
   random pose (full turn about y, small tilts), unit-sphere normalisation, Gaussian noise;
3. a rendered image of the whole shape (:mod:`.synthetic_render` z-buffer, ``image_size``
   pixels, random object colour) for pretraining;
4. partial occlusion (with probability ``occlusion``, a random half-space cut drops 10-30% of
   the surface, like a one-sided scan), then ``num_points`` points, renormalised.

Nothing is generated up front, so any ``size`` costs nothing until items are read. In
``pretrain`` mode items mimic ShapeNet-55 (random ``npoints`` subset + normalisation, augmented
224 px image, class description, label, index); in ``classification`` mode they mimic ModelNet /
ScanObjectNN (all ``num_points`` points, shuffled in training, and a label), and the DataModule
does the reference's FPS + subset + augmentation on the device.

``partseg`` mode is a separate family for part segmentation
(:data:`~recon_lightning.data.synthetic_geometry.PART_SHAPE_CLASSES`: table, mug, lamp, rocket,
chair), each shape made of two or three labelled parts, through the same deformation, pose,
noise and occlusion steps. Items follow the ShapeNetPart batch contract: ``npoints`` points drawn
with replacement (fresh in training, seeded per shape otherwise), ``seg`` global part ids,
``category`` and ``index``; the DataModule scales and shifts training clouds on the device as
the reference's segmentation does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import PointCloudDataModule
from .image_transforms import EvalImageTransform, ImageTransform, PretrainImageTransform
from .shapenetpart import part_mask, scale_and_shift
from .synthetic_geometry import PART_SHAPE_CLASSES, SHAPE_CLASSES, part_layout
from .synthetic_render import render_points
from .transforms import normalize_unit_sphere_np

#: Item formats: the two of every PointCloudDataModule plus part segmentation.
SyntheticMode = Literal["pretrain", "classification", "partseg"]
MODES: tuple[str, ...] = ("pretrain", "classification", "partseg")

#: Split name -> stream id mixed into each item's seed, so splits never share shapes.
SPLIT_IDS: dict[str, int] = {"train": 0, "val": 1, "test": 2}

#: Surface points drawn per kept point, so occlusion (which drops at most 30%) leaves enough.
_OVERSAMPLE = 1.5


@dataclass(frozen=True)
class SyntheticSample:
    """One generated shape: (num_points, 3) float32 unit-sphere points, optional image, label,
    and in ``partseg`` mode (num_points,) int64 global part ids ``seg``."""

    points: np.ndarray
    image: np.ndarray | None
    label: int
    seg: np.ndarray | None = None


def _normalize(p: np.ndarray) -> np.ndarray:
    centred = p - p.mean(axis=0, keepdims=True)
    return centred / max(float(np.linalg.norm(centred, axis=1).max()), 1e-9)


def _deform(p: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
    """Anisotropic scale, taper, twist and bend along y; ``strength`` 0 leaves ``p`` unchanged."""
    p = p * np.exp(rng.uniform(-0.3, 0.3, 3) * strength)
    y = p[:, 1] / max(float(np.abs(p[:, 1]).max()), 1e-6)  # height in [-1, 1]
    taper = 1.0 + rng.uniform(-0.25, 0.25) * strength * y
    twist = rng.uniform(-0.6, 0.6) * strength * y
    x, z = p[:, 0] * taper, p[:, 2] * taper
    c, s = np.cos(twist), np.sin(twist)
    bend = rng.uniform(-0.2, 0.2) * strength
    return np.stack([c * x - s * z + bend * p[:, 1] ** 2, p[:, 1], s * x + c * z], axis=1)


def _random_pose(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Small tilts about x and z, then a full random turn about y (points right-multiplied)."""
    ax, az = rng.uniform(-0.25, 0.25, 2)
    ay = rng.uniform(0, 2 * math.pi)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    return p @ (rx @ rz @ ry)


def _random_color(rng: np.random.Generator) -> np.ndarray:
    """A random saturated RGB colour in [0, 1] (HSV with S in [0.3, 0.8], V in [0.7, 1])."""
    h, s, v = rng.uniform(0, 1), rng.uniform(0.3, 0.8), rng.uniform(0.7, 1.0)
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


class SyntheticShapes(Dataset):
    """Procedural labelled shapes; see the module docstring.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: number of items in the split.
        seed: dataset seed; the same seed gives identical shapes and images.
        mode: ``"pretrain"``, ``"classification"`` or ``"partseg"`` item format.
        num_points: stored points per shape.
        npoints: points per item in pretrain mode (random subset of ``num_points``) and in
            partseg mode (drawn with replacement); unused in classification mode, where the
            DataModule samples on the device.
        num_classes: use the first ``num_classes`` of the 12 shape classes (>= 2).
        part_categories: partseg mode: use the first ``part_categories`` of the part-labelled
            classes (>= 1; default: all five).
        image_size: rendering resolution (before the 224 px image pipeline).
        deformation: strength of the random deformation (0 = none, 1 = default).
        noise: standard deviation of the Gaussian point noise (unit-sphere units).
        occlusion: probability that a shape is cut by a random half-space.
        image_transform: override the image pipeline (default: reference train augmentation for
            the train split, deterministic resize otherwise).
    """

    def __init__(
        self,
        split: str = "train",
        size: int = 1024,
        seed: int = 0,
        mode: SyntheticMode = "classification",
        num_points: int = 2048,
        npoints: int = 1024,
        num_classes: int = len(SHAPE_CLASSES),
        image_size: int = 128,
        deformation: float = 1.0,
        noise: float = 0.01,
        occlusion: float = 0.5,
        image_transform: ImageTransform | None = None,
        part_categories: int | None = None,
    ) -> None:
        if split not in SPLIT_IDS:
            raise ValueError(f"split must be one of {sorted(SPLIT_IDS)}; got {split!r}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if not 2 <= num_classes <= len(SHAPE_CLASSES):
            raise ValueError(f"num_classes must be in [2, {len(SHAPE_CLASSES)}]; got {num_classes}")
        if part_categories is not None and not 1 <= part_categories <= len(PART_SHAPE_CLASSES):
            raise ValueError(
                f"part_categories must be in [1, {len(PART_SHAPE_CLASSES)}]; got {part_categories}"
            )
        if mode == "partseg" and npoints < 1:
            raise ValueError(f"partseg needs npoints >= 1; got {npoints}")
        if size < 0 or num_points < 1:
            raise ValueError(f"need size >= 0, num_points >= 1; got {size}, {num_points}")
        if mode == "pretrain" and not 1 <= npoints <= num_points:
            raise ValueError(
                f"pretrain needs 1 <= npoints <= num_points={num_points}; got {npoints}"
            )
        if not 0.0 <= occlusion <= 1.0:
            raise ValueError(f"occlusion is a probability in [0, 1]; got {occlusion}")
        self.split, self.size, self.seed, self.mode = split, int(size), int(seed), mode
        self.num_points, self.npoints, self.num_classes = int(num_points), int(npoints), num_classes
        self.category_to_parts = part_layout(part_categories)
        if mode == "partseg":
            # The categories are the part-labelled classes, whatever num_classes says.
            self.num_classes = len(self.category_to_parts)
        self.image_size = int(image_size)
        self.deformation, self.noise, self.occlusion = float(deformation), float(noise), occlusion
        if image_transform is None and mode == "pretrain":
            image_transform = PretrainImageTransform() if split == "train" else EvalImageTransform()
        self.image_transform = image_transform

    @property
    def class_names(self) -> list[str]:
        """Class names in label order (the part-labelled classes in partseg mode)."""
        if self.mode == "partseg":
            return [name for name, _, _ in PART_SHAPE_CLASSES[: self.num_classes]]
        return [name for name, _, _ in SHAPE_CLASSES[: self.num_classes]]

    @property
    def descriptions(self) -> list[str]:
        """Class descriptions (the pretraining ``text``) in label order."""
        if self.mode == "partseg":
            return [
                f"{name}, made of {' and '.join(parts)}"
                for name, parts, _ in PART_SHAPE_CLASSES[: self.num_classes]
            ]
        return [desc for _, desc, _ in SHAPE_CLASSES[: self.num_classes]]

    @property
    def num_parts(self) -> int:
        """Global part ids of the part-labelled classes in use (partseg mode)."""
        return sum(len(parts) for parts in self.category_to_parts.values())

    def __len__(self) -> int:
        return self.size

    def generate(self, index: int, with_image: bool | None = None) -> SyntheticSample:
        """Generate item ``index`` deterministically from ``(seed, split, index)``.

        Args:
            index: item position, 0 <= index < len(self).
            with_image: render the image (default: in pretrain mode only).

        Returns:
            :class:`SyntheticSample` with (num_points, 3) float32 points in the unit sphere and,
            if rendered, an (image_size, image_size, 3) uint8 RGB image; in partseg mode also
            the (num_points,) int64 global part id of every point.
        """
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for a split of {self.size} items")
        if with_image is None:
            with_image = self.mode == "pretrain"
        rng = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index])
        label = index % self.num_classes
        drawn = math.ceil(self.num_points * _OVERSAMPLE) if self.occlusion > 0 else self.num_points
        part: np.ndarray | None = None
        if self.mode == "partseg":
            raw, part = PART_SHAPE_CLASSES[label][2](drawn, rng)
        else:
            raw = SHAPE_CLASSES[label][2](drawn, rng)
        p = _random_pose(_deform(raw, rng, self.deformation), rng)
        p = _normalize(p)
        color = _random_color(rng)  # drawn always, so rendering never shifts the point stream
        # The image shows the clean, whole object (a "photo"); the cloud is a noisy partial scan.
        image = render_points(p, self.image_size, color) if with_image else None
        p = p + rng.normal(scale=self.noise, size=p.shape)
        if rng.uniform() < self.occlusion:
            direction = rng.normal(size=3)
            along = p @ direction
            visible = along <= np.quantile(along, rng.uniform(0.7, 0.9))
            p = p[visible]
            part = None if part is None else part[visible]
        keep = rng.choice(len(p), self.num_points, replace=len(p) < self.num_points)
        points = _normalize(p[keep]).astype(np.float32)
        seg = None if part is None else self.category_to_parts[label][0] + part[keep]
        return SyntheticSample(points=points, image=image, label=label, seg=seg)

    def _partseg_item(self, index: int) -> dict[str, Any]:
        """ShapeNetPart's item: ``npoints`` drawn with replacement, seeded outside training."""
        sample = self.generate(index)
        assert sample.seg is not None
        if self.split == "train":
            choice = torch.randint(0, self.num_points, (self.npoints,)).numpy()
        else:
            draw = np.random.default_rng([self.seed, SPLIT_IDS[self.split], index, 1])
            choice = draw.integers(0, self.num_points, self.npoints)
        return {
            "points": torch.from_numpy(np.ascontiguousarray(sample.points[choice])),
            "seg": torch.from_numpy(sample.seg[choice]),
            "category": torch.tensor(sample.label, dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        if self.mode == "partseg":
            return self._partseg_item(index)
        sample = self.generate(index)
        label = torch.tensor(sample.label, dtype=torch.long)
        if self.mode == "classification":
            points = torch.from_numpy(sample.points)
            if self.split == "train":
                # As ModelNet / ScanObjectNN: shuffle the point order of training items only.
                points = points[torch.randperm(len(points))]
            return {"points": points, "label": label}
        # Pretrain: as ShapeNet-55, a fresh random subset per access, then unit-sphere norm.
        subset = sample.points[torch.randperm(self.num_points)[: self.npoints].numpy()]
        assert sample.image is not None and self.image_transform is not None
        return {
            "points": torch.from_numpy(normalize_unit_sphere_np(subset)),
            "image": self.image_transform(sample.image),
            "text": self.descriptions[sample.label],
            "label": label,
            "index": torch.tensor(index, dtype=torch.long),
        }


class SyntheticShapesDataModule(PointCloudDataModule):
    """DataModule over :class:`SyntheticShapes` with train / val / test splits.

    In ``partseg`` mode batches follow the ShapeNetPart contract (``points`` (B, npoints, 3),
    ``seg`` (B, npoints) global part ids, ``category`` (B,), ``index`` (B,)); training clouds are
    scaled and shifted per shape on the device
    (:func:`~recon_lightning.data.shapenetpart.scale_and_shift`), evaluation clouds pass
    unchanged. :attr:`category_to_parts`, :attr:`num_parts` and :meth:`part_mask` describe the
    part layout, as on :class:`~recon_lightning.data.shapenetpart.ShapeNetPartDataModule`.

    Args:
        mode: ``"pretrain"`` (points, image, text, label, index), ``"classification"``,
            ``"partseg"``, or ``"auto"``: the item format the attached task asks for (its
            ``data_mode`` attribute) at ``setup``, so one ``data=synthetic`` config serves every
            recipe.
        train_size, val_size, test_size: items per split.
        seed: dataset seed (same seed -> identical data).
        num_points: stored points per shape.
        npoints: points the model sees.
        num_classes: number of shape classes used (2..12); not used in partseg mode.
        part_categories: partseg mode: number of part-labelled classes used (1..5; None: all).
        image_size: rendering resolution before the 224 px image pipeline.
        deformation, noise, occlusion: difficulty knobs, see :class:`SyntheticShapes`.
        augment: partseg mode: scale and shift training clouds (the reference's segmentation
            augmentation).
        batch_size, eval_batch_size, num_workers, pin_memory, persistent_workers,
        train_transform, vote_transform, shared_subset: see
        :class:`~recon_lightning.data.base.PointCloudDataModule`. Training clouds are rotated
        about y by default (the shapes stand upright in random headings); voting rescales.
    """

    dataset_name = "synthetic_shapes"
    val_split = "val"
    test_split = "test"

    def __init__(
        self,
        mode: SyntheticMode | Literal["auto"] = "pretrain",
        train_size: int = 2048,
        val_size: int = 256,
        test_size: int = 256,
        seed: int = 0,
        num_points: int = 2048,
        npoints: int = 1024,
        num_classes: int = len(SHAPE_CLASSES),
        image_size: int = 128,
        deformation: float = 1.0,
        noise: float = 0.01,
        occlusion: float = 0.5,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transform: str = "rotate_y",
        vote_transform: str = "scale",
        shared_subset: bool = True,
        part_categories: int | None = None,
        augment: bool = True,
    ) -> None:
        self.auto_mode = mode == "auto"
        if self.auto_mode:
            mode = "pretrain"
        if mode not in MODES:
            raise ValueError(f"mode must be one of {(*MODES, 'auto')}; got {mode!r}")
        super().__init__(
            # The base class knows two item formats; partseg batches bypass its device-side
            # resampling (see on_after_batch_transfer), so it is set up as classification.
            mode="classification" if mode == "partseg" else mode,
            npoints=npoints,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            train_transform=train_transform,
            vote_transform=vote_transform,
            shared_subset=shared_subset,
        )
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.dataset_kwargs: dict[str, Any] = {
            "seed": seed,
            "mode": mode,
            "num_points": num_points,
            "npoints": npoints,
            "num_classes": num_classes,
            "image_size": image_size,
            "deformation": deformation,
            "noise": noise,
            "occlusion": occlusion,
            "part_categories": part_categories,
        }
        self.mode: SyntheticMode = mode  # type: ignore[assignment]
        self._num_classes = num_classes
        self.category_to_parts: dict[int, tuple[int, ...]] = part_layout(part_categories)
        self.augment = bool(augment)

    def setup(self, stage: str | None = None) -> None:
        """Resolve ``mode="auto"`` from the attached task, then build the stage's splits."""
        task = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        wanted = getattr(task, "data_mode", None)
        if self.auto_mode and wanted in MODES and wanted != self.mode:
            self.mode = wanted
            self.dataset_kwargs["mode"] = wanted
            self._datasets.clear()
        super().setup(stage)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Partseg: scale and shift training clouds; other modes: the base class's sampling."""
        if self.mode != "partseg":
            return super().on_after_batch_transfer(batch, dataloader_idx)
        if self.augment and self._is_training():
            batch["points"] = scale_and_shift(batch["points"])
        return batch

    def build_dataset(self, split: str) -> SyntheticShapes:
        """The :class:`SyntheticShapes` split with this module's settings."""
        return SyntheticShapes(split=split, size=self.sizes[split], **self.dataset_kwargs)

    @property
    def class_names(self) -> list[str]:
        """Shape class names in label order (the part-labelled classes in partseg mode)."""
        if self.mode == "partseg":
            return [PART_SHAPE_CLASSES[c][0] for c in self.category_to_parts]
        return [name for name, _, _ in SHAPE_CLASSES[: self._num_classes]]

    @property
    def descriptions(self) -> list[str]:
        """Class descriptions (the pretraining text) in label order."""
        return [desc for _, desc, _ in SHAPE_CLASSES[: self._num_classes]]

    @property
    def num_parts(self) -> int:
        """Number of global part ids of the part-labelled classes in use."""
        return sum(len(parts) for parts in self.category_to_parts.values())

    @property
    def part_names(self) -> list[str]:
        """``category/part`` name of every global part id, in id order."""
        return [
            f"{PART_SHAPE_CLASSES[c][0]}/{name}"
            for c in self.category_to_parts
            for name in PART_SHAPE_CLASSES[c][1]
        ]

    def part_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(C, P) bool: which parts belong to which part-labelled class."""
        return part_mask(self.category_to_parts, self.num_parts, device)
