"""ShapeNetPart part segmentation on the reference's on-disk layout (``PartNormalDataset``).

``root`` is ``data/shapenetcore_partanno_segmentation_benchmark_v0_normal``::

    synsetoffset2category.txt                 ``<Category> <synset>`` per line (16 lines)
    <synset>/<id>.txt                         one line per point: ``x y z nx ny nz part_label``
    train_test_split/shuffled_{train,val,test}_file_list.json
                                              lists of ``shape_data/<synset>/<id>``

Splits: ``trainval`` (train ∪ val, 14,007 shapes) for training, ``test`` (2,874) for evaluation;
validation and test both read ``test``, as the reference does. ``train`` and ``val`` can be read
on their own. Within a split, shapes are ordered as the reference orders them: by category in
``synsetoffset2category.txt`` order, then by file name.

Per item, as the reference: xyz only (the normals are dropped), unit-sphere normalisation of the
whole cloud (``pc_normalize``), then ``npoints`` (2048) points drawn **with replacement**, also at
test time. Unlike the reference, test draws are seeded per shape (from ``(seed, index)``), so an
evaluation is repeatable; training draws come from torch's generator, which Lightning seeds per
worker and rank, so they change every epoch.

Category labels are the index of the category *name* in :data:`SHAPENETPART_CATEGORIES` (the
order of the standard ``synsetoffset2category.txt``, which is what the reference uses); part
labels are the global 0..49 labels stored in the files (:data:`SEG_CLASSES`).

Parsing ~16k text files takes about a minute, so each split is parsed once into a plain ``.npz``
(no pickle) under ``cache_dir``: concatenated xyz and part labels plus per-shape offsets, keyed on
the split's file list and each file's size and modification time, so that changed sources are
re-parsed.

Batch contracts (see :class:`ShapeNetPartDataModule`):

- train: ``points`` float32 (B, npoints, 3), scaled and shifted per shape on the device;
  ``seg`` int64 (B, npoints) global part labels; ``category`` int64 (B,); ``index`` int64 (B,).
- validation / test: the same keys, without augmentation, with seeded draws.
- validation / test with ``eval_all_points=True``: additionally the whole original cloud,
  zero-padded to the longest cloud of the batch: ``points_all`` float32 (B, M, 3), ``seg_all``
  int64 (B, M) padded with -1, ``mask_all`` bool (B, M) (True on real points), ``num_points``
  int64 (B,). The model runs on ``points``; :func:`propagate_to_all_points` carries its per-point
  output to ``points_all`` and the metric counts the points under ``mask_all``.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from recon_lightning.ops import gather_points, knn, three_nn_interpolate

from ..atomic_io import write_with_atomic
from ..distributed import eval_loader, train_loader
from .base import require_full_batch, resolve_num_workers
from .errors import DatasetNotFoundError, MalformedDatasetError, describe_missing, require_dir
from .progress import progress_counter
from .transforms import normalize_unit_sphere_np

log = logging.getLogger(__name__)

#: Folder name of the dataset under ``paths.data_dir``.
FOLDER = "shapenetcore_partanno_segmentation_benchmark_v0_normal"

#: Category names in label order, with their synset folders (standard synsetoffset2category.txt).
SHAPENETPART_CATEGORIES: dict[str, str] = {
    "Airplane": "02691156",
    "Bag": "02773838",
    "Cap": "02954340",
    "Car": "02958343",
    "Chair": "03001627",
    "Earphone": "03261776",
    "Guitar": "03467517",
    "Knife": "03624134",
    "Lamp": "03636649",
    "Laptop": "03642806",
    "Motorbike": "03790512",
    "Mug": "03797390",
    "Pistol": "03948459",
    "Rocket": "04099429",
    "Skateboard": "04225987",
    "Table": "04379243",
}

#: Global part labels of each category (the reference's ``seg_classes``).
SEG_CLASSES: dict[str, tuple[int, ...]] = {
    "Airplane": (0, 1, 2, 3),
    "Bag": (4, 5),
    "Cap": (6, 7),
    "Car": (8, 9, 10, 11),
    "Chair": (12, 13, 14, 15),
    "Earphone": (16, 17, 18),
    "Guitar": (19, 20, 21),
    "Knife": (22, 23),
    "Lamp": (24, 25, 26, 27),
    "Laptop": (28, 29),
    "Motorbike": (30, 31, 32, 33, 34, 35),
    "Mug": (36, 37),
    "Pistol": (38, 39, 40),
    "Rocket": (41, 42, 43),
    "Skateboard": (44, 45, 46),
    "Table": (47, 48, 49),
}

CLASS_NAMES: list[str] = list(SHAPENETPART_CATEGORIES)
NUM_CLASSES = len(CLASS_NAMES)
NUM_PARTS = sum(len(parts) for parts in SEG_CLASSES.values())
#: Category index -> its global part labels.
CATEGORY_TO_PARTS: dict[int, tuple[int, ...]] = {
    i: SEG_CLASSES[name] for i, name in enumerate(CLASS_NAMES)
}
#: Global part label -> category index.
PART_TO_CATEGORY: dict[int, int] = {
    part: cat for cat, parts in CATEGORY_TO_PARTS.items() for part in parts
}

SPLITS = ("train", "val", "test", "trainval")
#: Bumped whenever the cache layout or parsing changes, so old caches are rebuilt.
CACHE_VERSION = 1
#: Columns of a shape file: x y z nx ny nz part_label.
N_COLUMNS = 7


def how_to_get(root: Path) -> str:
    """The hint appended to ShapeNetPart file errors."""
    return (
        f"Download {FOLDER}.zip (ShapeNetPart with normals, as the reference's DATASET.md says) "
        f"and unzip it under paths.data_dir, so that {root} holds synsetoffset2category.txt, "
        "train_test_split/ and one folder per synset."
    )


def part_mask(
    category_to_parts: Mapping[int, Sequence[int]] | Sequence[Sequence[int]] = CATEGORY_TO_PARTS,
    num_parts: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """(C, P) bool table: ``mask[c, p]`` is True when part ``p`` belongs to category ``c``.

    Args:
        category_to_parts: global part labels per category, indexable by 0..C-1.
        num_parts: P; default one more than the largest part label.
        device: device of the table.
    """
    parts = [list(category_to_parts[c]) for c in range(len(category_to_parts))]
    if num_parts is None:
        num_parts = 1 + max(p for ps in parts for p in ps)
    mask = torch.zeros(len(parts), num_parts, dtype=torch.bool, device=device)
    for c, ps in enumerate(parts):
        mask[c, ps] = True
    return mask


# ---------------------------------------------------------------------------------- file layout


@dataclass(frozen=True)
class ShapeEntry:
    """One listed shape: category label, ``<synset>/<id>`` name and the txt path."""

    category: int
    name: str
    path: Path


def read_categories(root: Path) -> dict[str, str]:
    """``synsetoffset2category.txt`` -> ``{category name: synset folder}`` in file order."""
    path = root / "synsetoffset2category.txt"
    if not path.is_file():
        raise DatasetNotFoundError(f"missing dataset file {path}. {how_to_get(root)}")
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedDatasetError(f"cannot read {path}: {exc}. {how_to_get(root)}") from exc
    categories: dict[str, str] = {}
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2:
            raise MalformedDatasetError(
                f"{path}, line {number}: expected '<Category> <synset>', got {line.strip()!r}"
            )
        name, synset = fields
        if name not in SEG_CLASSES:
            raise MalformedDatasetError(
                f"{path}, line {number}: unknown category {name!r}; ShapeNetPart has "
                f"{', '.join(CLASS_NAMES)}"
            )
        categories[name] = synset
    if not categories:
        raise MalformedDatasetError(f"{path} lists no categories. {how_to_get(root)}")
    return categories


def _read_split_list(root: Path, split: str) -> list[str]:
    path = root / "train_test_split" / f"shuffled_{split}_file_list.json"
    if not path.is_file():
        raise DatasetNotFoundError(f"missing dataset file {path}. {how_to_get(root)}")
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedDatasetError(f"cannot parse {path} as JSON: {exc}") from exc
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise MalformedDatasetError(
            f"{path}: expected a JSON list of 'shape_data/<synset>/<id>' strings"
        )
    return entries


def split_entries(root: Path, split: str) -> list[ShapeEntry]:
    """The shapes of ``split`` in the reference's order (category file order, then file name).

    ``trainval`` is the union of the train and val lists. Listed files that do not exist raise
    a :class:`DatasetNotFoundError` naming them.
    """
    if split not in SPLITS:
        raise ValueError(f"ShapeNetPart split must be one of {SPLITS}; got {split!r}")
    require_dir(root, how_to_get(root))
    categories = read_categories(root)
    label_of_synset = {synset: CLASS_NAMES.index(name) for name, synset in categories.items()}
    order_of_synset = {synset: k for k, synset in enumerate(categories.values())}
    lists = ("train", "val") if split == "trainval" else (split,)
    keys: set[tuple[str, str]] = set()
    for name in lists:
        for entry in _read_split_list(root, name):
            parts = entry.strip("/").split("/")
            if len(parts) < 2 or parts[-2] not in label_of_synset:
                raise MalformedDatasetError(
                    f"{root / 'train_test_split' / f'shuffled_{name}_file_list.json'}: entry "
                    f"{entry!r} is not 'shape_data/<synset>/<id>' with a synset listed in "
                    f"{root / 'synsetoffset2category.txt'}"
                )
            keys.add((parts[-2], parts[-1]))
    # The reference walks the category folders in file order and sorts the file names.
    ordered = sorted(keys, key=lambda k: (order_of_synset[k[0]], f"{k[1]}.txt"))
    entries = [
        ShapeEntry(label_of_synset[s], f"{s}/{i}", root / s / f"{i}.txt") for s, i in ordered
    ]
    missing = [e.path for e in entries if not e.path.is_file()]
    if missing:
        raise DatasetNotFoundError(
            f"ShapeNetPart {split!r} shape files listed but not found: "
            f"{describe_missing(missing)}. {how_to_get(root)}"
        )
    return entries


# ---------------------------------------------------------------------------------- parsing


def _locate_error(path: Path, text: str) -> str:
    """Find the first bad line of a shape file the fast parser refused; '' if none found."""
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != N_COLUMNS:
            return (
                f"{path}, line {number}: expected {N_COLUMNS} columns "
                f"(x y z nx ny nz part_label), found {len(fields)}"
            )
        for column, value in enumerate(fields, start=1):
            try:
                float(value)
            except ValueError:
                return f"{path}, line {number}, column {column}: {value!r} is not a number"
    return ""


def _line_of_row(text: str, row: int) -> int:
    """1-based line number of the ``row``-th (0-based) non-blank line."""
    seen = -1
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            seen += 1
            if seen == row:
                return number
    return row + 1


def parse_shape_file(path: Path, category: int) -> tuple[np.ndarray, np.ndarray]:
    """Read one shape file -> (xyz (N, 3) float32, part labels (N,) uint8).

    Values are parsed as float64 and cast, as the reference's ``np.loadtxt(...).astype(float32)``.

    Raises:
        MalformedDatasetError: a wrong column count, a non-numeric or non-finite value, or a part
            label that is not an integer among ``category``'s parts; names the file and line.
    """
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedDatasetError(f"cannot read ShapeNetPart shape file {path}: {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below
            data = np.loadtxt(io.StringIO(text), dtype=np.float64, comments=None, ndmin=2)
    except ValueError as exc:
        # numpy's message counts rows inconsistently; find the exact line ourselves.
        raise MalformedDatasetError(
            _locate_error(path, text) or f"cannot parse {path}: {exc}"
        ) from exc
    if data.shape[0] == 0:
        raise MalformedDatasetError(f"ShapeNetPart shape file {path} holds no points")
    if data.shape[1] != N_COLUMNS:
        raise MalformedDatasetError(
            f"{path}, line {_line_of_row(text, 0)}: expected {N_COLUMNS} columns "
            f"(x y z nx ny nz part_label), found {data.shape[1]}"
        )
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise MalformedDatasetError(
            f"{path}, line {_line_of_row(text, row)}: non-finite value in {data[row].tolist()}"
        )
    labels = data[:, -1]
    parts = np.asarray(CATEGORY_TO_PARTS[category])
    valid = (labels == np.round(labels)) & np.isin(labels, parts)
    if not valid.all():
        row = int(np.argmin(valid))
        name = CLASS_NAMES[category]
        raise MalformedDatasetError(
            f"{path}, line {_line_of_row(text, row)}: part label {labels[row]:g} is not a part "
            f"of {name} (its parts are {parts.min()}..{parts.max()})"
        )
    xyz = np.ascontiguousarray(data[:, :3], dtype=np.float32)
    return xyz, labels.astype(np.uint8)


# ---------------------------------------------------------------------------------- cache


def _user_cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "recon_lightning"


def default_cache_dirs(root: Path) -> list[Path]:
    """Where caches are looked for, in order: ``root/.recon_cache``, then a per-user folder.

    The per-user folder (``$XDG_CACHE_HOME`` or ``~/.cache``, then ``recon_lightning/``) has one
    subfolder per dataset root, so datasets at different paths never overwrite each other.
    """
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    return [root / ".recon_cache", _user_cache_root() / f"shapenetpart-{digest}"]


def _is_writable(folder: Path) -> bool:
    """Create ``folder`` if needed and check that a file can be written in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError:
        return False
    return True


