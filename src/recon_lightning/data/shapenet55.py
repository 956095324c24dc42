"""ShapeNet-55 pretraining data (points + rendered image + category text), reference layout.

``root`` is the reference's ``data/ShapeNet55-34`` folder::

    shapenet_pc/<synset>-<model>.npy     8192 x 3 points per model (Point-BERT release)
    shapenet_img/<synset>-<model>.png    one rendered view per model (ReCon release)
    ShapeNet-55/train.txt, test.txt      one ``<synset>-<model>.npy`` per line
    shapenet55.json                      category table: ``catalogue`` (synset id, stored as an
                                         integer) and ``describe`` (the category text)

Per item, as the reference's ``ShapeNet`` dataset: a random ``npoints`` subset of the stored
points (random, not FPS), unit-sphere normalisation, the image through the reference's train
augmentation (uint8 RGB; the reference's BGR order and ImageNet normalisation are left to the
image teacher), the category description as ``text`` and the category's row in the table as
``label``. ``whole=True`` (forced by the reference's pretraining runner) reads the test list
followed by the split's list.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..distributed import run_seed, world_and_rank
from .base import PointCloudDataModule
from .errors import (
    DatasetNotFoundError,
    MalformedDatasetError,
    describe_missing,
    read_lines,
    require_dir,
)
from .image_transforms import EvalImageTransform, ImageTransform, PretrainImageTransform
from .on_device import (
    OnDeviceTrainLoader,
    PointStore,
    ensure_point_cache,
    load_point_store,
    point_cache_dirs,
)
from .shapenet_synsets import SHAPENET55_SYNSETS
from .transforms import normalize_unit_sphere_np

if TYPE_CHECKING:  # a type only: importing the teachers package at module load is slow
    from ..teachers.cache import CachedTeachers

log = logging.getLogger(__name__)


def how_to_get(root: Path) -> str:
    """The hint appended to ShapeNet-55 file errors."""
    return (
        "Get ShapeNet55-34 as the ReCon README/DATASET.md describes: Point-BERT's ShapeNet55 "
        "release (shapenet_pc/*.npy) plus ReCon's Google-Drive files (shapenet_img/*.png, the "
        "modified ShapeNet-55/{train,test}.txt lists and shapenet55.json), laid out under "
        f"{root}."
    )


def _synset_id(value: Any, path: Path) -> str:
    """The 8-digit synset id from a ``catalogue`` cell (pandas stores it as an integer)."""
    text = str(value).strip()
    if isinstance(value, bool) or not text.isdigit():
        raise MalformedDatasetError(f"{path}: catalogue value {value!r} is not a synset id")
    return text.zfill(8)


def _rows_from_json(data: Any, path: Path) -> list[dict[str, Any]]:
    """Table rows in label order from any pandas ``to_json`` orientation of the table."""
    if isinstance(data, list):  # orient="records"
        return list(data)
    if isinstance(data, dict):
        if {"columns", "data"} <= data.keys():  # orient="split"
            return [dict(zip(data["columns"], row, strict=True)) for row in data["data"]]
        if isinstance(data.get("catalogue"), dict) and isinstance(data.get("describe"), dict):
            # orient="columns" (pandas' default): {"catalogue": {"0": ..}, "describe": {"0": ..}}
            keys = list(data["catalogue"])
            if all(str(k).lstrip("-").isdigit() for k in keys):
                keys.sort(key=lambda k: int(k))
            return [
                {"catalogue": data["catalogue"][k], "describe": data["describe"][k]} for k in keys
            ]
        values = list(data.values())
        if values and all(isinstance(v, dict) and "catalogue" in v for v in values):
            keys = list(data)  # orient="index"
            if all(str(k).lstrip("-").isdigit() for k in keys):
                keys.sort(key=lambda k: int(k))
            return [data[k] for k in keys]
    raise MalformedDatasetError(
        f"{path}: expected a table with 'catalogue' and 'describe' columns (pandas to_json "
        "'columns', 'records', 'index' or 'split' orientation)"
    )


def load_category_table(path: Path) -> list[tuple[str, str]]:
    """Read ``shapenet55.json`` -> ``[(synset id, description), ...]`` in label order.

    The reference reads it with ``pandas.read_json`` and uses the row index as the label; rows
    here are ordered the same way (by integer index where the table has one).
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedDatasetError(f"cannot parse {path} as JSON: {exc}") from exc
    table = []
    for row in _rows_from_json(data, path):
        if not isinstance(row, dict) or "catalogue" not in row or "describe" not in row:
            raise MalformedDatasetError(f"{path}: row {row!r} lacks 'catalogue' or 'describe'")
        table.append((_synset_id(row["catalogue"], path), str(row["describe"])))
    if len({s for s, _ in table}) != len(table):
        raise MalformedDatasetError(f"{path}: a synset id appears in more than one row")
    return table


