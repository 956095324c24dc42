"""Your own point clouds: a folder of ``.npy`` / ``.ply`` files, one subfolder per class.

Layout (class names are the subfolder names, labels their sorted order unless ``class_names``
gives the order; files may sit in nested folders below their class folder)::

    root/
      chair/  a.npy  b.ply  scans/c.ply
      table/  d.npy  ...

- ``.npy``: an (N, C >= 3) numeric array, xyz in the first three columns (extra columns such
  as normals or colours are dropped). Read with ``allow_pickle=False``.
- ``.ply``: ASCII or binary (little / big endian) PLY; the ``x``, ``y``, ``z`` properties of the
  ``vertex`` element are read (faces and other properties ignored) by the small reader below,
  which only ever interprets numbers.

Splits: a JSON ``split_file`` ``{"train": [...], "test": [...]}`` (optionally ``"val"``) of
paths relative to ``root``, or else a deterministic per-class split: files are ranked by a hash
of ``(split_seed, relative path)`` and the first ``test_fraction`` of each class is the test
split, so the split is a pure function of the file names (no random state, the same on every
machine and rank).

Each cloud is read once (when its split is first built), brought to ``num_points`` stored points
(furthest point sampling of larger clouds; smaller ones keep every point and repeat some,
seeded per file) and normalised to the unit sphere; training items get a fresh random point
order per access. :class:`PointFolderDataModule` then follows the ``classification`` batch
contract of :mod:`.base` (device-side FPS to ``npoints``, augmentation, ``points_raw`` for
voting), so any downstream task or probe runs on it unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import atomic_io
from .base import PointCloudDataModule
from .errors import DatasetNotFoundError, MalformedDatasetError, require_dir, require_file
from .transforms import normalize_unit_sphere_np

#: File types read, by lower-case suffix.
POINT_EXTENSIONS: tuple[str, ...] = (".npy", ".ply")

#: PLY scalar type names (both spellings) -> numpy type codes (byte order added when reading).
PLY_TYPES: dict[str, str] = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1",
    "short": "i2", "int16": "i2", "ushort": "u2", "uint16": "u2",
    "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip

_PLY_FORMATS = {"ascii": None, "binary_little_endian": "<", "binary_big_endian": ">"}

#: A PLY header longer than this is not a point cloud header (guards against reading garbage).
_MAX_HEADER = 1 << 16

LAYOUT_HINT = (
    "Put each class's point files (.npy arrays of shape (N, >=3) or .ply) in its own subfolder: "
    "root/<class>/<file>."
)


# ------------------------------------------------------------------------------- file readers


def _parse_ply_header(path: Path, data: bytes) -> tuple[str, list[dict[str, Any]], int]:
    """(format, elements, body offset) of a PLY file; each element ``{name, count, props}``
    with props ``(name, type)`` or ``(name, "list", count_type, item_type)``."""
    if not data.startswith(b"ply"):
        raise MalformedDatasetError(f"{path} is not a PLY file (it does not start with 'ply')")
    match = re.search(rb"end_header[ \t]*\r?\n", data[:_MAX_HEADER])
    if match is None:
        raise MalformedDatasetError(f"{path}: no 'end_header' line in the first 64 KiB")
    try:
        header = data[: match.start()].decode("ascii")
    except UnicodeDecodeError as exc:
        raise MalformedDatasetError(f"{path}: PLY header is not ASCII ({exc})") from exc
    fmt, elements = None, []
    for number, line in enumerate(header.splitlines()[1:], start=2):
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        bad = MalformedDatasetError(f"{path}: unreadable PLY header line {number}: {line!r}")
        if words[0] == "format":
            if len(words) != 3 or words[1] not in _PLY_FORMATS:
                raise bad
            fmt = words[1]
        elif words[0] == "element":
            if len(words) != 3 or not words[2].isdigit():
                raise bad
            elements.append({"name": words[1], "count": int(words[2]), "props": []})
        elif words[0] == "property":
            if not elements:
                raise bad
            if len(words) == 5 and words[1] == "list":
                if words[2] not in PLY_TYPES or words[3] not in PLY_TYPES:
                    raise bad
                elements[-1]["props"].append((words[4], "list", words[2], words[3]))
            elif len(words) == 3 and words[1] in PLY_TYPES:
                elements[-1]["props"].append((words[2], words[1]))
            else:
                raise bad
        else:
            raise bad
    if fmt is None:
        raise MalformedDatasetError(f"{path}: PLY header has no 'format' line")
    return fmt, elements, match.end()


def read_ply(path: str | os.PathLike[str]) -> np.ndarray:
    """The vertex ``x, y, z`` of an ASCII or binary PLY file as (N, 3) float32.

    Raises:
        MalformedDatasetError: not a PLY file, no vertex x/y/z, truncated data, or a layout this
            reader does not handle (a binary element with list properties before the vertices);
            the message names the file.
    """
    path = Path(path)
    data = path.read_bytes()
    fmt, elements, offset = _parse_ply_header(path, data)
    names = [e["name"] for e in elements]
    if "vertex" not in names:
        raise MalformedDatasetError(f"{path}: PLY file has no 'vertex' element")
    vertex = elements[names.index("vertex")]
    props = vertex["props"]
    prop_names = [p[0] for p in props]
    missing = [axis for axis in ("x", "y", "z") if axis not in prop_names]
    if missing:
        raise MalformedDatasetError(f"{path}: PLY vertices have no {missing} property")
    if any(p[1] == "list" for p in props):
        raise MalformedDatasetError(f"{path}: PLY vertices with list properties are not supported")
    count = vertex["count"]
    before = elements[: names.index("vertex")]
    if fmt == "ascii":
        lines = [ln for ln in data[offset:].decode("latin-1").splitlines() if ln.strip()]
        start = sum(e["count"] for e in before)  # one line per element instance
        rows = lines[start : start + count]
        if len(rows) < count:
            raise MalformedDatasetError(
                f"{path}: PLY file is truncated ({len(rows)} of {count} vertex lines)"
            )
        columns = [prop_names.index(axis) for axis in ("x", "y", "z")]
        try:
            xyz = np.loadtxt(rows, usecols=columns, ndmin=2, dtype=np.float64)
        except (ValueError, IndexError) as exc:
            raise MalformedDatasetError(f"{path}: unreadable PLY vertex line ({exc})") from exc
    else:
        order = _PLY_FORMATS[fmt]
        for element in before:
            if any(p[1] == "list" for p in element["props"]):
                raise MalformedDatasetError(
                    f"{path}: binary PLY with a list element ({element['name']!r}) before the "
                    "vertices is not supported; save the vertices first"
                )
            stride = sum(np.dtype(order + PLY_TYPES[p[1]]).itemsize for p in element["props"])
            offset += element["count"] * stride
        try:
            dtype = np.dtype([(name, order + PLY_TYPES[kind]) for name, kind in props])
        except (ValueError, TypeError) as exc:  # e.g. a property named twice
            raise MalformedDatasetError(f"{path}: unusable PLY vertex properties ({exc})") from exc
        if len(data) - offset < count * dtype.itemsize:
            raise MalformedDatasetError(
                f"{path}: PLY file is truncated ({len(data) - offset} bytes of vertex data, "
                f"{count} vertices need {count * dtype.itemsize})"
            )
        table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
        xyz = np.stack([table["x"], table["y"], table["z"]], axis=1)
    return np.asarray(xyz, dtype=np.float32).reshape(-1, 3)


def write_ply(path: str | os.PathLike[str], points: np.ndarray, binary: bool = True) -> Path:
    """Write (N, 3) points as a PLY file of float vertices (binary little endian or ASCII),
    atomically; e.g. to export clouds for a viewer or to make a test folder."""
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must have shape (N, 3); got {points.shape}")
    fmt = "binary_little_endian" if binary else "ascii"
    header = (
        f"ply\nformat {fmt} 1.0\nelement vertex {len(points)}\n"
        "property float x\nproperty float y\nproperty float z\nend_header\n"
    ).encode("ascii")
    if binary:
        body = points.astype("<f4").tobytes()
    else:
        body = "".join(f"{x:.7g} {y:.7g} {z:.7g}\n" for x, y, z in points).encode("ascii")
    return atomic_io.write_with_atomic(path, lambda f: f.write(header + body))


def read_npy(path: str | os.PathLike[str]) -> np.ndarray:
    """xyz of an (N, C >= 3) numeric ``.npy`` array as (N, 3) float32 (never unpickles)."""
    path = Path(path)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise MalformedDatasetError(f"cannot read point file {path}: {exc}") from exc
    if not isinstance(array, np.ndarray):  # an .npz archive renamed to .npy
        raise MalformedDatasetError(f"{path} is not a single .npy array")
    if array.ndim != 2 or array.shape[1] < 3:
        raise MalformedDatasetError(
            f"point file {path} has shape {array.shape}; expected (N, C >= 3) with xyz first"
        )
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise MalformedDatasetError(f"point file {path} holds {array.dtype}, not numbers")
    return np.ascontiguousarray(array[:, :3], dtype=np.float32)


def read_point_file(path: str | os.PathLike[str]) -> np.ndarray:
    """(N, 3) float32 xyz of one ``.npy`` or ``.ply`` file, checked non-empty and finite."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        points = read_npy(path)
    elif suffix == ".ply":
        try:
            points = read_ply(path)
        except OSError as exc:
            raise MalformedDatasetError(f"cannot read point file {path}: {exc}") from exc
    else:
        raise MalformedDatasetError(f"{path}: unsupported point file type (use .npy or .ply)")
    if len(points) == 0:
        raise MalformedDatasetError(f"point file {path} holds no points")
    if not np.isfinite(points).all():
        raise MalformedDatasetError(f"point file {path} holds NaN or infinite coordinates")
    return points