def cache_key(entries: Sequence[ShapeEntry], split: str) -> str:
    """sha256 over the layout version, split, shapes with labels, and each file's size and mtime."""
    digest = hashlib.sha256(f"shapenetpart-v{CACHE_VERSION}\n{split}\n".encode())
    for entry in entries:
        stat = entry.path.stat()
        digest.update(
            f"{entry.name}\t{entry.category}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode()
        )
    return digest.hexdigest()


def _write_npz_atomic(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """``np.savez`` atomically: a half-written cache is never read back."""
    write_with_atomic(path, lambda handle: np.savez(handle, **arrays))


@dataclass
class PartSplit:
    """One parsed split: concatenated xyz/labels with offsets (shape k is ``offsets[k:k+2]``)."""

    xyz: np.ndarray  # (T, 3) float32, raw coordinates
    seg: np.ndarray  # (T,) uint8 global part labels
    offsets: np.ndarray  # (M + 1,) int64
    category: np.ndarray  # (M,) int64
    names: list[str]  # M ``<synset>/<id>``


def _parse_split(entries: Sequence[ShapeEntry], split: str) -> PartSplit:
    xyz, seg = [], []
    with progress_counter(
        f"ShapeNetPart {split}: parsing shape files", len(entries), log, timed=False
    ) as advance:
        for entry in entries:
            points, labels = parse_shape_file(entry.path, entry.category)
            xyz.append(points)
            seg.append(labels)
            advance(1)
    lengths = np.array([len(s) for s in seg], dtype=np.int64)
    return PartSplit(
        xyz=np.concatenate(xyz) if xyz else np.zeros((0, 3), np.float32),
        seg=np.concatenate(seg) if seg else np.zeros((0,), np.uint8),
        offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        category=np.array([e.category for e in entries], dtype=np.int64),
        names=[e.name for e in entries],
    )


def _read_cache(path: Path, key: str) -> PartSplit | None:
    """The cached split if ``path`` holds one with ``key``; None if absent, stale or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["key"]) != key:  # only this member is read for a stale cache
                log.info("ShapeNetPart cache %s is stale (source files changed); re-parsing", path)
                return None
            data = PartSplit(
                xyz=z["xyz"],
                seg=z["seg"],
                offsets=z["offsets"],
                category=z["category"],
                names=[str(n) for n in z["names"]],
            )
        total = len(data.xyz)
        if not (
            data.xyz.ndim == 2
            and data.xyz.shape[1] == 3
            and len(data.seg) == total == int(data.offsets[-1])
            and len(data.offsets) == len(data.category) + 1 == len(data.names) + 1
        ):
            raise ValueError("array sizes do not match")
        return data
    except (OSError, ValueError, KeyError, IndexError, EOFError, zipfile.BadZipFile) as exc:
        log.warning("ShapeNetPart cache %s is unreadable (%s); re-parsing", path, exc)
        return None


def load_split(
    root: str | os.PathLike[str], split: str, cache_dir: str | os.PathLike[str] | None = None
) -> PartSplit:
    """Parse ``split`` once and cache it; later calls read the cache while the sources match.

    Args:
        root: the ``shapenetcore_partanno_segmentation_benchmark_v0_normal`` folder.
        split: ``train``, ``val``, ``test`` or ``trainval``.
        cache_dir: folder for ``shapenetpart_<split>.npz``. Default: ``root/.recon_cache``, or,
            when that cannot be written, ``~/.cache/recon_lightning/shapenetpart-<hash>`` (said
            in one log line). An explicit folder that cannot be written raises.
    """
    root = Path(root)
    entries = split_entries(root, split)
    key = cache_key(entries, split)
    name = f"shapenetpart_{split}.npz"
    folders = [Path(cache_dir)] if cache_dir is not None else default_cache_dirs(root)
    for folder in folders:
        cached = _read_cache(folder / name, key)
        if cached is not None:
            return cached
    data = _parse_split(entries, split)
    target = next((f for f in folders if _is_writable(f)), None)
    if target is None:
        raise OSError(
            f"cannot write the ShapeNetPart cache in {' or '.join(map(str, folders))}; "
            "set data.cache_dir to a writable folder"
        )
    if cache_dir is None and target != folders[0]:
        log.info("%s is read-only; caching ShapeNetPart %s in %s", root, split, target)
    _write_npz_atomic(
        target / name,
        {
            "key": np.array(key),
            "version": np.array(CACHE_VERSION),
            "xyz": data.xyz,
            "seg": data.seg,
            "offsets": data.offsets,
            "category": data.category,
            "names": np.array(data.names, dtype=str),
        },
    )
    return data


# ---------------------------------------------------------------------------------- dataset


class ShapeNetPart(Dataset):
    """One ShapeNetPart split (``PartNormalDataset`` with ``normal_channel=False``).

    Args:
        root: the ``shapenetcore_partanno_segmentation_benchmark_v0_normal`` folder.
        split: ``trainval`` (training), ``test`` (evaluation), ``train`` or ``val``.
        npoints: points drawn with replacement per item (2048).
        seed: None: draws from torch's generator (training; Lightning seeds it per worker and
            rank, and it moves on every epoch). An int: the draw for item ``k`` comes from a
            generator seeded with ``(seed, k)``, identical in every epoch, worker and run.
        return_all_points: also return the whole normalised cloud (``points_all``, ``seg_all``).
        cache_dir: see :func:`load_split`.

    Items: ``points`` float32 (npoints, 3), ``seg`` int64 (npoints,), ``category`` int64 (),
    ``index`` int64 (); with ``return_all_points`` also ``points_all`` float32 (N_k, 3) and
    ``seg_all`` int64 (N_k,).
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str = "trainval",
        npoints: int = 2048,
        seed: int | None = None,
        return_all_points: bool = False,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        if npoints < 1:
            raise ValueError(f"npoints must be >= 1; got {npoints}")
        self.root = Path(root)
        self.split = split
        self.npoints = int(npoints)
        self.seed = None if seed is None else int(seed)
        self.return_all_points = bool(return_all_points)
        data = load_split(self.root, split, cache_dir)
        self.xyz, self.seg, self.offsets = data.xyz, data.seg, data.offsets
        self.category, self.names = data.category, data.names

    def __len__(self) -> int:
        return len(self.category)

    def num_points(self, index: int) -> int:
        """Stored points of shape ``index``."""
        return int(self.offsets[index + 1] - self.offsets[index])

    def _choice(self, index: int, n: int) -> np.ndarray:
        if self.seed is None:
            return torch.randint(0, n, (self.npoints,)).numpy()
        return np.random.default_rng((self.seed, index)).integers(0, n, self.npoints)

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, stop = int(self.offsets[index]), int(self.offsets[index + 1])
        xyz = normalize_unit_sphere_np(self.xyz[start:stop])
        seg = self.seg[start:stop].astype(np.int64)
        choice = self._choice(index, stop - start)
        item = {
            "points": torch.from_numpy(np.ascontiguousarray(xyz[choice])),
            "seg": torch.from_numpy(seg[choice]),
            "category": torch.tensor(self.category[index], dtype=torch.long),
            "index": torch.tensor(index, dtype=torch.long),
        }
        if self.return_all_points:
            item["points_all"] = torch.from_numpy(xyz)
            item["seg_all"] = torch.from_numpy(seg)
        return item


