"""ModelNet40 few-shot episodes (Point-BERT's splits) and their regeneration.

``root`` is ``data/ModelNetFewshot``; episode ``fold`` of ``way``-way ``shot``-shot is
``{way}way_{shot}shot/{fold}.pkl`` (the folder the reference opens) or ``{way}way{shot}shot/``
(as DATASET.md draws it). Each pickle is a dict with ``train`` and ``test`` lists of tuples
``(points (8192, 6) float32, label in 0..way-1, original ModelNet40 label)`` and is read through
:mod:`.safe_pickle`. Per item, as the reference's ``ModelNetFewShot``: unit-sphere
normalisation, xyz only, point order shuffled for ``train``. Train augmentation (device): random
y-rotation (the reference's runner rotates every non-``ModelNet`` dataset).

:func:`make_fewshot_splits` regenerates the episodes from the ModelNet40 ``.dat`` caches the way
``datasets/generate_few_shot_data.py`` does, from a seeded generator.
"""

from __future__ import annotations

import os
import pickle
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .base import PointCloudDataModule
from .errors import DatasetNotFoundError, MalformedDatasetError
from .modelnet import MODELNET40_CLASSES, cache_path, load_cache
from .safe_pickle import atomic_pickle_dump, safe_load_file
from .transforms import normalize_unit_sphere_np

HOW_TO_GET = (
    "Download ModelNetFewshot (Point-BERT's few-shot splits, see Point-BERT/ReCon DATASET.md) "
    "to {root}, or regenerate the episodes with "
    "recon_lightning.data.modelnet_fewshot.make_fewshot_splits(modelnet_root, {root})."
)


def episode_path(root: Path, way: int, shot: int, fold: int) -> Path:
    """The episode pickle, accepting both ``5way_10shot`` and ``5way10shot`` folder names."""
    candidates = [
        root / f"{way}way_{shot}shot" / f"{fold}.pkl",
        root / f"{way}way{shot}shot" / f"{fold}.pkl",
    ]
    for path in candidates:
        if path.is_file():
            return path
    raise DatasetNotFoundError(
        f"missing few-shot episode {candidates[0]} (also looked for {candidates[1]}). "
        + HOW_TO_GET.format(root=root)
    )


def load_episode(path: Path, way: int) -> dict[str, list[tuple[np.ndarray, int, int]]]:
    """Read and validate an episode pickle -> ``{"train": [...], "test": [...]}``."""
    try:
        data = safe_load_file(path)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise MalformedDatasetError(
            f"cannot load few-shot episode {path}: {exc}. "
            + HOW_TO_GET.format(root=path.parent.parent)
        ) from exc
    if not (isinstance(data, dict) and {"train", "test"} <= data.keys()):
        raise MalformedDatasetError(
            f"few-shot episode {path} must be a dict with 'train' and 'test' lists"
        )
    episode: dict[str, list[tuple[np.ndarray, int, int]]] = {}
    for split in ("train", "test"):
        items = []
        for k, item in enumerate(data[split]):
            ok = isinstance(item, tuple | list) and len(item) == 3
            points = item[0] if ok else None
            if not (
                isinstance(points, np.ndarray)
                and points.ndim == 2
                and points.shape[1] >= 3
                and len(points) > 0
            ):
                raise MalformedDatasetError(
                    f"few-shot episode {path}: {split}[{k}] is not (points (N, 6), label, "
                    "original label)"
                )
            label, orig = int(np.asarray(item[1])), int(np.asarray(item[2]))
            if not 0 <= label < way:
                raise MalformedDatasetError(
                    f"few-shot episode {path}: {split}[{k}] has label {label}, outside [0, {way})"
                )
            items.append((points, label, orig))
        episode[split] = items
    return episode


