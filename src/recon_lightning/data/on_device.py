"""On-device pretraining data (``data.on_device=true``): no DataLoader workers, no per-step copy.

The default pretraining path reads one ``.npy`` (and one PNG) per shape in DataLoader workers,
draws the random point subset on the host and copies every batch to the device. This path keeps
the whole training split's stored clouds in one (S, P, 3) float32 tensor on the training device
(ShapeNet-55: 52,470 x 8192 x 3, 5.2 GB) and builds each batch there:

1. :class:`OnDeviceTrainLoader` (the training "loader") yields ``{"index": (B,) int64}`` on the
   device, in the DataLoader path's order (the
   :class:`~recon_lightning.distributed.ResumableShuffleSampler`: shuffled with ``seed + epoch``,
   the same on every rank, each rank taking its own disjoint stride), cut into drop-last
   batches. The epoch's order goes to the device once; the loader is checkpointed, so a run
   resumes mid-epoch where it stopped.
2. :meth:`PointStore.batch` (called from the DataModule's ``on_after_batch_transfer``) gathers a
   random ``npoints`` subset of every shape, sampled without replacement within the shape (the
   first ``npoints`` of a uniformly random permutation, as the reference's per-item
   permutation), normalises each subset to the unit sphere and applies the train transform (the
   random y-rotation). These draws, like the cached teachers' view and prompt draws, use torch's
   global generator on the device, which :class:`~recon_lightning.distributed.RankSeeding`
   reseeds before every training batch from ``(seed, rank, batches done)``: each rank draws its
   own, and a resumed run draws what the uninterrupted one did.

Batches carry the default path's keys except ``image`` (the cached teachers do not read images):
``points`` float32 (B, npoints, 3), ``text`` (:class:`LabelTexts`, the category descriptions,
resolved from the labels only if read), ``label`` int64 (B,), ``index`` int64 (B,).

Loading: the clouds are stacked once into a single ``.npy`` under the dataset's cache folder
(``<root>/.recon_cache``, or a per-user folder when the dataset is read-only), named after a hash
of the split's file list, so a changed list is stacked anew; later runs memory-map it. With
``points_per_shape`` only that many of each shape's stored points are kept on the device, drawn
once at load time (seeded): a smaller memory footprint that changes the pool each step samples
from (a deviation from the reference, which samples from all stored points every step).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, overload

import numpy as np
import torch

from ..atomic_io import replace_atomic
from ..distributed import ResumableShuffleSampler, run_seed
from .base import available_cpus
from .errors import MalformedDatasetError
from .progress import progress_counter
from .transforms import BatchTransform, normalize_unit_sphere

log = logging.getLogger(__name__)

#: Bumped whenever the stacked cache's layout changes, so old caches are not read.
POINT_CACHE_VERSION = 1
#: Shapes read, copied or subsampled per step while loading (bounds the host memory used).
_CHUNK = 1024


class StoredClouds(Protocol):
    """What the loader needs from a dataset (:class:`~recon_lightning.data.ShapeNet55` has it)."""

    files: list[str]
    labels: list[int]

    @property
    def descriptions(self) -> list[str]: ...

    def __len__(self) -> int: ...

    def load_points(self, index: int) -> np.ndarray: ...


# ---------------------------------------------------------------------------------- text


class LabelTexts(Sequence[str]):
    """A batch's ``text`` (``descriptions[label[i]]``), resolved from the labels on first read.

    Reading it copies the (B,) labels to the host (a device sync); the cached teachers look their
    text rows up from ``label`` on the device and never read it. ``len`` needs no sync.

    Args:
        labels: (B,) int64 category labels, on any device.
        descriptions: the category descriptions in label order.
    """

    def __init__(self, labels: torch.Tensor, descriptions: Sequence[str]) -> None:
        self.labels = labels
        self.descriptions = tuple(descriptions)
        self._texts: list[str] | None = None

    def _resolve(self) -> list[str]:
        if self._texts is None:
            self._texts = [self.descriptions[i] for i in self.labels.tolist()]
        return self._texts

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> list[str]: ...

    def __getitem__(self, i: int | slice) -> str | list[str]:
        return self._resolve()[i]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return list(self) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # equal to lists, hence unhashable like them

    def __repr__(self) -> str:
        return f"LabelTexts({self._resolve()!r})"


# ---------------------------------------------------------------------------------- cache


def _user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recon_lightning"


def point_cache_dirs(root: Path, cache_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders for the stacked cache, in order: ``cache_dir`` if given, else
    ``root/.recon_cache`` then a per-user folder (``$XDG_CACHE_HOME`` or ``~/.cache``, then
    ``recon_lightning/shapenet55-<hash of root>``) for read-only datasets."""
    if cache_dir is not None:
        return [Path(cache_dir)]
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return [root / ".recon_cache", _user_cache_root() / f"shapenet55-{digest}"]