def collate_all_points(items: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Collate items with whole clouds of different lengths: pad to the longest, add a mask.

    Returns the stacked fixed-size keys plus ``points_all`` (B, M, 3) zero-padded, ``seg_all``
    (B, M) padded with -1, ``mask_all`` (B, M) bool, ``num_points`` (B,) int64.
    """
    batch: dict[str, torch.Tensor] = {
        key: torch.stack([item[key] for item in items])
        for key in items[0]
        if key not in ("points_all", "seg_all")
    }
    lengths = torch.tensor([len(item["seg_all"]) for item in items], dtype=torch.long)
    width = int(lengths.max())
    points = torch.zeros(len(items), width, 3, dtype=items[0]["points_all"].dtype)
    seg = torch.full((len(items), width), -1, dtype=torch.long)
    for k, item in enumerate(items):
        points[k, : lengths[k]] = item["points_all"]
        seg[k, : lengths[k]] = item["seg_all"]
    batch["points_all"] = points
    batch["seg_all"] = seg
    batch["mask_all"] = torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)
    batch["num_points"] = lengths
    return batch


# ---------------------------------------------------------------------------------- device side


def scale_and_shift(
    points: torch.Tensor,
    scale_low: float = 0.8,
    scale_high: float = 1.25,
    shift_range: float = 0.1,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The reference's segmentation augmentation, per shape, on the batch's device.

    ``random_scale_point_cloud`` (one isotropic factor per shape, U[low, high]) then
    ``shift_point_cloud`` (one 3-vector per shape, each component U[-range, range]).

    Args:
        points: (B, N, 3).

    Returns:
        (B, N, 3).
    """
    b = points.shape[0]
    u = torch.rand(b, 1, 1, generator=generator, device=points.device, dtype=points.dtype)
    factor = scale_low + (scale_high - scale_low) * u
    v = torch.rand(b, 1, 3, generator=generator, device=points.device, dtype=points.dtype)
    shift = (2.0 * v - 1.0) * shift_range
    return points * factor + shift


def propagate_to_all_points(
    points: torch.Tensor,
    values: torch.Tensor,
    points_all: torch.Tensor,
    method: str = "three_nn",
    backend: str = "auto",
) -> torch.Tensor:
    """Carry per-point model outputs from the resampled cloud to every original point.

    Args:
        points: (B, n, 3) points the model saw (the batch's ``points``).
        values: (B, n, C) per-point outputs, e.g. log-probabilities over the 50 parts.
        points_all: (B, M, 3) whole clouds (the batch's ``points_all``; padded rows get values
            too, which ``mask_all`` then excludes).
        method: ``"three_nn"``: inverse-distance weights over the 3 nearest sampled points
            (:func:`~recon_lightning.ops.three_nn_interpolate`); ``"nearest"``: the nearest
            sampled point's values. An original point that was sampled gets its own values
            either way (its distance is 0).
        backend: kNN backend.

    Returns:
        (B, M, C) values; follow with :func:`~recon_lightning.evaluation.segmentation_metrics.
        masked_argmax` for labels.
    """
    if method == "three_nn":
        return three_nn_interpolate(points_all, points, values, backend=backend)
    if method == "nearest":
        _, idx = knn(points_all, points, 1, backend=backend)
        return gather_points(values, idx[..., 0])
    raise ValueError(f"method must be 'three_nn' or 'nearest'; got {method!r}")


# ---------------------------------------------------------------------------------- DataModule


class ShapeNetPartDataModule(L.LightningDataModule):
    """ShapeNetPart part segmentation (the reference's ``segmentation/main.py`` data).

    Training reads ``trainval`` with fresh random draws every epoch and, on the device, the
    per-shape scale and shift augmentation (:func:`scale_and_shift`). Validation and test read
    ``test`` (as the reference) with per-shape seeded draws, so every evaluation sees the same
    points.

    Batch contracts (B = batch, n = ``npoints``):

    - train: ``points`` float32 (B, n, 3) augmented; ``seg`` int64 (B, n) global part labels
      0..49; ``category`` int64 (B,) 0..15; ``index`` int64 (B,) position in the split.
    - validation / test: the same, not augmented.
    - validation / test with ``eval_all_points``: in addition ``points_all`` float32 (B, M, 3),
      the whole normalised clouds zero-padded to the longest of the batch M; ``seg_all`` int64
      (B, M), padded with -1; ``mask_all`` bool (B, M), True on real points; ``num_points``
      int64 (B,). The model sees ``points``; the task carries its output to ``points_all`` with
      :func:`propagate_to_all_points` and scores ``seg_all`` under ``mask_all``. Padding (not a
      batch of 1) keeps the eval batch size, at the cost of (B, M) tensors with M up to ~3k.

    Args:
        root: ``${paths.data_dir}/shapenetcore_partanno_segmentation_benchmark_v0_normal``.
        npoints: points per shape the model sees (2048), drawn with replacement.
        batch_size: per-device training batch (the reference's 16 over all devices).
        eval_batch_size: validation/test batch (32 in the reference); default ``batch_size``.
        num_workers: DataLoader workers, or ``"auto"``.
        pin_memory: pin host memory; default: when CUDA is available.
        persistent_workers: keep workers alive between epochs (when ``num_workers > 0``).
        eval_all_points: evaluate on every original point (see the batch contract).
        eval_seed: seed of the per-shape evaluation draws.
        augment: scale and shift training clouds on the device.
        scale_low, scale_high, shift_range: augmentation ranges (0.8, 1.25, 0.1).
        train_split: ``trainval`` (reference) or ``train``.
        val_split: split of the validation loader: ``test`` (reference) or ``val``.
        cache_dir: folder of the parsed-split caches; see :func:`load_split`.
    """

    dataset_name = "shapenetpart"
    class_names: list[str] = CLASS_NAMES
    num_classes: int = NUM_CLASSES
    num_parts: int = NUM_PARTS
    seg_classes: dict[str, tuple[int, ...]] = SEG_CLASSES
    category_to_parts: dict[int, tuple[int, ...]] = CATEGORY_TO_PARTS
    part_to_category: dict[int, int] = PART_TO_CATEGORY
    test_split = "test"

    def __init__(
        self,
        root: str | os.PathLike[str],
        npoints: int = 2048,
        batch_size: int = 16,
        eval_batch_size: int | None = 32,
        num_workers: int | str = "auto",
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        eval_all_points: bool = False,
        eval_seed: int = 0,
        augment: bool = True,
        scale_low: float = 0.8,
        scale_high: float = 1.25,
        shift_range: float = 0.1,
        train_split: str = "trainval",
        val_split: str = "test",
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        if npoints < 1 or batch_size < 1:
            raise ValueError(f"npoints and batch_size must be >= 1; got {npoints}, {batch_size}")
        if train_split not in ("trainval", "train"):
            raise ValueError(f"train_split must be 'trainval' or 'train'; got {train_split!r}")
        if val_split not in ("test", "val"):
            raise ValueError(f"val_split must be 'test' or 'val'; got {val_split!r}")
        self.root = Path(root)
        self.npoints = int(npoints)
        self.batch_size = int(batch_size)
        self.eval_batch_size = int(eval_batch_size or batch_size)
        self.num_workers = resolve_num_workers(num_workers)
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.persistent_workers = bool(persistent_workers) and self.num_workers > 0
        self.eval_all_points = bool(eval_all_points)
        self.eval_seed = int(eval_seed)
        self.augment = bool(augment)
        self.scale_low, self.scale_high = float(scale_low), float(scale_high)
        self.shift_range = float(shift_range)
        self.train_split, self.val_split = train_split, val_split
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self._datasets: dict[str, ShapeNetPart] = {}

    # ------------------------------------------------------------------ datasets

    def build_dataset(self, split: str) -> ShapeNetPart:
        """The training split draws at random; every other split draws seeded per shape."""
        training = split == self.train_split
        return ShapeNetPart(
            self.root,
            split,
            npoints=self.npoints,
            seed=None if training else self.eval_seed,
            return_all_points=self.eval_all_points and not training,
            cache_dir=self.cache_dir,
        )

    def dataset(self, split: str) -> ShapeNetPart:
        """The (cached) dataset for ``split``; built on first use."""
        if split not in self._datasets:
            self._datasets[split] = self.build_dataset(split)
        return self._datasets[split]

    def part_mask(self, device: torch.device | str | None = None) -> torch.Tensor:
        """(16, 50) bool: which parts belong to which category (for :func:`masked_argmax`)."""
        return part_mask(self.category_to_parts, self.num_parts, device)

    # ------------------------------------------------------------------ Lightning hooks

    def _splits(self, stage: str | None) -> list[str]:
        splits = []
        if stage in (None, "fit"):
            splits.append(self.train_split)
        if stage in (None, "fit", "validate"):
            splits.append(self.val_split)
        if stage in (None, "test", "predict"):
            splits.append(self.test_split)
        return list(dict.fromkeys(splits))

    def prepare_data(self) -> None:
        """Parse and cache the splits once per node, before every rank's ``setup`` reads them."""
        for split in self._splits(None):
            load_split(self.root, split, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Build the splits the stage needs, so file errors surface before the first batch."""
        for split in self._splits(stage):
            dataset = self.dataset(split)
            if split == self.train_split:
                world = getattr(self.trainer, "world_size", 1) if self.trainer is not None else 1
                require_full_batch(split, len(dataset), self.batch_size, world)

    def _loader(self, split: str, train: bool) -> DataLoader:
        # The package's samplers: training shuffles like DistributedSampler and resumes
        # mid-epoch; evaluation splits the shapes over the ranks without padding, so no shape is
        # counted twice in the mIoU (see recon_lightning.distributed).
        all_points = self.eval_all_points and not train
        make = train_loader if train else eval_loader
        return make(
            self.dataset(split),
            batch_size=self.batch_size if train else self.eval_batch_size,
            trainer=self.trainer,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.persistent_workers,
            collate_fn=collate_all_points if all_points else None,
        )

    def train_dataloader(self) -> DataLoader:
        """Shuffled ``trainval`` loader, last partial batch dropped."""
        return self._loader(self.train_split, train=True)

    def val_dataloader(self) -> DataLoader:
        """Loader over :attr:`val_split` (``test``), in order."""
        return self._loader(self.val_split, train=False)

    def test_dataloader(self) -> DataLoader:
        """Loader over ``test``, in order."""
        return self._loader(self.test_split, train=False)

    def _is_training(self) -> bool:
        trainer = self.trainer
        return trainer is not None and bool(trainer.training)

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Scale and shift training clouds on the device; evaluation batches pass unchanged."""
        if self.augment and self._is_training():
            batch["points"] = scale_and_shift(
                batch["points"], self.scale_low, self.scale_high, self.shift_range
            )
        return batch