class ModelNetFewshot(Dataset):
    """One split of one few-shot episode; see the module docstring.

    Args:
        root: the ``ModelNetFewshot`` folder.
        way, shot, fold: the episode (way 5/10, shot 10/20, fold 0..9 in the reference).
        split: ``"train"`` or ``"test"``.
        shuffle_points: random point order per access; default: for the train split.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        way: int,
        shot: int,
        fold: int,
        split: str = "train",
        shuffle_points: bool | None = None,
    ) -> None:
        if split not in ("train", "test"):
            raise ValueError(f"few-shot split must be 'train' or 'test'; got {split!r}")
        self.root = Path(root)
        episode = load_episode(episode_path(self.root, way, shot, fold), way)
        items = episode[split]
        self.points = [np.ascontiguousarray(p[:, :3], dtype=np.float32) for p, _, _ in items]
        self.labels = [label for _, label, _ in items]
        self.original_labels = [orig for _, _, orig in items]
        self.split = split
        self.shuffle_points = split == "train" if shuffle_points is None else shuffle_points

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, index: int) -> dict[str, Any]:
        points = torch.from_numpy(normalize_unit_sphere_np(self.points[index]))
        if self.shuffle_points:
            points = points[torch.randperm(len(points))]
        return {"points": points, "label": torch.tensor(self.labels[index], dtype=torch.long)}


def make_fewshot_splits(
    modelnet_root: str | os.PathLike[str],
    out_root: str | os.PathLike[str],
    seed: int = 0,
    ways: Iterable[int] = (5, 10),
    shots: Iterable[int] = (10, 20),
    folds: int = 10,
    eval_sample: int = 20,
) -> list[Path]:
    """Regenerate few-shot episodes from the ModelNet40 8192-point ``.dat`` caches.

    As ``generate_few_shot_data.py``: for each (way, shot, fold), shuffle the 40 class ids,
    take the first ``way``; for each chosen class (new label = its position) shuffle its
    training shapes and take ``shot``, shuffle its test-split shapes and take ``eval_sample``;
    shuffle both lists; write ``{way}way_{shot}shot/{fold}.pkl``. All draws come from one
    ``random.Random(seed)`` stream in the reference's loop order, so a seed reproduces the files
    exactly (the reference used the unseeded global stream).

    Returns:
        The written episode paths.
    """
    modelnet_root, out_root = Path(modelnet_root), Path(out_root)
    how = HOW_TO_GET.format(root=out_root)
    sets = []
    for split in ("train", "test"):
        path = cache_path(modelnet_root, 40, split)
        if not path.is_file():
            raise DatasetNotFoundError(
                f"missing {path}; make_fewshot_splits needs the ModelNet40 8192-point caches "
                "(download them or build them by loading ModelNetDataModule once)."
            )
        points, labels = load_cache(path, 40, how)
        by_class: dict[int, list[np.ndarray]] = {}
        for p, y in zip(points, labels, strict=True):
            by_class.setdefault(int(y), []).append(p)
        sets.append(by_class)
    train_by_class, test_by_class = sets
    rng = random.Random(seed)
    written = []
    for way in ways:
        for shot in shots:
            for fold in range(folds):
                keys = sorted(train_by_class)
                rng.shuffle(keys)
                train, test = [], []
                for new_label, key in enumerate(keys[:way]):
                    pool = list(train_by_class[key])
                    if len(pool) <= shot:  # the reference asserts len > shot
                        raise MalformedDatasetError(
                            f"class {key} has {len(pool)} training shapes; need more than {shot}"
                        )
                    rng.shuffle(pool)
                    train += [(p, new_label, key) for p in pool[:shot]]
                    pool = list(test_by_class.get(key, []))
                    if len(pool) < eval_sample:
                        raise MalformedDatasetError(
                            f"class {key} has {len(pool)} test shapes; need {eval_sample}"
                        )
                    rng.shuffle(pool)
                    test += [(p, new_label, key) for p in pool[:eval_sample]]
                rng.shuffle(train)
                rng.shuffle(test)
                path = out_root / f"{way}way_{shot}shot" / f"{fold}.pkl"
                atomic_pickle_dump({"train": train, "test": test}, path)
                written.append(path)
    return written


class ModelNetFewshotDataModule(PointCloudDataModule):
    """Few-shot ModelNet40 (the reference's ``fewshot`` configs): train on the episode's
    ``way x shot`` shapes, validate/test on its ``way x 20`` test shapes.

    Train batches: FPS to point_all (1200), random ``npoints`` (1024) subset, random
    y-rotation; eval: FPS to ``npoints`` (+ ``points_raw``).

    ``num_classes`` is ``way`` (labels are 0..way-1); the reference still builds a 40-way head
    (``cls_dim: 40``), which trains identically with the unused logits.

    Args:
        root: ``${paths.data_dir}/ModelNetFewshot``.
        way, shot, fold: the episode.
        npoints: points per cloud the model sees (1024).
        batch_size: 32 in the reference.
        vote_transform: none by default (the reference's voting keys on ScanObjectNN/ModelNet).
        eval_batch_size, num_workers, pin_memory, persistent_workers, train_transform,
            shared_subset: see :class:`~recon_lightning.data.base.PointCloudDataModule`.
    """

    dataset_name = "modelnet_fewshot"

    def __init__(
        self,
        root: str | os.PathLike[str],
        way: int = 5,
        shot: int = 10,
        fold: int = 0,
        npoints: int = 1024,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 8,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transform: str = "rotate_y",
        vote_transform: str = "none",
        shared_subset: bool = True,
    ) -> None:
        if way < 1 or shot < 1 or fold < 0:
            raise ValueError(
                f"way, shot must be >= 1 and fold >= 0 (set them, e.g. way=5 shot=10 fold=0); "
                f"got way={way}, shot={shot}, fold={fold}"
            )
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
        self.way, self.shot, self.fold = way, shot, fold

    def build_dataset(self, split: str) -> ModelNetFewshot:
        """The episode's ``train`` or ``test`` list."""
        return ModelNetFewshot(self.root, self.way, self.shot, self.fold, split)

    @property
    def class_names(self) -> list[str]:
        """ModelNet40 names of the episode's classes, by new label (read from the episode)."""
        ds = self.dataset("train")
        assert isinstance(ds, ModelNetFewshot)
        names = [f"class_{k}" for k in range(self.way)]
        for label, orig in zip(ds.labels, ds.original_labels, strict=True):
            if 0 <= orig < len(MODELNET40_CLASSES):
                names[label] = MODELNET40_CLASSES[orig]
        return names

    @property
    def num_classes(self) -> int:
        """``way``: labels run over 0..way-1."""
        return self.way