# -------------------------------------------------------------------------- folder and splits


def scan_folder(
    root: str | os.PathLike[str],
    class_names: Sequence[str] | None = None,
    extensions: Sequence[str] = POINT_EXTENSIONS,
) -> tuple[list[str], list[int], list[str]]:
    """Point files under ``root/<class>/`` -> (relative posix paths, labels, class names).

    Args:
        root: the dataset folder.
        class_names: label order; default: the class subfolders, sorted. Every name must have a
            folder, and every class folder must be named.
        extensions: suffixes read (case-insensitive).

    Raises:
        DatasetNotFoundError: ``root`` or a named class folder is missing.
        MalformedDatasetError: no class folders, an empty class folder, point files directly
            under ``root`` (no class), or class folders not in ``class_names``.
    """
    root = Path(root)
    require_dir(root, LAYOUT_HINT)
    exts = tuple(e.lower() for e in extensions)

    def point_files(folder: Path) -> list[Path]:
        return sorted(
            p
            for p in folder.rglob("*")
            if p.is_file()
            and p.suffix.lower() in exts
            and not any(part.startswith(".") for part in p.relative_to(root).parts)
        )

    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in exts]
    if loose:
        raise MalformedDatasetError(
            f"{len(loose)} point file(s) directly in {root} (e.g. {loose[0].name}) have no class. "
            + LAYOUT_HINT
        )
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise MalformedDatasetError(f"{root} has no class subfolders. {LAYOUT_HINT}")
    if class_names is None:
        class_names = folders
    else:
        class_names = list(class_names)
        absent = [c for c in class_names if c not in folders]
        if absent:
            raise DatasetNotFoundError(f"class folder(s) {absent} missing under {root}")
        extra = [f for f in folders if f not in class_names]
        if extra:
            raise MalformedDatasetError(
                f"{root} has class folder(s) {extra} that class_names does not list"
            )
    files, labels = [], []
    for label, name in enumerate(class_names):
        found = point_files(root / name)
        if not found:
            raise MalformedDatasetError(
                f"class folder {root / name} holds no {'/'.join(exts)} files. {LAYOUT_HINT}"
            )
        files += [p.relative_to(root).as_posix() for p in found]
        labels += [label] * len(found)
    return files, labels, list(class_names)