def point_cache_name(files: Sequence[str]) -> str:
    """``shapenet55_points_<hash>.npy``: the hash covers the layout version and the file list."""
    digest = hashlib.sha256(f"shapenet55-points-v{POINT_CACHE_VERSION}\n".encode())
    for name in files:
        digest.update(f"{name}\n".encode())
    return f"shapenet55_points_{digest.hexdigest()[:16]}.npy"


def _is_writable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def _open_cache(path: Path, num_shapes: int) -> np.ndarray | None:
    """The memory-mapped (S, P, 3) float32 cache at ``path``; None if absent or unusable."""
    if not path.is_file():
        return None
    try:
        mem = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        log.warning("stacked point cache %s is unreadable (%s); stacking anew", path, exc)
        return None
    if mem.ndim != 3 or mem.shape[0] != num_shapes or mem.shape[2] != 3 or mem.dtype != np.float32:
        log.warning(
            "stacked point cache %s holds %s %s, not (%d, P, 3) float32; stacking anew",
            path,
            mem.shape,
            mem.dtype,
            num_shapes,
        )
        return None
    return mem


def _stack_into(dataset: StoredClouds, out: np.ndarray, readers: int) -> None:
    """Read every cloud of ``dataset`` into ``out`` (S, P, 3), in dataset order."""
    num, stored = out.shape[:2]
    with (
        progress_counter(f"stacking {num} point clouds", num, log) as advance,
        ThreadPoolExecutor(max_workers=readers) as pool,
    ):
        # Reading .npy files releases the GIL, so threads overlap the file system's latency;
        # chunks keep at most _CHUNK clouds in flight.
        for start in range(0, num, _CHUNK):
            stop = min(start + _CHUNK, num)
            for i, points in enumerate(pool.map(dataset.load_points, range(start, stop)), start):
                if points.shape[0] != stored:
                    raise MalformedDatasetError(
                        f"{dataset.files[i]} holds {points.shape[0]} points, {dataset.files[0]} "
                        f"{stored}: data.on_device stacks every cloud into one tensor and needs "
                        "the same count in each (ShapeNet-55 stores 8192); use data.on_device=false"
                    )
                out[i] = points
            advance(stop - start)


