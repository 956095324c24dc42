"""Random streams and data partitions that stay correct on any number of processes and on resume.

**Seeding.** The reference seeds every process with ``seed + rank`` once. Here every random draw
is a pure function of the run's ``seed`` and of *where* in the run it happens, so that ranks draw
differently, reruns reproduce, and a run resumed from a checkpoint draws exactly what the
uninterrupted run drew (the position is in the checkpoint; no generator state needs saving):

- the model is initialised under ``seed_everything(seed)`` before any process splits (identical
  on every rank; DDP also broadcasts rank 0's parameters when it wraps the model);
- device-side draws (masking, rotations and scales, point subsets, drop-path, voting views):
  :class:`RankSeeding` reseeds torch (CPU and accelerators), numpy and Python ``random`` before
  every training batch from ``(seed, rank, batches done)``, before each validation from the
  same position, and at the start of test/predict from ``(seed, rank)``. Whatever ran in
  between (a reconstruction plot, the sanity check, a validation) cannot shift the training
  stream;
- per-item draws in the Dataset (ShapeNet's random point subset, image augmentation, the
  point order of training items): :class:`EpochSeededDataset` draws training item ``i`` of
  epoch ``e`` from ``(seed, e, i)`` and evaluation item ``i`` from ``(seed, i)``, whichever rank
  or DataLoader worker loads it. The data are hence the same for 1 or N processes and 0 or N
  workers, persistent or not;
- DataLoader workers get their base seed from a loader-owned generator (never from the global
  stream, whose position must not depend on when Lightning creates an iterator) and Lightning's
  ``pl_worker_init_function`` (``seed_everything(..., workers=True)``) mixes in the rank.

**Data partition.** Training: :class:`ResumableShuffleSampler`, torch's ``DistributedSampler``
(one shuffle of ``seed + epoch`` split over the ranks, padded to equal length as the reference's
loader) that also resumes mid-epoch, served through :class:`ResumableDataLoader`, which Lightning
saves and restores with the loops. Evaluation: :class:`UnpaddedDistributedSampler`, disjoint
slices without padding, so that every validation/test sample is counted exactly once.

**Metrics.** Per-step logs are each rank's own value (no collective per step); epoch values are
reduced once per epoch. Evaluation values must be reduced as sums over the ranks (torchmetrics
states with ``dist_reduce_fx="sum"``: correct/total counts, loss x samples / samples): the
unpadded slices differ in length, and Lightning's ``self.log(..., sync_dist=True)`` mean divides
the summed sample count by the world size *into an integer tensor*, which skews the mean
whenever the slices are uneven. (Training slices are equal, so ``sync_dist`` epoch means are
exact there.)
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler

log = logging.getLogger("recon_lightning")

# Stream tags: the first key after the seed, so that no two kinds of draws share a stream.
TRAIN_STREAM = 0
VAL_STREAM = 1
TEST_STREAM = 2
PREDICT_STREAM = 3
ITEM_STREAM = 4
LOADER_STREAM = 5
EVAL_ITEM_STREAM = 6

#: A training sample key as the training sampler yields it: ``(dataset index, epoch)``.
EpochIndex = tuple[int, int]


def run_seed() -> int:
    """The run's seed: what ``seed_everything`` exported to ``PL_GLOBAL_SEED`` (0 when unset).

    Lightning passes the variable to every process it launches; its own DistributedSampler
    injection reads the same variable, so this package and Lightning agree on it.
    """
    return int(os.environ.get("PL_GLOBAL_SEED", "0"))


def _words(key: tuple[int, ...]) -> np.ndarray:
    if any(int(k) < 0 for k in key):
        raise ValueError(f"seed keys must be non-negative integers; got {key}")
    return np.random.SeedSequence([int(k) for k in key]).generate_state(4, dtype=np.uint32)


def derive_seed(*key: int) -> int:
    """A 64-bit seed from a key of non-negative ints (numpy's ``SeedSequence`` hash mixing).

    Nearby keys (rank 0 and 1, batch 7 and 8) give unrelated seeds, unlike ``seed + rank``.
    """
    words = _words(key)
    return int(words[0]) << 32 | int(words[1])


def seed_all(*key: int, accelerators: bool = True) -> None:
    """Seed torch, numpy and Python ``random`` from ``key`` (see :func:`derive_seed`).

    Args:
        key: non-negative ints, e.g. ``(seed, TRAIN_STREAM, rank, batch)``.
        accelerators: also seed the CUDA (MPS, XPU) generators; ``False`` seeds torch's CPU
            generator only (data items, which never touch a device).
    """
    words = _words(key)
    torch_seed = int(words[0]) << 32 | int(words[1])
    if accelerators:
        torch.manual_seed(torch_seed)
    else:
        torch.random.default_generator.manual_seed(torch_seed)
    # The legacy global generator on purpose: it is the one datasets and augmentations draw from.
    np.random.seed(words[2:4])  # noqa: NPY002
    random.seed(int(words[2]) << 32 | int(words[3]))


@contextmanager
def preserved_host_rng() -> Iterator[None]:
    """Restore torch's CPU, numpy's and Python's global generators on exit."""
    torch_state = torch.random.get_rng_state()
    np_state = np.random.get_state()  # noqa: NPY002 (the global generator is the point)
    py_state = random.getstate()
    try:
        yield
    finally:
        torch.random.set_rng_state(torch_state)
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)