def deterministic_split(
    files: Sequence[str], labels: Sequence[int], test_fraction: float = 0.2, seed: int = 0
) -> dict[str, list[int]]:
    """Indices of ``train`` and ``test``: per class, files ranked by a hash of ``(seed, path)``,
    the first ``round(test_fraction * n)`` are test (at least one when the class has two or more
    files and ``test_fraction > 0``, and at least one file always stays in train)."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}")
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(label, []).append(i)
    split: dict[str, list[int]] = {"train": [], "test": []}
    for members in by_class.values():
        ranked = sorted(
            members,
            key=lambda i: hashlib.sha1(f"{seed}/{files[i]}".encode()).hexdigest(),
        )
        n = len(ranked)
        n_test = round(test_fraction * n)
        if test_fraction > 0 and n >= 2:
            n_test = min(max(n_test, 1), n - 1)
        split["test"] += ranked[:n_test]
        split["train"] += ranked[n_test:]
    return {k: sorted(v) for k, v in split.items()}


def read_split_file(path: str | os.PathLike[str], files: Sequence[str]) -> dict[str, list[int]]:
    """Indices per split from a JSON ``{"train": [...], "test": [...], "val": [...]?}`` of paths
    relative to the dataset root (files not listed are not used).

    Raises:
        DatasetNotFoundError: the split file is missing, or lists a file not found.
        MalformedDatasetError: not such a JSON object, no ``train``/``test``, or a file in two
            splits.
    """
    path = Path(path)
    how = 'A split file is JSON: {"train": ["<class>/<file>", ...], "test": [...]}.'
    require_file(path, how)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedDatasetError(f"cannot read split file {path}: {exc}. {how}") from exc
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(x, str) for x in v) for v in data.values()
    ):
        raise MalformedDatasetError(f"split file {path} is not a JSON object of path lists. {how}")
    if "train" not in data or "test" not in data:
        raise MalformedDatasetError(f"split file {path} needs 'train' and 'test' lists. {how}")
    index = {f: i for i, f in enumerate(files)}
    seen: dict[str, str] = {}
    out: dict[str, list[int]] = {}
    for split, entries in data.items():
        out[split] = []
        for entry in entries:
            key = Path(entry).as_posix()
            if key not in index:
                raise DatasetNotFoundError(
                    f"split file {path} lists {entry!r} ({split}), which is not a point file "
                    "under the class folders"
                )
            if key in seen:
                raise MalformedDatasetError(
                    f"split file {path} puts {entry!r} in both {seen[key]!r} and {split!r}"
                )
            seen[key] = split
            out[split].append(index[key])
    return out


def resample(points: np.ndarray, num_points: int, seed: int, method: str = "fps") -> np.ndarray:
    """Bring an (N, 3) cloud to exactly ``num_points`` points.

    Larger clouds: furthest point sampling from point 0 (``method="fps"``, evenly spread) or a
    seeded random subset (``"random"``, faster for huge clouds). Smaller clouds keep every
    point and repeat seeded random ones (FPS on the device then picks distinct points first).
    """
    n = len(points)
    if n == num_points:
        return points
    rng = np.random.default_rng(seed)
    if n < num_points:
        extra = rng.choice(n, num_points - n, replace=True)
        return np.concatenate([points, points[extra]])
    if method == "random":
        return points[np.sort(rng.choice(n, num_points, replace=False))]
    from ..ops import furthest_point_sample

    idx = furthest_point_sample(torch.from_numpy(points)[None], num_points, skip_origin=False)
    return points[idx[0].numpy()]


class PointFolder(Dataset):
    """Clouds of the given files, read once, resampled and normalised; see the module docstring.

    Args:
        root: dataset folder the ``files`` are relative to.
        files: relative paths of the split's files.
        labels: their labels.
        num_points: stored points per cloud.
        shuffle_points: random point order per access (the train split).
        presample: ``"fps"`` or ``"random"``, how larger clouds are reduced (:func:`resample`).
        seed: mixed into each file's resampling seed.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        files: Sequence[str],
        labels: Sequence[int],
        num_points: int = 2048,
        shuffle_points: bool = False,
        presample: str = "fps",
        seed: int = 0,
    ) -> None:
        if presample not in ("fps", "random"):
            raise ValueError(f"presample must be 'fps' or 'random'; got {presample!r}")
        self.root = Path(root)
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        clouds = []
        for rel in self.files:
            points = read_point_file(self.root / rel)
            file_seed = zlib.crc32(f"{seed}/{rel}".encode())  # per file, independent of order
            points = resample(points, num_points, file_seed, presample)
            clouds.append(normalize_unit_sphere_np(points))
        self.points = np.stack(clouds) if clouds else np.zeros((0, num_points, 3), np.float32)
        self.shuffle_points = shuffle_points

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Any]:
        points = torch.from_numpy(self.points[index])
        if self.shuffle_points:
            points = points[torch.randperm(len(points))]
        return {"points": points, "label": torch.tensor(self.labels[index], dtype=torch.long)}