def ensure_point_cache(
    dataset: StoredClouds, cache_dirs: Sequence[Path], readers: int | None = None
) -> Path | None:
    """Stack the dataset's clouds into the single ``.npy`` cache unless a valid one exists.

    Args:
        dataset: the training split.
        cache_dirs: candidate folders, in order (:func:`point_cache_dirs`); an existing cache in
            any of them is used, a new one goes to the first writable one.
        readers: threads reading the ``.npy`` files (default: one per CPU, at most 8).

    Returns:
        The cache path, or None when no folder can be written (the caller stacks in memory).
    """
    name = point_cache_name(dataset.files)
    num = len(dataset)
    for folder in cache_dirs:
        if _open_cache(folder / name, num) is not None:
            return folder / name
    target = next((f for f in cache_dirs if _is_writable(f)), None)
    if target is None:
        log.warning(
            "cannot write the stacked point cache in %s; stacking in memory for this run only "
            "(set data.cache_dir to a writable folder to keep it)",
            " or ".join(map(str, cache_dirs)),
        )
        return None
    if num == 0:
        raise MalformedDatasetError("data.on_device: the training split is empty")
    stored = dataset.load_points(0).shape[0]
    path = target / name
    fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp.npy", dir=target)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        mem = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(num, stored, 3))
        _stack_into(dataset, mem, readers or min(8, available_cpus()))
        mem.flush()
        del mem
        replace_atomic(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    others = sorted(p.name for p in target.glob("shapenet55_points_*.npy") if p.name != name)
    size_gb = path.stat().st_size / 1e9
    log.info("stacked %d point clouds into %s (%.1f GB)", num, path, size_gb)
    if others:
        log.info("older stacked caches for other file lists can be deleted: %s", ", ".join(others))
    return path


# ---------------------------------------------------------------------------------- store


@dataclass
class PointStore:
    """The training split on the device.

    Attributes:
        points: (S, P, 3) float32 stored clouds, as read (not normalised).
        labels: (S,) int64 category labels.
        descriptions: category descriptions in label order (the batches' ``text``).
    """

    points: torch.Tensor
    labels: torch.Tensor
    descriptions: tuple[str, ...]

    @property
    def device(self) -> torch.device:
        return self.points.device

    def __len__(self) -> int:
        return int(self.points.shape[0])

    def batch(
        self,
        index: torch.Tensor,
        npoints: int,
        generator: torch.Generator | None = None,
        transform: BatchTransform | None = None,
    ) -> dict[str, Any]:
        """Build the pretraining batch of shapes ``index`` on the store's device.

        Args:
            index: (B,) int64 shape indices.
            npoints: points per cloud, at most P; drawn without replacement within each shape.
            generator: generator on the store's device for the subsets and the transform
                (torch's global RNG when None).
            transform: batch transform applied after normalisation (e.g. ``rotate_y``).

        Returns:
            ``points`` float32 (B, npoints, 3), ``text`` :class:`LabelTexts`, ``label`` int64
            (B,), ``index`` int64 (B,): the default path's keys except ``image``.
        """
        index = index.to(self.device, torch.long)
        stored = self.points.shape[1]
        if not 1 <= npoints <= stored:
            raise ValueError(f"npoints={npoints} must be in [1, {stored}] (points kept per shape)")
        # Argsort of i.i.d. uniform keys is a uniformly random permutation per shape; its first
        # npoints are the reference's randperm(N)[:npoints], for the whole batch in one kernel.
        keys = torch.rand(index.shape[0], stored, generator=generator, device=self.device)
        choice = keys.argsort(dim=1)[:, :npoints]
        points = normalize_unit_sphere(self.points[index[:, None], choice])
        if transform is not None:
            points = transform(points, generator=generator)
        label = self.labels[index]
        return {
            "points": points,
            "text": LabelTexts(label, self.descriptions),
            "label": label,
            "index": index,
        }


def _copy_to_device(
    source: np.ndarray,
    device: torch.device,
    points_per_shape: int | None,
    seed: int,
) -> torch.Tensor:
    """(S, P, 3) host or memory-mapped array -> (S, P', 3) tensor on ``device``, in chunks."""
    num, stored = source.shape[:2]
    keep = stored if points_per_shape is None else points_per_shape
    if not 1 <= keep <= stored:
        raise ValueError(
            f"data.on_device_points={points_per_shape}: must be in [1, {stored}] (points stored "
            "per shape)"
        )
    out = torch.empty((num, keep, 3), dtype=torch.float32, device=device)
    # A CPU generator: the kept pool is the same whatever the device, and on every DDP rank.
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, num, _CHUNK):
        stop = min(start + _CHUNK, num)
        block = torch.from_numpy(np.array(source[start:stop], dtype=np.float32))
        if keep < stored:
            choice = torch.rand(stop - start, stored, generator=gen).argsort(dim=1)[:, :keep]
            block = torch.gather(block, 1, choice[..., None].expand(-1, -1, 3))
        out[start:stop].copy_(block)
    return out


