"""The DataModule base shared by every dataset: loaders, batch contract, device-side sampling.

Batch contract (what the task modules rely on):

- ``mode="pretrain"`` batches: ``points`` float32 (B, N, 3) after the dataset's per-item sampling
  and unit-sphere normalisation, ``image`` uint8 (B, 3, 224, 224) RGB after the image
  augmentation, ``text`` list[str] (the category description, no prompt), ``label`` int64 (B,)
  category index, ``index`` int64 (B,) position in the dataset (for cached teacher features).
  On the device, training batches get a random y-rotation (the reference's ``PointcloudRotate``).
- ``mode="classification"`` batches: ``points`` float32 (B, N_stored, 3) and ``label`` int64 (B,)
  as loaded; then :meth:`PointCloudDataModule.on_after_batch_transfer` resamples on the device
  like the reference runner:

  - training: FPS to ``point_all`` (1200 / 2400 / 4800 / 8192 for npoints 1024 / 2048 / 4096 /
    8192, capped by N_stored), a random ``npoints`` subset, then the dataset's train
    augmentation. ``points`` becomes (B, npoints, 3).
  - evaluation (validation, test, predict, or no trainer): deterministic FPS to ``npoints`` in
    ``points``, plus ``points_raw`` (B, N_stored, 3), the untouched cloud for voting
    (:func:`~recon_lightning.data.transforms.vote_views` with :attr:`vote_transform`).

As in the reference, validation and test both read the test split (there is no validation split).
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Any, Literal

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..distributed import eval_loader, train_loader
from .transforms import (
    BatchTransform,
    fps_sample,
    fps_then_subset,
    get_batch_transform,
    point_all_for,
)

Mode = Literal["pretrain", "classification"]


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask under SLURM/taskset, else the count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def resolve_num_workers(num_workers: int | str) -> int:
    """DataLoader workers: an int as given, or ``"auto"``: one per available CPU, at most 8."""
    if num_workers == "auto":
        return min(8, available_cpus())
    try:
        value = int(num_workers)
    except (TypeError, ValueError):
        raise ValueError(
            f"data.num_workers={num_workers!r}: give a number of workers or 'auto'"
        ) from None
    if value < 0:
        raise ValueError(f"data.num_workers={value}: must be >= 0 (or 'auto')")
    return value


def require_full_batch(split: str, num_samples: int, batch_size: int, world_size: int = 1) -> None:
    """Refuse a training split that a drop-last loader would turn into zero steps.

    Args:
        split: split name, for the message.
        num_samples: samples in the split.
        batch_size: per-device batch size.
        world_size: number of devices (each gets ``num_samples / world_size`` samples).

    Raises:
        ValueError: fewer samples per device than one batch; names the way out.
    """
    per_device = num_samples // max(world_size, 1)
    if per_device < batch_size:
        raise ValueError(
            f"the {split!r} split has {num_samples} samples, fewer than one per-device batch of "
            f"{batch_size} on each of {world_size} device(s) ({per_device} per device): the "
            "training loader drops the last partial batch, so no step would run. Use a smaller "
            f"global batch, e.g. data.total_bs={max(1, per_device) * max(world_size, 1)}, or "
            "more data"
        )


class PointCloudDataModule(L.LightningDataModule, ABC):
    """Loaders and device-side sampling/augmentation for one dataset; see the module docstring.

    Args:
        mode: ``"pretrain"`` (points/image/text batches) or ``"classification"``.
        npoints: points per cloud the model sees.
        batch_size: per-device training batch size (the configs give the reference's global
            ``total_bs``, which ``recon-train`` divides by the device count).
        eval_batch_size: validation/test batch size; defaults to ``batch_size``.
        num_workers: DataLoader workers, or ``"auto"`` (one per available CPU, at most 8).
        pin_memory: pin host memory; default: when CUDA is available.
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        train_transform: device-side train augmentation, a name from
            :data:`~recon_lightning.data.transforms.BATCH_TRANSFORMS`.
        vote_transform: test-time transform for voting (a name as above).
        shared_subset: draw the training random subset once per batch, as the reference does
            (``np.random.choice`` once per batch); ``False`` draws one per cloud.
    """

    #: Short dataset identifier, for logging and for picking protocol details in tasks.
    dataset_name: str = "point_clouds"
    #: Splits read by the validation and test loaders. The reference has no validation split and
    #: evaluates on the test split every epoch; datasets with a real validation split override.
    val_split: str = "test"
    test_split: str = "test"

    def __init__(
        self,
        *,
        mode: Mode,
        npoints: int,
        batch_size: int,
        eval_batch_size: int | None = None,
        num_workers: int | str = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transform: str = "rotate_y",
        vote_transform: str = "none",
        shared_subset: bool = True,
    ) -> None:
        super().__init__()
        if mode not in ("pretrain", "classification"):
            raise ValueError(f"mode must be 'pretrain' or 'classification'; got {mode!r}")
        if npoints < 1 or batch_size < 1:
            raise ValueError(f"npoints and batch_size must be >= 1; got {npoints}, {batch_size}")
        self.mode: Mode = mode
        self.npoints = int(npoints)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = resolve_num_workers(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        # Resolve the names now so a typo fails at construction, not mid-epoch.
        self.train_transform_name = train_transform
        self.vote_transform_name = vote_transform
        self.train_transform: BatchTransform = get_batch_transform(train_transform)
        self._vote_transform: BatchTransform = get_batch_transform(vote_transform)
        self.shared_subset = bool(shared_subset)
        self._datasets: dict[str, Dataset] = {}

    # ------------------------------------------------------------------ dataset hooks

    @abstractmethod
    def build_dataset(self, split: str) -> Dataset:
        """Build the dataset for ``split`` (``"train"`` or ``"test"``; some add ``"val"``)."""

    @property
    @abstractmethod
    def class_names(self) -> list[str]:
        """Category names in label order."""

    @property
    def num_classes(self) -> int:
        """Number of categories (length of :attr:`class_names`)."""
        return len(self.class_names)

    # ------------------------------------------------------------------ public helpers

    @property
    def vote_transform(self) -> BatchTransform:
        """The reference's test-time voting transform for this dataset, a batch function."""
        return self._vote_transform

    def point_all(self, available: int) -> int:
        """FPS pool size before the random subset, for clouds of ``available`` stored points."""
        return point_all_for(self.npoints, available)

    def dataset(self, split: str) -> Dataset:
        """The (cached) dataset for ``split``; built on first use."""
        if split not in self._datasets:
            self._datasets[split] = self.build_dataset(split)
        return self._datasets[split]

    # ------------------------------------------------------------------ Lightning hooks

    def setup(self, stage: str | None = None) -> None:
        """Build the splits the stage needs, so file errors surface before the first batch."""
        if stage in (None, "fit"):
            train = self.dataset("train")
            world = self.trainer.world_size if self.trainer is not None else 1
            require_full_batch("train", len(train), self.batch_size, world)
        if stage in (None, "fit", "validate"):
            self.dataset(self.val_split)
        if stage in (None, "test", "predict"):
            self.dataset(self.test_split)

    def _loader(self, split: str, train: bool) -> DataLoader:
        # Samplers that know the world size: training shuffles like DistributedSampler (and
        # resumes mid-epoch), evaluation splits the data over the ranks without padding so that
        # every sample is counted once; see recon_lightning.distributed.
        make = train_loader if train else eval_loader
        return make(
            self.dataset(split),
            batch_size=self.batch_size if train else self.eval_batch_size,
            trainer=self.trainer,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled training loader, last partial batch dropped; items seeded per epoch and index.

        The shuffle is ``DistributedSampler``'s (``seed + epoch``, split over the ranks), each
        item's random draws come from ``(seed, epoch, index)``
        (:class:`~recon_lightning.distributed.EpochSeededDataset`), and Lightning checkpoints
        the loader's position, so a resumed run sees the data an uninterrupted one would.
        """
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        """Loader over :attr:`val_split`, in order; each rank a disjoint, unpadded slice."""
        return self._loader(self.val_split, train=False)

    def test_dataloader(self) -> DataLoader:
        """Loader over :attr:`test_split`, in order; each rank a disjoint, unpadded slice."""
        return self._loader(self.test_split, train=False)

    def _is_training(self) -> bool:
        trainer = self.trainer
        return trainer is not None and bool(trainer.training)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Device-side sampling and augmentation; see the module docstring for the contract."""
        points: torch.Tensor = batch["points"]
        training = self._is_training()
        if self.mode == "pretrain":
            if training:
                batch["points"] = self.train_transform(points)
            return batch
        if training:
            sampled = fps_then_subset(points, self.npoints, shared=self.shared_subset)
            batch["points"] = self.train_transform(sampled)
        else:
            batch["points_raw"] = points
            batch["points"] = fps_sample(points, self.npoints)
        return batch
