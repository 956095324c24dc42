"""ModelNet40 / ModelNet10 classification on the reference's ``modelnet40_normal_resampled`` layout.

``root`` is ``data/ModelNet/modelnet40_normal_resampled``::

    modelnet{40,10}_shape_names.txt          class names, label order
    modelnet{40,10}_{train,test}.txt         shape ids such as ``airplane_0001``
    <class>/<shape id>.txt                   10,000 lines ``x,y,z,nx,ny,nz`` (only to rebuild)
    modelnet{40,10}_{train,test}_8192pts_fps.dat
        pickle of [list of 8192 x 6 float32 arrays, list of int32 (1,) label arrays]

The ``.dat`` caches are read through :mod:`.safe_pickle` (never a plain ``pickle.load``). When a
cache is absent it is rebuilt from the per-shape txt files with this package's FPS
(``furthest_point_sample(xyz, 8192, skip_origin=False)``, batched, on GPU when available) and
written atomically. The reference's numpy FPS starts from a *random* point, ours from point 0
(the pointnet2_ops convention), so a rebuilt cache holds a different, equally spread 8192-point
subset than the released one, and rebuilding is deterministic.

Per item, as the reference's ``ModelNet`` dataset: xyz only (normals dropped), unit-sphere
normalisation, point order shuffled for the train split only. Sampling down to ``npoints`` and
augmentation happen on the device in the DataModule.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch.utils.data import Dataset

from recon_lightning.ops import furthest_point_sample, gather_points

from .base import PointCloudDataModule
from .errors import (
    DatasetNotFoundError,
    MalformedDatasetError,
    describe_missing,
    read_lines,
    require_dir,
)
from .safe_pickle import atomic_pickle_dump, safe_load_file
from .transforms import normalize_unit_sphere_np

#: ModelNet40 class names in label order (``modelnet40_shape_names.txt``), for few-shot splits.
MODELNET40_CLASSES: list[str] = [
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone",
    "cup", "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard",
    "lamp", "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio",
    "range_hood", "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase",
    "wardrobe", "xbox",
]  # fmt: skip


def how_to_get(root: Path, num_category: int) -> str:
    """The hint appended to ModelNet file errors."""
    extra = (
        " ModelNet10's shape-name and split lists are not in that archive; ReCon's authors "
        "share them on Google Drive (ReCon issue #11)."
        if num_category == 10
        else ""
    )
    return (
        "Download modelnet40_normal_resampled (the PointNet++ release, as in Point-BERT's "
        f"DATASET.md) and unpack it to {root}; the *_8192pts_fps.dat caches can be downloaded "
        "with it or are rebuilt from the per-shape txt files on first use." + extra
    )


def cache_path(root: Path, num_category: int, split: str, n_points: int = 8192) -> Path:
    """``root/modelnet{N}_{split}_{n_points}pts_fps.dat``, the reference's cache name."""
    return root / f"modelnet{num_category}_{split}_{n_points}pts_fps.dat"


def read_shape_names(root: Path, num_category: int) -> list[str]:
    """Class names in label order from ``modelnet{N}_shape_names.txt``."""
    names = read_lines(
        root / f"modelnet{num_category}_shape_names.txt", how_to_get(root, num_category)
    )
    if len(names) != num_category:
        raise MalformedDatasetError(
            f"{root / f'modelnet{num_category}_shape_names.txt'} lists {len(names)} classes; "
            f"expected {num_category}"
        )
    return names


def read_split(root: Path, num_category: int, split: str) -> list[str]:
    """Shape ids of ``split`` from ``modelnet{N}_{split}.txt``."""
    if split not in ("train", "test"):
        raise ValueError(f"ModelNet split must be 'train' or 'test'; got {split!r}")
    return read_lines(root / f"modelnet{num_category}_{split}.txt", how_to_get(root, num_category))


def _class_of(shape_id: str) -> str:
    """``night_stand_0001`` -> ``night_stand`` (everything before the last underscore)."""
    return "_".join(shape_id.split("_")[:-1])


def _load_shape_txt(path: Path, n_points: int) -> np.ndarray:
    try:
        arr = np.loadtxt(path, delimiter=",", dtype=np.float32, ndmin=2)
    except (OSError, ValueError) as exc:
        raise MalformedDatasetError(f"cannot parse ModelNet shape file {path}: {exc}") from exc
    if arr.shape[1] != 6 or arr.shape[0] < n_points:
        raise MalformedDatasetError(
            f"ModelNet shape file {path} has shape {arr.shape}; expected (N >= {n_points}, 6) "
            "rows of x,y,z,nx,ny,nz"
        )
    return arr