TEXTS_FALLBACKS = (None, "synset_names")


def category_table(
    root: Path, text_file: str = "shapenet55.json", texts_fallback: str | None = None
) -> list[tuple[str, str]]:
    """The category table from ``root/text_file``.

    Args:
        root: the ``ShapeNet55-34`` folder.
        text_file: the table's file name under ``root``.
        texts_fallback: what to do when the file is missing: ``None`` (default) raises;
            ``"synset_names"`` uses the built-in ShapeNet-55 category names of
            :data:`~recon_lightning.data.shapenet_synsets.SHAPENET55_SYNSETS` as texts (not the
            reference's texts) and ascending synset order as labels.

    Raises:
        DatasetNotFoundError: the file is missing and no fallback was asked for.
    """
    if texts_fallback not in TEXTS_FALLBACKS:
        raise ValueError(f"data.texts_fallback={texts_fallback!r}: expected null or 'synset_names'")
    path = root / text_file
    if path.is_file():
        return load_category_table(path)
    if texts_fallback is None:
        raise DatasetNotFoundError(
            f"missing dataset file {path}: the category table with the texts the text teacher "
            "reads. Get shapenet55.json from the ReCon release (DATASET.md of qizekun/ReCon) and "
            f"put it in {root}, or pretrain with the built-in synset names as texts (not the "
            "reference's) with data.texts_fallback=synset_names"
        )
    log.info("%s not found: texts are the built-in ShapeNet-55 synset names, as asked", path)
    return list(SHAPENET55_SYNSETS.items())


