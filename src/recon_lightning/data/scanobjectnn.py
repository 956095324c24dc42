"""ScanObjectNN (OBJ_BG, OBJ_ONLY, PB_T50_RS "hardest") on the reference's h5 layout.

``root`` is ``data/ScanObjectNN``; the variants read, as the reference's ``ScanObjectNN`` and
``ScanObjectNN_hardest`` datasets do:

================  ==============================================================================
``obj_bg``        ``main_split/{training,test}_objectdataset.h5``
``obj_only``      ``main_split_nobg/{training,test}_objectdataset.h5``
``hardest``       ``main_split/{training,test}_objectdataset_augmentedrot_scale75.h5``
================  ==============================================================================

Each h5 holds ``data`` (M, 2048, 3) float and ``label`` (M,) int in [0, 15). Points are used as
stored (no normalisation); training items get a fresh random point order per access. Train
augmentation (device): random y-rotation. Voting transform: rotation for ``hardest``, none for
OBJ_BG / OBJ_ONLY.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from .base import PointCloudDataModule
from .errors import MalformedDatasetError, require_file

Variant = Literal["obj_bg", "obj_only", "hardest"]

#: variant -> (folder under root, file stem after ``training_`` / ``test_``).
VARIANT_FILES: dict[str, tuple[str, str]] = {
    "obj_bg": ("main_split", "objectdataset"),
    "obj_only": ("main_split_nobg", "objectdataset"),
    "hardest": ("main_split", "objectdataset_augmentedrot_scale75"),
}

#: Class names in label order (ScanObjectNN's 15 categories).
SCANOBJECTNN_CLASSES: list[str] = [
    "bag", "bin", "box", "cabinet", "chair", "desk", "display", "door", "shelf", "table", "bed",
    "pillow", "sink", "sofa", "toilet",
]  # fmt: skip

#: The reference's zero-shot list, which misspells the last class as "toile"; use it only to
#: reproduce the reference's zero-shot numbers.
SCANOBJECTNN_CLASSES_FAITHFUL: list[str] = [*SCANOBJECTNN_CLASSES[:-1], "toile"]

HOW_TO_GET = (
    "Download ScanObjectNN (h5_files.zip, from the ScanObjectNN authors after accepting their "
    "terms of use) and unpack main_split/ and main_split_nobg/ under {root}."
)


def h5_path(root: Path, variant: str, split: str) -> Path:
    """The h5 file of ``variant`` and ``split`` (``"train"`` or ``"test"``) under ``root``."""
    if variant not in VARIANT_FILES:
        raise ValueError(f"variant must be one of {sorted(VARIANT_FILES)}; got {variant!r}")
    if split not in ("train", "test"):
        raise ValueError(f"ScanObjectNN split must be 'train' or 'test'; got {split!r}")
    folder, stem = VARIANT_FILES[variant]
    prefix = "training" if split == "train" else "test"
    return root / folder / f"{prefix}_{stem}.h5"


def load_h5(path: Path, num_classes: int = 15) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate ``data`` (M, N, 3) float32 and ``label`` (M,) int64 from ``path``."""
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("data", "label") if k not in f]
            if missing:
                raise MalformedDatasetError(
                    f"ScanObjectNN file {path} lacks the key(s) {missing}; found {sorted(f.keys())}"
                )
            data, label = np.asarray(f["data"]), np.asarray(f["label"])
    except OSError as exc:
        raise MalformedDatasetError(f"cannot read ScanObjectNN file {path}: {exc}") from exc
    if data.ndim != 3 or data.shape[2] != 3 or data.shape[1] == 0:
        raise MalformedDatasetError(
            f"ScanObjectNN file {path}: 'data' has shape {data.shape}; expected (M, N, 3)"
        )
    if not np.issubdtype(data.dtype, np.floating):
        raise MalformedDatasetError(
            f"ScanObjectNN file {path}: 'data' has dtype {data.dtype}; expected floats"
        )
    if label.ndim == 2 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 1 or len(label) != len(data):
        raise MalformedDatasetError(
            f"ScanObjectNN file {path}: 'label' has shape {label.shape}; expected ({len(data)},)"
        )
    if not np.issubdtype(label.dtype, np.integer):
        raise MalformedDatasetError(
            f"ScanObjectNN file {path}: 'label' has dtype {label.dtype}; expected integers"
        )
    if len(label) and (label.min() < 0 or label.max() >= num_classes):
        raise MalformedDatasetError(
            f"ScanObjectNN file {path}: labels outside [0, {num_classes}) "
            f"(min {label.min()}, max {label.max()})"
        )
    return data.astype(np.float32, copy=False), label.astype(np.int64)