def build_cache(
    root: str | os.PathLike[str],
    num_category: int,
    split: str,
    n_points: int = 8192,
    device: str | torch.device | None = None,
    chunk: int = 16,
) -> Path:
    """Rebuild ``modelnet{N}_{split}_{n_points}pts_fps.dat`` from the per-shape txt files.

    FPS runs on xyz (``skip_origin=False``, start at point 0) in chunks of ``chunk`` shapes on
    ``device`` (default: CUDA if available); all six columns of the chosen points are kept, as
    in the reference. Progress is shown with a rich progress bar; the file is written
    atomically.

    Returns:
        The cache path.
    """
    root = Path(root)
    how = how_to_get(root, num_category)
    classes = {name: i for i, name in enumerate(read_shape_names(root, num_category))}
    ids = read_split(root, num_category, split)
    files = [root / _class_of(i) / f"{i}.txt" for i in ids]
    missing = [f for f in files if not f.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"cannot build {cache_path(root, num_category, split, n_points)}: shape files "
            f"{describe_missing(missing)}. {how}"
        )
    unknown = sorted({_class_of(i) for i in ids} - classes.keys())
    if unknown:
        raise MalformedDatasetError(
            f"{root / f'modelnet{num_category}_{split}.txt'} names classes not in the shape-name "
            f"list: {unknown[:5]}"
        )
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    points: list[np.ndarray] = []
    labels = [np.array([classes[_class_of(i)]], dtype=np.int32) for i in ids]
    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns) as progress:
        task = progress.add_task(f"ModelNet{num_category} {split}: FPS {n_points}", total=len(ids))
        for start in range(0, len(files), chunk):
            arrays = [_load_shape_txt(f, n_points) for f in files[start : start + chunk]]
            # Batch shapes of equal length (the resampled release has 10,000 points each).
            by_len: dict[int, list[int]] = {}
            for k, a in enumerate(arrays):
                by_len.setdefault(len(a), []).append(k)
            chosen: list[np.ndarray | None] = [None] * len(arrays)
            for members in by_len.values():
                batch = torch.from_numpy(np.stack([arrays[k] for k in members])).to(device)
                xyz = batch[..., :3].contiguous()
                idx = furthest_point_sample(xyz, n_points, skip_origin=False)
                picked = gather_points(batch, idx).cpu().numpy()
                for k, arr in zip(members, picked, strict=True):
                    chosen[k] = np.ascontiguousarray(arr, dtype=np.float32)
            points.extend(c for c in chosen if c is not None)
            progress.advance(task, len(arrays))
    path = cache_path(root, num_category, split, n_points)
    atomic_pickle_dump([points, labels], path)
    return path