class ShapeNet55(Dataset):
    """ShapeNet-55 pretraining dataset on the reference layout; see the module docstring.

    Args:
        root: the ``ShapeNet55-34`` folder.
        split: list file stem under ``ShapeNet-55/`` (``"train"`` or ``"test"``).
        whole: prepend the test list (the reference's pretraining uses ``whole=True``).
        npoints: points per item (random subset of the stored cloud).
        ratio: keep the first ``ratio`` fraction of the lines (reference ``ratio``, 1.0).
        image_transform: image pipeline; default: reference train augmentation for ``train``,
            deterministic 224 px resize otherwise.
        skip_missing_images: drop listed models without a PNG (with a warning) instead of
            failing.
        text_file: the category table's file name under ``root``.
        texts_fallback: ``"synset_names"`` to use the built-in names when ``text_file`` is
            missing (see :func:`category_table`); by default a missing table is an error.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "train",
        whole: bool = False,
        npoints: int = 1024,
        ratio: float = 1.0,
        image_transform: ImageTransform | None = None,
        skip_missing_images: bool = False,
        text_file: str = "shapenet55.json",
        texts_fallback: str | None = None,
    ) -> None:
        self.root = Path(root)
        how = how_to_get(self.root)
        require_dir(self.root, how)
        self.pc_dir = require_dir(self.root / "shapenet_pc", how)
        self.img_dir = require_dir(self.root / "shapenet_img", how)
        self.npoints = int(npoints)
        self.split = split
        lines = read_lines(self.root / "ShapeNet-55" / f"{split}.txt", how)
        if whole:
            lines = read_lines(self.root / "ShapeNet-55" / "test.txt", how) + lines
        lines = lines[: int(ratio * len(lines))]

        self.categories = category_table(self.root, text_file, texts_fallback)
        self._label_of = {synset: i for i, (synset, _) in enumerate(self.categories)}
        self.files: list[str] = []
        self.labels: list[int] = []
        for line in lines:
            synset = line.split("-")[0]
            if synset not in self._label_of:
                raise MalformedDatasetError(
                    f"{self.root / 'ShapeNet-55' / f'{split}.txt'}: line {line!r} has synset "
                    f"{synset!r}, which is not in the category table ({self.root / text_file})"
                )
            self.files.append(line)
            self.labels.append(self._label_of[synset])
        self._check_files(skip_missing_images, how)
        if image_transform is None:
            image_transform = PretrainImageTransform() if split == "train" else EvalImageTransform()
        self.image_transform = image_transform

    def _check_files(self, skip_missing_images: bool, how: str) -> None:
        # One listdir per folder instead of 50k stat calls.
        point_files = set(os.listdir(self.pc_dir))
        missing_pc = [self.pc_dir / f for f in self.files if f not in point_files]
        if missing_pc:
            raise DatasetNotFoundError(
                f"ShapeNet-55 point clouds listed but not found: {describe_missing(missing_pc)}. "
                + how
            )
        image_files = set(os.listdir(self.img_dir))
        has_image = [self._image_name(f) in image_files for f in self.files]
        missing_img = [
            self.img_dir / self._image_name(f)
            for f, ok in zip(self.files, has_image, strict=True)
            if not ok
        ]
        if not missing_img:
            return
        if not skip_missing_images:
            raise DatasetNotFoundError(
                f"ShapeNet-55 models without a rendered image: {describe_missing(missing_img)}. "
                "Use ReCon's modified ShapeNet-55/{train,test}.txt lists (they leave these "
                "models out), or set skip_missing_images=true to drop them. " + how
            )
        warnings.warn(
            f"skipping {len(missing_img)} ShapeNet-55 models without an image "
            f"(first: {missing_img[0]})",
            stacklevel=3,
        )
        self.files = [f for f, ok in zip(self.files, has_image, strict=True) if ok]
        self.labels = [y for y, ok in zip(self.labels, has_image, strict=True) if ok]

    @staticmethod
    def _image_name(point_file: str) -> str:
        return point_file.replace(".npy", ".png")

    @property
    def descriptions(self) -> list[str]:
        """Category descriptions (the ``text`` of each label), in label order."""
        return [desc for _, desc in self.categories]

    def __len__(self) -> int:
        return len(self.files)

    def load_points(self, index: int) -> np.ndarray:
        """The stored (N, 3) float32 cloud of item ``index``; bad files raise naming the file."""
        path = self.pc_dir / self.files[index]
        try:
            points = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise MalformedDatasetError(
                f"cannot read point cloud {path}: {exc}. Re-download it: {how_to_get(self.root)}"
            ) from exc
        if points.ndim != 2 or points.shape[1] != 3 or points.shape[0] < self.npoints:
            raise MalformedDatasetError(
                f"point cloud {path} has shape {points.shape}; expected (N, 3) with "
                f"N >= npoints={self.npoints} (ShapeNet-55 stores 8192 x 3)"
            )
        return points.astype(np.float32, copy=False)

    def load_image(self, index: int) -> Image.Image:
        """The RGB PIL image of item ``index``; an unreadable PNG raises naming the file."""
        path = self.img_dir / self._image_name(self.files[index])
        try:
            with Image.open(path) as img:
                return img.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise MalformedDatasetError(f"cannot read image {path}: {exc}") from exc

    def __getitem__(self, index: int) -> dict[str, Any]:
        points = self.load_points(index)
        # The reference shuffles a permutation of all stored points and keeps the first npoints.
        subset = points[torch.randperm(len(points))[: self.npoints].numpy()]
        label = self.labels[index]
        return {
            "points": torch.from_numpy(normalize_unit_sphere_np(subset)),
            "image": self.image_transform(self.load_image(index)),
            "text": self.categories[label][1],
            "label": torch.tensor(label, dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }


class ShapeNet55DataModule(PointCloudDataModule):
    """ReCon pretraining data: ShapeNet-55 points, images and category texts.

    Training reads ``train.txt`` (with ``whole=True``, the reference default, ``test.txt``
    first); validation/test read ``test.txt`` with the deterministic image resize. Training
    clouds are rotated about y on the device.

    With ``on_device=True`` training takes the on-device path of :mod:`.on_device`: the stored
    clouds of the training split stay on the training device, the training loader yields
    index batches and :meth:`on_after_batch_transfer` builds each batch there (random subset,
    normalisation, rotation); the batches have no ``image``, so the teachers must be
    ``CachedTeachers`` (``teachers=cached``), whose features are put on the same device.
    Validation and test keep the DataLoader path.

    Args:
        root: the ``ShapeNet55-34`` folder (``${paths.data_dir}/ShapeNet55-34``).
        npoints: points per cloud (1024).
        whole: train on test + train lists (True in the reference's pretraining).
        ratio: fraction of list lines kept (1.0).
        skip_missing_images: drop listed models without a PNG instead of failing.
        text_file: category table name under ``root``.
        texts_fallback: ``"synset_names"``: built-in names as texts when ``text_file`` is
            missing (otherwise a missing table is an error).
        batch_size: 128 in the reference.
        eval_batch_size, num_workers, pin_memory, persistent_workers, train_transform: see
            :class:`~recon_lightning.data.base.PointCloudDataModule`.
        on_device: keep the training clouds and the cached teacher features on the training
            device and build training batches there (no workers, no per-step copy); needs
            ``teachers=cached``. False: the reference's DataLoader path.
        on_device_points: with ``on_device``, keep only this many points per shape (at least
            ``npoints``), drawn once at load time with the run's seed: less device memory, but a
            smaller pool for the per-step subsets than the reference's 8192 (a deviation).
            None: all stored points.
        cache_dir: with ``on_device``, folder for the stacked ``.npy`` of the training clouds;
            None: ``root/.recon_cache``, or a per-user folder when ``root`` is read-only.
    """

    dataset_name = "shapenet55"

    def __init__(
        self,
        root: str | os.PathLike[str],
        npoints: int = 1024,
        whole: bool = True,
        ratio: float = 1.0,
        skip_missing_images: bool = False,
        text_file: str = "shapenet55.json",
        texts_fallback: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int | str = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transform: str = "rotate_y",
        on_device: bool = False,
        on_device_points: int | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if on_device_points is not None and on_device_points < npoints:
            raise ValueError(
                f"data.on_device_points={on_device_points} must be at least "
                f"data.npoints={npoints} (each step draws npoints of the kept points)"
            )
        super().__init__(
            mode="pretrain",
            npoints=npoints,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            pin_memory=pin_memory,
            persistent_workers=persistent_workers,
            train_transform=train_transform,
        )
        self.root = Path(root)
        self.whole, self.ratio = whole, ratio
        self.skip_missing_images = skip_missing_images
        self.text_file = text_file
        self.texts_fallback = texts_fallback
        self._categories: list[tuple[str, str]] | None = None
        self.on_device = bool(on_device)
        self.on_device_points = None if on_device_points is None else int(on_device_points)
        self.cache_dir = cache_dir
        self._point_store: PointStore | None = None

    def build_dataset(self, split: str) -> ShapeNet55:
        """``train``: the (whole) training list; ``test``: the test list."""
        return ShapeNet55(
            self.root,
            split=split,
            whole=self.whole and split == "train",
            npoints=self.npoints,
            ratio=self.ratio,
            skip_missing_images=self.skip_missing_images,
            text_file=self.text_file,
            texts_fallback=self.texts_fallback,
        )

    # ------------------------------------------------------------------ on-device path

    def _cached_teachers(self) -> CachedTeachers | None:
        """The attached task's teachers; an error unless they are cached (None: no task)."""
        task = getattr(self.trainer, "lightning_module", None) if self.trainer else None
        if task is None:
            return None
        from ..teachers.cache import CachedTeachers

        teachers = getattr(task, "teachers", None)
        if not isinstance(teachers, CachedTeachers):
            raise ValueError(
                "data.on_device=true needs teachers=cached (features stored by `recon-data "
                "cache-teachers`): on-device batches carry no images, and the online image "
                "teacher needs the rendered PNGs, read and augmented by DataLoader workers every "
                f"step (the task's teachers are {type(teachers).__name__}). Use teachers=cached, "
                "or data.on_device=false"
            )
        return teachers

    def _device(self) -> torch.device:
        strategy = getattr(self.trainer, "strategy", None) if self.trainer else None
        return torch.device(getattr(strategy, "root_device", "cpu"))

    def prepare_data(self) -> None:
        """With ``on_device``: stack the training clouds into their ``.npy`` cache once.

        Lightning calls this on one process per node before ``setup``; the teachers are checked
        first, so a wrong ``teachers`` fails before minutes of reading.
        """
        if self.on_device:
            self._cached_teachers()
            ensure_point_cache(self.dataset("train"), point_cache_dirs(self.root, self.cache_dir))

    def setup(self, stage: str | None = None) -> None:
        """Build the stage's splits; with ``on_device``, put the training data on the device."""
        super().setup(stage)
        if self.on_device and stage in (None, "fit"):
            self._setup_on_device()

    def _setup_on_device(self) -> None:
        teachers = self._cached_teachers()
        if self._point_store is not None:  # a second fit with the same DataModule
            return
        train = self.dataset("train")
        device = self._device()
        if teachers is not None:
            # Before the ~5 GB load: a cache of another split or list fails now, not mid-run.
            used = [train.descriptions[label] for label in sorted(set(train.labels))]
            teachers.check_dataset(len(train), descriptions=used)
        self._point_store = load_point_store(
            train,
            device,
            point_cache_dirs(self.root, self.cache_dir),
            points_per_shape=self.on_device_points,
            seed=run_seed(),
        )
        if teachers is not None:
            teachers.make_resident(device, descriptions=self.descriptions)

    def train_dataloader(self) -> Any:
        """DataLoader path, or with ``on_device`` an :class:`OnDeviceTrainLoader` of indices."""
        if not self.on_device:
            return super().train_dataloader()
        if self._point_store is None:
            self._setup_on_device()
        assert self._point_store is not None
        world, rank = world_and_rank(self.trainer)
        return OnDeviceTrainLoader(
            len(self._point_store),
            self.batch_size,
            self._point_store.device,
            seed=run_seed(),
            num_replicas=world,
            rank=rank,
            epoch=int(self.trainer.current_epoch) if self.trainer is not None else 0,
            trainer=self.trainer,
        )

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Build on-device index batches (subset, normalisation, train transform); see base."""
        if self.on_device and "points" not in batch:  # from OnDeviceTrainLoader
            if self._point_store is None:
                self._setup_on_device()
            assert self._point_store is not None
            # torch's global generator on the device: RankSeeding reseeds it per batch and rank.
            return self._point_store.batch(
                batch["index"], self.npoints, transform=self.train_transform
            )
        return super().on_after_batch_transfer(batch, dataloader_idx)

    # ------------------------------------------------------------------ categories

    @property
    def categories(self) -> list[tuple[str, str]]:
        """``[(synset id, description), ...]`` in label order."""
        if self._categories is None:
            self._categories = category_table(self.root, self.text_file, self.texts_fallback)
        return self._categories

    @property
    def class_names(self) -> list[str]:
        """Short category names in label order (synset table names; the json's text otherwise)."""
        return [SHAPENET55_SYNSETS.get(synset, desc) for synset, desc in self.categories]

    @property
    def descriptions(self) -> list[str]:
        """The category texts in label order."""
        return [desc for _, desc in self.categories]