def load_point_store(
    dataset: StoredClouds,
    device: torch.device | str,
    cache_dirs: Sequence[Path],
    points_per_shape: int | None = None,
    seed: int = 0,
) -> PointStore:
    """Put the dataset's clouds, labels and descriptions on ``device``.

    Args:
        dataset: the training split.
        device: the training device.
        cache_dirs: see :func:`ensure_point_cache` (the stacked ``.npy`` is built if missing).
        points_per_shape: keep only this many points per shape, drawn once here without
            replacement from a CPU generator seeded with ``seed`` (None: all stored points).
        seed: seed of that draw.

    Returns:
        The :class:`PointStore`.
    """
    device = torch.device(device)
    start = time.monotonic()
    path = ensure_point_cache(dataset, cache_dirs)
    if path is not None:
        source = np.load(path, mmap_mode="r", allow_pickle=False)
    else:
        source = np.empty((len(dataset), dataset.load_points(0).shape[0], 3), np.float32)
        _stack_into(dataset, source, min(8, available_cpus()))
    points = _copy_to_device(source, device, points_per_shape, seed)
    del source
    log.info(
        "data.on_device: %d clouds x %d points (%.2f GB) on %s in %.0fs",
        points.shape[0],
        points.shape[1],
        points.numel() * 4 / 1e9,
        device,
        time.monotonic() - start,
    )
    labels = torch.tensor(dataset.labels, dtype=torch.long, device=device)
    return PointStore(points=points, labels=labels, descriptions=tuple(dataset.descriptions))


# ---------------------------------------------------------------------------------- loader


class OnDeviceTrainLoader:
    """The on-device training loader: per epoch, drop-last batches of shape indices on a device.

    Iterating yields ``{"index": (B,) int64}`` on ``device``. The order is the DataLoader path's
    (:class:`~recon_lightning.distributed.ResumableShuffleSampler`: ``DistributedSampler``'s
    shuffle of ``seed + epoch``, the same on every rank, rank ``r`` of ``R`` taking every R-th
    index from position ``r``, so the shards are disjoint up to the at most R - 1 indices it
    repeats to even them out); it goes to the device once per epoch and the batches are views of
    it. Lightning calls ``sampler.set_epoch`` before each epoch and saves :meth:`state_dict` in
    checkpoints, so a resumed run continues with the batches it had not seen, as
    :class:`~recon_lightning.distributed.ResumableDataLoader` does.

    Args:
        num_samples: shapes in the training split.
        batch_size: per-device batch size.
        device: the training device.
        seed: the run's seed (default :func:`~recon_lightning.distributed.run_seed`).
        num_replicas, rank: DDP world size and this process's global rank.
        epoch: the epoch the first iteration belongs to (``trainer.current_epoch``).
        trainer: the attached trainer; its loop says when an epoch ended (``limit_train_batches``).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        device: torch.device | str,
        seed: int | None = None,
        num_replicas: int = 1,
        rank: int = 0,
        epoch: int = 0,
        trainer: Any = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        seed = run_seed() if seed is None else int(seed)
        self.sampler = ResumableShuffleSampler(range(num_samples), num_replicas, rank, seed, epoch)
        self.trainer = trainer
        self._epoch = int(epoch)
        self._served = 0

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        # Runs at the first next(), after Lightning's set_epoch: the sampler's epoch is current,
        # and a resume has told it how many of the epoch's samples to skip.
        self._epoch = self.sampler.epoch
        self._served = self.sampler._skip // self.batch_size
        keys = list(self.sampler)
        # One host-to-device copy per epoch, whatever the number of steps.
        order = torch.tensor([index for index, _ in keys], dtype=torch.long).to(self.device)
        for b in range(len(keys) // self.batch_size):
            self._served += 1
            yield {"index": order[b * self.batch_size : (b + 1) * self.batch_size]}

    def state_dict(self) -> dict[str, int]:
        """Where the training loop stands in the data: epoch, batches served, epoch over."""
        done = self._served >= len(self)
        if self.trainer is not None:
            done = bool(self.trainer.fit_loop.epoch_loop.batch_progress.is_last_batch)
        return {"epoch": self._epoch, "batches": self._served, "epoch_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Position the sampler after a checkpoint's last served batch."""
        epoch, served = int(state["epoch"]), int(state["batches"])
        if state.get("epoch_done", served >= len(self)):
            self.sampler.resume(epoch + 1, 0)
        else:
            self.sampler.resume(epoch, served * self.batch_size)