def world_and_rank(trainer: pl.Trainer | None) -> tuple[int, int]:
    """``(world_size, global_rank)`` of a trainer; ``(1, 0)`` without one (or a stand-in)."""
    return int(getattr(trainer, "world_size", 1)), int(getattr(trainer, "global_rank", 0))


# --------------------------------------------------------------------------------------- data


class EpochSeededDataset(Dataset):
    """Each item draws from ``(seed, stream, epoch, index)``, not from the process's stream.

    Keys are :data:`EpochIndex` tuples (the training sampler's) or plain indices, read as epoch 0
    (evaluation: the same clouds every epoch and on any number of processes). The caller's global
    generators are restored after each item, so loading in the main process (``num_workers=0``)
    leaves the device-side stream alone.

    Args:
        dataset: the map-style dataset.
        seed: the run's seed.
        stream: :data:`ITEM_STREAM` (training) or :data:`EVAL_ITEM_STREAM`.
    """

    def __init__(self, dataset: Dataset, seed: int, stream: int = ITEM_STREAM) -> None:
        self.dataset = dataset
        self.seed = int(seed)
        self.stream = int(stream)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: int | EpochIndex) -> Any:
        index, epoch = key if isinstance(key, tuple) else (int(key), 0)
        with preserved_host_rng():
            seed_all(self.seed, self.stream, epoch, index, accelerators=False)
            return self.dataset[index]


class ResumableShuffleSampler(DistributedSampler):
    """Training order: ``DistributedSampler``'s shuffle, yielding ``(index, epoch)`` keys.

    The order is torch's ``DistributedSampler`` order (a permutation seeded with
    ``seed + epoch``, padded to a multiple of the world size, every rank taking every
    ``world``-th index), so the global batch of N processes holds the samples of one process's
    batch. Being a ``DistributedSampler``, Lightning leaves it in place instead of injecting its
    own. :meth:`resume` skips the samples a checkpoint had already consumed in its epoch.

    Args:
        dataset: a sized dataset.
        num_replicas: world size.
        rank: global rank.
        seed: the run's seed.
        epoch: the epoch the first iteration belongs to (``trainer.current_epoch``).
    """

    def __init__(
        self, dataset: Sized, num_replicas: int, rank: int, seed: int, epoch: int = 0
    ) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=False,
        )
        self.epoch = int(epoch)
        self._skip = 0  # samples of ``self.epoch`` already consumed before a resume

    def set_epoch(self, epoch: int) -> None:
        """Lightning calls this before every epoch; a pending resume skip is for its own epoch."""
        if epoch != self.epoch:
            self._skip = 0
        super().set_epoch(epoch)

    def resume(self, epoch: int, consumed: int) -> None:
        """Make the next iteration epoch ``epoch`` without its first ``consumed`` samples."""
        self.epoch, self._skip = int(epoch), max(0, int(consumed))

    def __iter__(self) -> Iterator[EpochIndex]:  # type: ignore[override]
        epoch, skip = self.epoch, self._skip
        self._skip = 0
        indices = list(super().__iter__())[skip:]
        return iter([(int(i), epoch) for i in indices])