class ScanObjectNN(Dataset):
    """One ScanObjectNN variant and split; see the module docstring.

    Args:
        root: the ``ScanObjectNN`` folder.
        variant: ``"obj_bg"``, ``"obj_only"`` or ``"hardest"``.
        split: ``"train"`` or ``"test"``.
        shuffle_points: random point order per access; default: for the train split.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        variant: Variant = "hardest",
        split: str = "train",
        shuffle_points: bool | None = None,
    ) -> None:
        self.root = Path(root)
        path = h5_path(self.root, variant, split)
        require_file(path, HOW_TO_GET.format(root=self.root))
        self.points, self.labels = load_h5(path)
        self.variant, self.split = variant, split
        self.shuffle_points = split == "train" if shuffle_points is None else shuffle_points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict[str, Any]:
        points = torch.from_numpy(self.points[index])
        if self.shuffle_points:
            points = points[torch.randperm(len(points))]
        return {"points": points, "label": torch.tensor(self.labels[index], dtype=torch.long)}


class ScanObjectNNDataModule(PointCloudDataModule):
    """ScanObjectNN classification (the reference's ``finetune_scan_*`` data).

    Train batches: FPS to point_all (2048 stored -> all 2048), random ``npoints`` subset, random
    y-rotation; eval batches: FPS to ``npoints`` (+ ``points_raw``); voting: rotation for
    ``hardest``, none otherwise.

    Args:
        root: ``${paths.data_dir}/ScanObjectNN``.
        variant: ``"obj_bg"``, ``"obj_only"`` or ``"hardest"`` (PB_T50_RS).
        npoints: points per cloud the model sees (2048).
        faithful_class_names: report the reference's misspelled ``"toile"`` for class 14 (for
            reproducing its zero-shot prompts); default the correct ``"toilet"``.
        batch_size: 32 in the reference.
        vote_transform: default ``"rotate_y"`` for ``hardest``, ``"none"`` otherwise.
        eval_batch_size, num_workers, pin_memory, persistent_workers, train_transform,
            shared_subset: see :class:`~recon_lightning.data.base.PointCloudDataModule`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        variant: Variant = "hardest",
        npoints: int = 2048,
        faithful_class_names: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transform: str = "rotate_y",
        vote_transform: str | None = None,
        shared_subset: bool = True,
    ) -> None:
        if variant not in VARIANT_FILES:
            raise ValueError(f"variant must be one of {sorted(VARIANT_FILES)}; got {variant!r}")
        if vote_transform is None:
            vote_transform = "rotate_y" if variant == "hardest" else "none"
        super().__init__(
            mode="classification",
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
        self.root = Path(root)
        self.variant = variant
        self.faithful_class_names = faithful_class_names
        self.dataset_name = f"scanobjectnn_{variant}"

    def build_dataset(self, split: str) -> ScanObjectNN:
        """The ``train`` or ``test`` split of the variant."""
        return ScanObjectNN(self.root, self.variant, split)

    @property
    def class_names(self) -> list[str]:
        """The 15 class names (with ``"toile"`` when ``faithful_class_names``)."""
        if self.faithful_class_names:
            return list(SCANOBJECTNN_CLASSES_FAITHFUL)
        return list(SCANOBJECTNN_CLASSES)