def load_cache(path: Path, num_category: int, how: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Read and validate a ``.dat`` cache -> (list of (N, C >= 3) float32 arrays, (M,) labels)."""
    try:
        data = safe_load_file(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise MalformedDatasetError(
            f"cannot load ModelNet cache {path}: {exc}. Delete it to rebuild it from the shape "
            f"files, or re-download it. {how}"
        ) from exc
    if not (isinstance(data, list | tuple) and len(data) == 2):
        raise MalformedDatasetError(
            f"ModelNet cache {path} must hold [list of point arrays, list of label arrays]; "
            f"got {type(data).__name__}. Delete it to rebuild it."
        )
    points, labels = data
    if len(points) != len(labels):
        raise MalformedDatasetError(
            f"ModelNet cache {path} holds {len(points)} clouds but {len(labels)} labels"
        )
    for k, p in enumerate(points):
        if not (isinstance(p, np.ndarray) and p.ndim == 2 and p.shape[1] >= 3 and len(p) > 0):
            shape = getattr(p, "shape", type(p).__name__)
            raise MalformedDatasetError(
                f"ModelNet cache {path}: cloud {k} has shape {shape}; expected (N, 6)"
            )
    try:
        label_arr = np.array([int(np.asarray(y).reshape(-1)[0]) for y in labels], dtype=np.int64)
    except (TypeError, ValueError, IndexError) as exc:
        raise MalformedDatasetError(f"ModelNet cache {path}: unreadable labels ({exc})") from exc
    if len(label_arr) and (label_arr.min() < 0 or label_arr.max() >= num_category):
        raise MalformedDatasetError(
            f"ModelNet cache {path}: labels outside [0, {num_category}) "
            f"(min {label_arr.min()}, max {label_arr.max()})"
        )
    return list(points), label_arr


class ModelNet(Dataset):
    """One ModelNet split from its ``.dat`` cache (rebuilt if absent); see the module docstring.

    Args:
        root: the ``modelnet40_normal_resampled`` folder.
        num_category: 40 or 10.
        split: ``"train"`` or ``"test"``.
        n_points: stored points per shape (the reference's ``N_POINTS``, 8192).
        shuffle_points: shuffle the point order per access; default: for the train split.
        build_device: device for rebuilding a missing cache (default: CUDA if available).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        num_category: int = 40,
        split: str = "train",
        n_points: int = 8192,
        shuffle_points: bool | None = None,
        build_device: str | None = None,
    ) -> None:
        if num_category not in (10, 40):
            raise ValueError(f"num_category must be 10 or 40; got {num_category}")
        self.root = Path(root)
        how = how_to_get(self.root, num_category)
        require_dir(self.root, how)
        self.num_category, self.split = num_category, split
        self.class_names = read_shape_names(self.root, num_category)
        ids = read_split(self.root, num_category, split)
        path = cache_path(self.root, num_category, split, n_points)
        if not path.is_file():
            build_cache(self.root, num_category, split, n_points, device=build_device)
        points, self.labels = load_cache(path, num_category, how)
        if len(points) != len(ids):
            raise MalformedDatasetError(
                f"ModelNet cache {path} holds {len(points)} shapes but "
                f"{self.root / f'modelnet{num_category}_{split}.txt'} lists {len(ids)}; delete "
                "the stale cache to rebuild it"
            )
        # Keep xyz only (the reference's USE_NORMALS=False), halving the resident memory.
        self.points = [np.ascontiguousarray(p[:, :3], dtype=np.float32) for p in points]
        self.shuffle_points = split == "train" if shuffle_points is None else shuffle_points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict[str, Any]:
        points = torch.from_numpy(normalize_unit_sphere_np(self.points[index]))
        if self.shuffle_points:
            points = points[torch.randperm(len(points))]
        return {"points": points, "label": torch.tensor(self.labels[index], dtype=torch.long)}


class ModelNetDataModule(PointCloudDataModule):
    """ModelNet40 / ModelNet10 classification (the reference's ``finetune_modelnet*`` data).

    Train batches: FPS to point_all, random ``npoints`` subset, PointcloudScaleAndTranslate;
    eval batches: FPS to ``npoints`` (+ ``points_raw``); voting transform: anisotropic scale.

    Args:
        root: ``${paths.data_dir}/ModelNet/modelnet40_normal_resampled``.
        num_category: 40 or 10.
        npoints: points per cloud the model sees (1024 or 8192).
        n_points: stored points per shape in the cache (8192).
        batch_size: 32 in the reference.
        build_device: device for rebuilding a missing cache.
        eval_batch_size, num_workers, pin_memory, persistent_workers, train_transform,
            vote_transform, shared_subset: see
            :class:`~recon_lightning.data.base.PointCloudDataModule`.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        num_category: int = 40,
        npoints: int = 1024,
        n_points: int = 8192,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transform: str = "scale_and_translate",
        vote_transform: str = "scale",
        shared_subset: bool = True,
        build_device: str | None = None,
    ) -> None:
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
        if num_category not in (10, 40):
            raise ValueError(f"num_category must be 10 or 40; got {num_category}")
        self.root = Path(root)
        self.num_category, self.n_points = num_category, n_points
        self.build_device = build_device
        self.dataset_name = f"modelnet{num_category}"
        self._class_names: list[str] | None = None

    def prepare_data(self) -> None:
        """Rebuild missing ``.dat`` caches once (Lightning calls this on one process only)."""
        for split in ("train", "test"):
            if not cache_path(self.root, self.num_category, split, self.n_points).is_file():
                build_cache(
                    self.root, self.num_category, split, self.n_points, device=self.build_device
                )

    def build_dataset(self, split: str) -> ModelNet:
        """The ``train`` or ``test`` split."""
        return ModelNet(
            self.root, self.num_category, split, self.n_points, build_device=self.build_device
        )

    @property
    def class_names(self) -> list[str]:
        """Names from ``modelnet{N}_shape_names.txt``, in label order."""
        if self._class_names is None:
            self._class_names = read_shape_names(self.root, self.num_category)
        return self._class_names