class UnpaddedDistributedSampler(DistributedSampler):
    """Evaluation partition: rank ``r`` of ``w`` reads indices ``r, r + w, r + 2w, ...``, in order.

    Unlike ``DistributedSampler`` nothing is padded or repeated: the ranks' slices are disjoint,
    cover the dataset once, and differ in length by at most one. Metrics must then be reduced as
    counts (sums over ranks), never as a mean of per-rank means. Every rank needs at least one
    sample (DDP's first evaluation forward is a collective buffer broadcast).

    Args:
        dataset: a sized dataset with at least ``num_replicas`` items.
        num_replicas: world size.
        rank: global rank.
    """

    def __init__(self, dataset: Sized, num_replicas: int, rank: int) -> None:
        super().__init__(
            dataset,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=False,
            drop_last=False,
        )
        total = len(dataset)
        if total < num_replicas:
            raise ValueError(
                f"an evaluation split of {total} samples cannot give each of {num_replicas} "
                "processes one; evaluate on fewer devices or a larger split"
            )
        self.total_size = total
        self.num_samples = len(range(rank, total, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


class ResumableDataLoader(DataLoader):
    """A training DataLoader that Lightning checkpoints: ``{"epoch", "batches"}`` served so far.

    Lightning saves the state of loaders with ``state_dict``/``load_state_dict`` in the fit
    loop's checkpoint state and restores it before it creates the first iterator of a resumed
    run, so a run stopped mid-epoch (SIGTERM) continues with the batches it had not seen, and a
    run stopped at an epoch's end starts with the next epoch's order. Lightning fetches batches
    of a sized loader one at a time, so "served" is "consumed by the training loop". Iteration
    starts at the first ``next()``, after Lightning's ``set_epoch`` (worker processes would
    otherwise take their first indices from the previous epoch's order on a resumed run).

    Its sampler is a :class:`ResumableShuffleSampler` (any other sampler: a plain DataLoader).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Set by :func:`train_loader`: its loop says when an epoch ended (``limit_train_batches``).
        self.trainer: pl.Trainer | None = None
        self._epoch = 0
        self._served = 0

    def _sampler(self) -> ResumableShuffleSampler | None:
        # Lightning's predict loop rebuilds a loader around its batch sampler (the SVM probe's
        # feature pass over the training split): look one level down too.
        for sampler in (self.sampler, getattr(self.batch_sampler, "sampler", None)):
            if isinstance(sampler, ResumableShuffleSampler):
                return sampler
        return None

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        sampler = self._sampler()
        if sampler is None:
            yield from super().__iter__()
            return
        # Runs at the first ``next()``, after Lightning's ``set_epoch``: the epoch is current.
        self._epoch = sampler.epoch
        self._served = sampler._skip // (self.batch_size or 1)
        for batch in super().__iter__():
            self._served += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        """Where the training loop stands in the data: epoch, batches served, epoch over."""
        done = self._served >= len(self)
        fit_loop = getattr(self.trainer, "fit_loop", None)
        if fit_loop is not None:
            done = bool(fit_loop.epoch_loop.batch_progress.is_last_batch)
        return {"epoch": self._epoch, "batches": self._served, "epoch_done": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Position the sampler after a checkpoint's last served batch."""
        sampler = self._sampler()
        if sampler is None:
            return
        epoch, served = int(state["epoch"]), int(state["batches"])
        if state.get("epoch_done", served >= len(self)):
            sampler.resume(epoch + 1, 0)
        else:
            sampler.resume(epoch, served * (self.batch_size or 1))


def loader_generator(seed: int, rank: int) -> torch.Generator:
    """The generator a DataLoader draws its workers' base seed from (never the global one)."""
    return torch.Generator().manual_seed(derive_seed(seed, LOADER_STREAM, rank))


def train_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    trainer: pl.Trainer | None,
    seed: int | None = None,
    **kwargs: Any,
) -> ResumableDataLoader:
    """The training loader of every DataModule: partitioned, epoch-seeded, resumable, drop-last.

    Args:
        dataset: the training split.
        batch_size: per-device batch.
        trainer: the attached trainer (world size, rank, current epoch); None: one process.
        seed: the run's seed; default :func:`run_seed`.
        kwargs: further DataLoader arguments (``num_workers``, ``pin_memory``, ``collate_fn``).
    """
    seed = run_seed() if seed is None else int(seed)
    world, rank = world_and_rank(trainer)
    epoch = int(getattr(trainer, "current_epoch", 0))
    sampler = ResumableShuffleSampler(dataset, world, rank, seed, epoch)  # type: ignore[arg-type]
    loader = ResumableDataLoader(
        EpochSeededDataset(dataset, seed),
        batch_size=batch_size,
        sampler=sampler,
        # The reference drops the last partial batch in training only.
        drop_last=True,
        generator=loader_generator(seed, rank),
        **kwargs,
    )
    loader.trainer = trainer
    return loader


def eval_loader(
    dataset: Dataset,
    *,
    batch_size: int,
    trainer: pl.Trainer | None,
    seed: int | None = None,
    **kwargs: Any,
) -> DataLoader:
    """An evaluation loader: in order, every sample once over all ranks (no padding), each item
    drawn from ``(seed, index)`` so the evaluation data do not depend on the process count."""
    seed = run_seed() if seed is None else int(seed)
    world, rank = world_and_rank(trainer)
    sampler = UnpaddedDistributedSampler(dataset, world, rank) if world > 1 else None  # type: ignore[arg-type]
    return DataLoader(
        EpochSeededDataset(dataset, seed, EVAL_ITEM_STREAM),
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        drop_last=False,
        generator=loader_generator(seed, rank),
        **kwargs,
    )


# ------------------------------------------------------------------------------- the callback


def batches_done(trainer: pl.Trainer) -> int:
    """Training batches processed since the run began (restored from a resumed checkpoint)."""
    return int(trainer.fit_loop.epoch_loop.batch_progress.total.processed)


class RankSeeding(pl.Callback):
    """Reseeds every generator from ``(seed, stream, rank, position)``; see the module docstring.

    The training position is the number of batches processed so far: before each batch it is
    that batch's index over the whole run, so a run resumed from any checkpoint (end of an
    epoch or mid-epoch) reseeds exactly as the uninterrupted run did. The checkpoint records the
    seed and world size only to warn when a resume changes them.

    Args:
        seed: the run's seed; default :func:`run_seed`.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._world_size = 1

    def _seed(self) -> int:
        return run_seed() if self.seed is None else int(self.seed)

    def _train(self, trainer: pl.Trainer) -> None:
        seed_all(self._seed(), TRAIN_STREAM, trainer.global_rank, batches_done(trainer))

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._world_size = int(trainer.world_size)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train(trainer)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._train(trainer)

    def on_train_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        # ``processed`` already counts this batch: this is the next batch's position.
        self._train(trainer)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_all(self._seed(), VAL_STREAM, trainer.global_rank, batches_done(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # A validation inside an epoch (val_check_interval < 1) must not shift the next batch.
        if trainer.state.fn == TrainerFn.FITTING:
            self._train(trainer)

    def on_test_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_all(self._seed(), TEST_STREAM, trainer.global_rank)

    def on_predict_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seed_all(self._seed(), PREDICT_STREAM, trainer.global_rank)

    def state_dict(self) -> dict[str, int]:
        return {"seed": self._seed(), "world_size": self._world_size}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        saved = (int(state_dict.get("seed", -1)), int(state_dict.get("world_size", -1)))
        if saved != (self._seed(), self._world_size):
            log.warning(
                "resuming with seed %d on %d process(es) a run saved with seed %d on %d: the "
                "random streams and the data order differ from an uninterrupted run",
                self._seed(),
                self._world_size,
                *saved,
            )
