"""Teacher feature cache (beyond the reference): train without loading any teacher network.

``build_cache`` runs the frozen teachers once over a pretraining dataset and stores, memory-mapped:

- text: the features of all 60 prompts of every category description, (C, 60, 512). Text targets
  drawn from the cache are **exact**: the prompt is drawn from the same 60 as online, and the stored
  vector is what the text teacher computes for that prompt.
- image: the features of K augmented views per shape, (N, K, D). This is an **approximation**:
  online training sees a fresh augmentation (crop, flip, RandAugment, cutout) every epoch, the
  cache only the K views drawn at caching time (a training step picks one of them at random).
  K trades disk (N * K * D * 4 bytes: ShapeNet-55's ~52k shapes x K=10 x 768 ~ 1.6 GB) for
  augmentation variety.

Device residency (``data.on_device=true``): :meth:`CachedTeachers.make_resident` copies the image
features onto the training device, where ``targets`` draws the view index and gathers the rows, and
maps labels to text rows there, so a step reads nothing from disk and copies nothing to the device.

Files in the cache folder: ``image_features.npy``, ``text_features.npy``, ``text_index.json`` (the
description of each text row) and ``meta.json`` (written last; a folder without it is incomplete).
Every file is written under a temporary name and renamed into place.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..atomic_io import replace_atomic, write_json_atomic
from .prompts import NUM_PROMPTS, sample_prompt_indices

if TYPE_CHECKING:  # a type only: teachers.py imports this module for its cached mode
    from .teachers import Teachers

log = logging.getLogger(__name__)

CACHE_VERSION = 1
IMAGE_FILE = "image_features.npy"
TEXT_FILE = "text_features.npy"
TEXT_INDEX_FILE = "text_index.json"
META_FILE = "meta.json"
_PARTIAL = ".partial"


class CacheMismatchError(ValueError):
    """The cache on disk was built for other teachers, preprocessing or dataset."""


def _replace_json(path: Path, obj: Any) -> None:
    write_json_atomic(path, obj, sort_keys=True)


@contextmanager
def _seeded_rngs(seed: int) -> Iterator[None]:
    """Seed torch, numpy and ``random`` for in-process augmentation; restore them afterwards.

    The dataset's augmentation may draw from any of the three global generators, so all three are
    seeded (numpy's legacy global state on purpose: that is what dataset code uses).
    """
    states = (random.getstate(), np.random.get_state(), torch.random.get_rng_state())  # noqa: NPY002
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002
    torch.manual_seed(seed)
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])  # noqa: NPY002
        torch.random.set_rng_state(states[2])


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )


def build_cache(
    dataset: Dataset,
    teachers: Teachers,
    out_dir: str | os.PathLike[str],
    views: int = 10,
    batch_size: int = 64,
    num_workers: int = 0,
    seed: int = 0,
    dataset_id: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Compute and store the teacher features of a pretraining dataset.

    Args:
        dataset: map-style dataset whose items are pretraining dicts with ``image`` uint8 RGB
            (3, 224, 224) (augmented inside the dataset), ``text`` (category description) and
            ``index`` (position in the dataset, 0..N-1).
        teachers: the online teachers (``build_teachers(mode="pretrained"|"random")``), on the
            device to run on.
        out_dir: cache folder (created).
        views: K augmented views per shape (K >= 1); the dataset is passed over K times.
        batch_size, num_workers: data loading.
        seed: makes the K views reproducible: view k's loader is seeded from (seed, k), in worker
            processes through the loader's generator, in-process by seeding and then restoring
            torch, numpy and ``random``.
        dataset_id: optional fingerprint of the dataset (e.g. split name + file-list hash), stored
            and checked by ``CachedTeachers``.
        overwrite: replace an existing complete cache instead of raising ``FileExistsError``.
        progress: show a rich progress bar.

    Returns:
        The cache folder.
    """
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / META_FILE
    if meta_path.exists():
        if not overwrite:
            raise FileExistsError(f"a teacher cache already exists in {out}; pass overwrite=True")
        meta_path.unlink()  # the folder is incomplete until the new meta.json lands
    n = len(dataset)
    device = next(teachers.parameters()).device
    img_dim, text_dim = teachers.img_dim, teachers.text_dim

    image_tmp = out / (IMAGE_FILE + _PARTIAL)
    image_mem = np.lib.format.open_memmap(
        image_tmp, mode="w+", dtype=np.float32, shape=(n, views, img_dim)
    )
    filled = np.zeros((n, views), dtype=bool)
    descriptions: set[str] = set()
    with _progress(progress) as bar:
        task = bar.add_task("image teacher", total=n * views)
        for k in range(views):
            view_seed = seed * 1_000_003 + k
            loader = DataLoader(
                dataset,
                batch_size=batch_size,
                shuffle=False,
                num_workers=num_workers,
                generator=torch.Generator().manual_seed(view_seed),
            )
            with _seeded_rngs(view_seed):
                for batch in loader:
                    idx = torch.as_tensor(batch["index"]).long().numpy()
                    feats = teachers.image(torch.as_tensor(batch["image"]).to(device))
                    image_mem[idx, k] = feats.float().cpu().numpy()
                    filled[idx, k] = True
                    if k == 0:
                        descriptions.update(batch["text"])
                    bar.advance(task, len(idx))
        if not filled.all():
            missing = int((~filled).sum())
            raise ValueError(
                f"{missing} (shape, view) slots never written: the dataset's 'index' values must "
                f"cover 0..{n - 1} exactly once per pass"
            )
        image_mem.flush()
        del image_mem

        names = sorted(descriptions)
        text_tmp = out / (TEXT_FILE + _PARTIAL)
        text_mem = np.lib.format.open_memmap(
            text_tmp, mode="w+", dtype=np.float32, shape=(len(names), NUM_PROMPTS, text_dim)
        )
        task = bar.add_task("text teacher", total=len(names))
        for row, name in enumerate(names):
            text_mem[row] = teachers.text.prompt_features(name).float().cpu().numpy()
            bar.advance(task)
        text_mem.flush()
        del text_mem

    replace_atomic(image_tmp, out / IMAGE_FILE)
    replace_atomic(text_tmp, out / TEXT_FILE)
    _replace_json(out / TEXT_INDEX_FILE, names)
    meta = {
        "version": CACHE_VERSION,
        "image_teacher": teachers.image.name,
        "image_source": teachers.image.source,
        "text_teacher": teachers.text.name,
        "text_source": teachers.text.source,
        "preprocess": teachers.image.preprocess,
        "views": views,
        "num_shapes": n,
        "num_descriptions": len(names),
        "num_prompts": NUM_PROMPTS,
        "img_dim": img_dim,
        "text_dim": text_dim,
        "dataset": type(dataset).__name__,
        "dataset_id": dataset_id,
        "seed": seed,
    }
    _replace_json(meta_path, meta)
    return out


def read_meta(cache_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The cache's ``meta.json``; ``FileNotFoundError`` naming the fix when there is none."""
    path = Path(cache_dir) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"no complete teacher cache in {Path(cache_dir)} ({META_FILE} missing); build it with "
            "`recon-data cache-teachers` (recon_lightning.teachers.build_cache)"
        )
    meta = json.loads(path.read_text())
    if meta.get("version") != CACHE_VERSION:
        raise CacheMismatchError(
            f"teacher cache {path.parent} has format version {meta.get('version')}, this code "
            f"reads {CACHE_VERSION}; rebuild it"
        )
    return meta


class CachedTeachers(nn.Module):
    """Teacher targets read from a ``build_cache`` folder; no teacher network is loaded.

    ``targets(batch)`` uses ``batch["index"]`` to find the shape's K image views (one drawn at
    random per sample) and ``batch["text"]`` to find the description's 60 prompt features (one
    drawn at random per sample, as online). Text features (small) live in a non-persistent buffer
    that moves with the module; image features stay memory-mapped on disk, unless
    :meth:`make_resident` put them on the training device.

    Args:
        cache_dir: the cache folder.
        image, text, preprocess: when given, must match what the cache was built with.
        num_shapes: when given, must equal the cached dataset length.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str],
        image: str | None = None,
        text: str | None = None,
        preprocess: str | None = None,
        num_shapes: int | None = None,
    ) -> None:
        super().__init__()
        self.cache_dir = Path(cache_dir)
        self.meta = read_meta(self.cache_dir)
        expected = {"image_teacher": image, "text_teacher": text, "preprocess": preprocess}
        for key, want in expected.items():
            if want is not None and self.meta[key] != want:
                raise CacheMismatchError(
                    f"teacher cache {self.cache_dir} was built with {key}={self.meta[key]!r}, the "
                    f"config asks for {want!r}; rebuild the cache or change the config"
                )
        self.img_dim: int = int(self.meta["img_dim"])
        self.text_dim: int = int(self.meta["text_dim"])
        self.views: int = int(self.meta["views"])
        self.num_shapes: int = int(self.meta["num_shapes"])
        if num_shapes is not None:
            self.check_dataset(num_shapes)
        names = json.loads((self.cache_dir / TEXT_INDEX_FILE).read_text())
        self.descriptions: list[str] = list(names)
        self._rows = {d: i for i, d in enumerate(self.descriptions)}
        text = np.load(self.cache_dir / TEXT_FILE)
        if text.shape != (len(names), NUM_PROMPTS, self.text_dim):
            raise CacheMismatchError(f"{TEXT_FILE} has shape {text.shape}, meta disagrees")
        self.register_buffer("text_features", torch.from_numpy(text), persistent=False)
        self._image: np.ndarray | None = None
        # Device residency (make_resident): plain attributes, not buffers, so that neither DDP
        # (which broadcasts buffers every step) nor checkpoints see the 1.6 GB of image features.
        self._resident = False
        self._resident_image: torch.Tensor | None = None
        self._label_rows: torch.Tensor | None = None

    @property
    def image_features(self) -> np.ndarray:
        """The (N, K, D) image features, memory-mapped read-only (opened on first use)."""
        if self._image is None:
            mem = np.load(self.cache_dir / IMAGE_FILE, mmap_mode="r")
            if mem.shape != (self.num_shapes, self.views, self.img_dim):
                raise CacheMismatchError(f"{IMAGE_FILE} has shape {mem.shape}, meta disagrees")
            self._image = mem
        return self._image

    def __getstate__(self) -> dict[str, Any]:
        # A memmap would be pickled by value (the whole file) when workers or DDP spawn copy us.
        state = self.__dict__.copy()
        state["_image"] = None
        # Nor the resident copy: targets() makes it again on the batches' device after unpickling.
        state["_resident_image"] = None
        if self._label_rows is not None:
            state["_label_rows"] = self._label_rows.cpu()
        return state

    @property
    def resident(self) -> bool:
        """Whether :meth:`make_resident` was called (targets read the device copy)."""
        return self._resident

    def make_resident(
        self, device: torch.device | str, descriptions: Sequence[str] | None = None
    ) -> None:
        """Keep the (N, K, D) image features on ``device`` and look targets up there.

        Afterwards ``targets`` draws the view (and prompt) indices on the batch's device and
        gathers from the device copy, without a host round trip (a batch on another device moves
        the copy once). With ``descriptions`` (the dataset's category texts in label order), the
        text rows come from ``batch["label"]`` on the device and ``batch["text"]`` is not read.
        A description the cache lacks (a category the cached split never showed, e.g. with
        ``data.ratio`` < 1) maps to a row past the table, so a batch with its label fails with an
        indexing error instead of reading another category's features; check the labels a split
        uses with :meth:`check_dataset` first.

        Args:
            device: the training device.
            descriptions: category descriptions in label order.
        """
        device = torch.device(device)
        mem = self.image_features
        image = torch.empty(mem.shape, dtype=torch.float32, device=device)
        step = 4096  # shapes per copy: bounds the host memory used on the way
        for start in range(0, mem.shape[0], step):
            block = np.array(mem[start : start + step], dtype=np.float32)
            image[start : start + step].copy_(torch.from_numpy(block))
        self._resident_image = image
        if descriptions is not None:
            missing = len(self.descriptions)
            rows = [self._rows.get(d, missing) for d in descriptions]
            self._label_rows = torch.tensor(rows, dtype=torch.long, device=device)
        self._resident = True
        log.info(
            "teacher cache: %d x %d image features (%.2f GB) on %s",
            mem.shape[0],
            mem.shape[1],
            image.numel() * 4 / 1e9,
            device,
        )

    def _resident_on(self, device: torch.device) -> torch.Tensor:
        """The resident image features on ``device`` (made again or moved once if needed)."""
        if self._resident_image is None:
            self.make_resident(device)
        assert self._resident_image is not None
        if self._resident_image.device != device:
            log.info("teacher cache: moving the resident image features to %s", device)
            self._resident_image = self._resident_image.to(device)
        return self._resident_image

    def check_dataset(
        self,
        num_shapes: int,
        descriptions: Iterable[str] | None = None,
        dataset_id: str | None = None,
    ) -> None:
        """Raise ``CacheMismatchError`` unless the dataset is the one the cache was built from."""
        if num_shapes != self.num_shapes:
            raise CacheMismatchError(
                f"teacher cache {self.cache_dir} holds {self.num_shapes} shapes, the dataset has "
                f"{num_shapes}; rebuild the cache for this dataset (`recon-data cache-teachers`)"
            )
        if dataset_id is not None and self.meta.get("dataset_id") != dataset_id:
            raise CacheMismatchError(
                f"teacher cache {self.cache_dir} was built for dataset "
                f"{self.meta.get('dataset_id')!r}, not {dataset_id!r}"
            )
        if descriptions is not None:
            unknown = sorted(set(descriptions) - set(self._rows))
            if unknown:
                raise CacheMismatchError(f"descriptions not in the cache: {unknown[:5]}")

    def image_lookup(self, index: torch.Tensor, view: torch.Tensor) -> torch.Tensor:
        """Cached image features of shapes ``index`` (B,) in views ``view`` (B,) -> (B, D), CPU."""
        idx = index.detach().long().cpu()
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_shapes):
            raise CacheMismatchError(
                f"dataset index {int(idx.max())} outside the cache's 0..{self.num_shapes - 1}"
            )
        rows = self.image_features[idx.numpy(), view.detach().long().cpu().numpy()]
        return torch.from_numpy(np.ascontiguousarray(rows))

    def text_lookup(self, descriptions: list[str], prompt_idx: torch.Tensor) -> torch.Tensor:
        """Cached features of prompt ``prompt_idx[i]`` of ``descriptions[i]`` -> (B, 512)."""
        try:
            rows = [self._rows[d] for d in descriptions]
        except KeyError as err:
            raise CacheMismatchError(
                f"description {err.args[0]!r} is not in teacher cache {self.cache_dir}"
            ) from None
        dev = self.text_features.device
        rows_t = torch.tensor(rows, dtype=torch.long, device=dev)
        return self.text_features[rows_t, prompt_idx.to(dev).long()]

    def targets(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets of a batch: ``(img (B, img_dim), text (B, text_dim))`` on the batch's device.

        Draws, with ``generator`` or torch's global RNG: first a view per sample in 0..K-1, then
        a prompt per sample in 0..59. Memory-mapped (the default), the draws are made on the CPU
        (``generator`` must be a CPU generator). Resident (:meth:`make_resident`), they are made
        on ``generator``'s device, or on the batch's device without one, and the same two draws
        from the same CPU generator give the same targets as memory-mapped.
        """
        index = torch.as_tensor(batch["index"])
        if not self._resident:
            texts = list(batch["text"])
            view = torch.randint(0, self.views, (index.shape[0],), generator=generator)
            prompt_idx = sample_prompt_indices(len(texts), generator)
            img = self.image_lookup(index, view).to(index.device)
            txt = self.text_lookup(texts, prompt_idx).to(index.device)
            return img, txt
        n, device = index.shape[0], index.device
        draw_on = generator.device if generator is not None else device
        view = torch.randint(0, self.views, (n,), generator=generator, device=draw_on)
        prompt_idx = torch.randint(0, NUM_PROMPTS, (n,), generator=generator, device=draw_on)
        # No range check here: it would read the indices back to the host every step; the
        # DataModule checked the dataset's length against the cache when it made us resident.
        img = self._resident_on(device)[index.long(), view.to(device)]
        if self._label_rows is not None and "label" in batch:
            if self._label_rows.device != device:
                self._label_rows = self._label_rows.to(device)
            rows = self._label_rows[torch.as_tensor(batch["label"]).long()]
            # text_features moves with the module, so these are no-ops during training.
            table = self.text_features
            txt = table[rows.to(table.device), prompt_idx.to(table.device)]
            return img, txt.to(device)
        txt = self.text_lookup(list(batch["text"]), prompt_idx)
        return img, txt.to(device)

    def extra_repr(self) -> str:
        return (
            f"cache_dir={str(self.cache_dir)!r}, img_dim={self.img_dim}, text_dim={self.text_dim}, "
            f"views={self.views}, num_shapes={self.num_shapes}"
        )