class PointFolderDataModule(PointCloudDataModule):
    """Classification batches from a folder of your own ``.npy`` / ``.ply`` point clouds.

    Args:
        root: folder with one subfolder per class (see the module docstring).
        npoints: points per cloud the model sees (FPS on the device from ``num_points``).
        num_points: points stored per cloud (>= ``npoints``).
        batch_size: per-device training batch size.
        split_file: JSON split (paths relative to ``root``); default: a deterministic split.
        test_fraction: share of each class in the test split without a ``split_file``.
        split_seed: seed of the deterministic split and of the per-file resampling.
        class_names: label order (default: sorted subfolder names).
        presample: ``"fps"`` or ``"random"`` reduction of clouds larger than ``num_points``.
        extensions: file suffixes read.
        eval_batch_size, num_workers, pin_memory, persistent_workers, train_transform,
            vote_transform, shared_subset: see
            :class:`~recon_lightning.data.base.PointCloudDataModule`.
    """

    dataset_name = "point_folder"

    def __init__(
        self,
        root: str | os.PathLike[str],
        npoints: int = 1024,
        num_points: int = 2048,
        batch_size: int = 32,
        split_file: str | os.PathLike[str] | None = None,
        test_fraction: float = 0.2,
        split_seed: int = 0,
        class_names: Sequence[str] | None = None,
        presample: str = "fps",
        extensions: Sequence[str] = POINT_EXTENSIONS,
        eval_batch_size: int | None = None,
        num_workers: int | str = 0,
        pin_memory: bool | None = None,
        persistent_workers: bool = True,
        train_transform: str = "scale_and_translate",
        vote_transform: str = "scale",
        shared_subset: bool = True,
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
        if num_points < npoints:
            raise ValueError(f"num_points={num_points} must be >= npoints={npoints}")
        if presample not in ("fps", "random"):
            raise ValueError(f"presample must be 'fps' or 'random'; got {presample!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1); got {test_fraction}")
        self.root = Path(root)
        self.num_points = int(num_points)
        self.split_file = None if split_file is None else Path(split_file)
        self.test_fraction, self.split_seed = float(test_fraction), int(split_seed)
        self.presample = presample
        self.extensions = tuple(extensions)
        self._names = None if class_names is None else list(class_names)
        self._index: tuple[list[str], list[int], list[str], dict[str, list[int]]] | None = None

    def index(self) -> tuple[list[str], list[int], list[str], dict[str, list[int]]]:
        """(files, labels, class names, split -> indices), scanned once."""
        if self._index is None:
            files, labels, names = scan_folder(self.root, self._names, self.extensions)
            if self.split_file is not None:
                splits = read_split_file(self.split_file, files)
            else:
                splits = deterministic_split(files, labels, self.test_fraction, self.split_seed)
            self._index = (files, labels, names, splits)
            if "val" in splits:  # a real validation split: validate on it, not on test
                self.val_split = "val"
        return self._index

    def prepare_data(self) -> None:
        """Scan the folder now, so layout errors surface before any worker starts."""
        self.index()

    def setup(self, stage: str | None = None) -> None:
        """Scan first (it decides :attr:`val_split`), then build the stage's splits."""
        self.index()
        super().setup(stage)

    def build_dataset(self, split: str) -> PointFolder:
        """The clouds of ``split`` (``train``, ``test`` or a split named in the split file)."""
        files, labels, _, splits = self.index()
        if split not in splits:
            raise ValueError(f"no split {split!r} in {self.root}; splits: {sorted(splits)}")
        chosen = splits[split]
        if not chosen:
            raise MalformedDatasetError(
                f"the {split!r} split of {self.root} is empty; add files or change "
                "test_fraction / the split file"
            )
        return PointFolder(
            self.root,
            [files[i] for i in chosen],
            [labels[i] for i in chosen],
            num_points=self.num_points,
            shuffle_points=split == "train",
            presample=self.presample,
            seed=self.split_seed,
        )

    @property
    def class_names(self) -> list[str]:
        """Class folder names in label order."""
        return self.index()[2]
