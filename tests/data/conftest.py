"""Writers for tiny datasets in the reference's real on-disk formats, and shared helpers.

Every fixture builds its files under ``tmp_path``; nothing is downloaded. Sizes are tiny (tens of
points per cloud, a handful of shapes) so the whole data suite runs in seconds.
"""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from PIL import Image

from recon_lightning.data.modelnet import MODELNET40_CLASSES

SYNSETS = ["02691156", "03001627", "04379243"]  # airplane, chair, table
DESCRIBE = {"02691156": "an airplane", "03001627": "a chair", "04379243": "a table"}


class Exploit:
    """Pickles to ``os.system("touch <sentinel>")``: a pickle that tries to execute code."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (os.system, (f"touch {self.sentinel}",))


class ExecExploit:
    """Pickles to ``builtins.exec("open(<sentinel>, 'w')")``."""

    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self):
        return (exec, (f"open({str(self.sentinel)!r}, 'w').close()",))


@pytest.fixture
def set_training() -> Callable[[object, bool], None]:
    """Attach a stand-in trainer so ``on_after_batch_transfer`` sees train or eval mode."""

    def attach(dm: object, training: bool) -> None:
        dm.trainer = SimpleNamespace(training=training)

    return attach


@pytest.fixture
def exploit_pickle() -> Callable[[Path, str], bytes]:
    """Factory: pickle bytes that run ``os.system`` / ``exec`` to create ``sentinel`` if loaded.

    ``wrap`` nests the payload inside the structure a loader expects, so the refusal must come
    from the unpickler, not from a shape check after loading.
    """

    def make(sentinel: Path, kind: str = "system", wrap: str = "dat") -> bytes:
        payload = Exploit(sentinel) if kind == "system" else ExecExploit(sentinel)
        if wrap == "dat":
            obj: object = [[payload], [np.array([0], dtype=np.int32)]]
        elif wrap == "episode":
            obj = {"train": [(payload, 0, 0)], "test": []}
        else:
            obj = payload
        return pickle.dumps(obj, protocol=2)

    return make


@pytest.fixture
def write_shapenet(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a ShapeNet55-34 folder with 3 synsets, 4 train + 2 test models of 64 points."""

    def write(
        orient: str = "columns",
        with_json: bool = True,
        missing_images: int = 0,
        n_points: int = 64,
    ) -> Path:
        root = tmp_path / "ShapeNet55-34"
        (root / "shapenet_pc").mkdir(parents=True)
        (root / "shapenet_img").mkdir()
        (root / "ShapeNet-55").mkdir()
        rng = np.random.default_rng(0)
        names = {"train": [], "test": []}
        for split, count in (("train", 4), ("test", 2)):
            for k in range(count):
                synset = SYNSETS[k % 3]
                name = f"{synset}-{split}{k:03d}model.npy"
                names[split].append(name)
                pts = rng.normal(size=(n_points, 3)) * 3.0 + 5.0  # off-centre, not unit scale
                np.save(root / "shapenet_pc" / name, pts.astype(np.float32))
                img = (rng.uniform(0, 255, (20, 24, 4))).astype(np.uint8)
                Image.fromarray(img, "RGBA").save(
                    root / "shapenet_img" / name.replace(".npy", ".png")
                )
        for split, lines in names.items():
            (root / "ShapeNet-55" / f"{split}.txt").write_text("\n".join(lines) + "\n")
        # Remove images of the last train models.
        for name in (
            names["train"][len(names["train"]) - missing_images :] if missing_images else []
        ):
            (root / "shapenet_img" / name.replace(".npy", ".png")).unlink()
        if with_json:
            # The reference's table: catalogue stored as an integer (leading zero lost).
            rows = [{"catalogue": int(s), "describe": DESCRIBE[s]} for s in SYNSETS]
            if orient == "records":
                data = rows
            elif orient == "columns":
                data = {
                    "catalogue": {str(i): r["catalogue"] for i, r in enumerate(rows)},
                    "describe": {str(i): r["describe"] for i, r in enumerate(rows)},
                }
            elif orient == "index":
                data = {str(i): r for i, r in enumerate(rows)}
            elif orient == "split":
                data = {
                    "columns": ["catalogue", "describe"],
                    "index": list(range(len(rows))),
                    "data": [[r["catalogue"], r["describe"]] for r in rows],
                }
            else:
                raise ValueError(orient)
            (root / "shapenet55.json").write_text(json.dumps(data))
        return root

    return write


def _shape_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    xyz = rng.normal(size=(n, 3)) * 2.0 + 1.0
    normals = rng.normal(size=(n, 3))
    return np.concatenate([xyz, normals], axis=1)


@pytest.fixture
def write_modelnet(tmp_path: Path) -> Callable[..., Path]:
    """Factory: modelnet40_normal_resampled with shape names, splits and per-shape txt files.

    Uses the first ``classes`` classes, ``per_class`` = (train, test) shapes each, 40 points per
    shape, for ModelNet40 (and ModelNet10 lists over the same folder when ``with_10``).
    """

    def write(classes: int = 3, per_class: tuple[int, int] = (2, 1), rows: int = 40) -> Path:
        root = tmp_path / "ModelNet" / "modelnet40_normal_resampled"
        root.mkdir(parents=True)
        rng = np.random.default_rng(1)
        (root / "modelnet40_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES) + "\n")
        (root / "modelnet10_shape_names.txt").write_text("\n".join(MODELNET40_CLASSES[:10]) + "\n")
        splits: dict[str, list[str]] = {"train": [], "test": []}
        for c in range(classes):
            name = MODELNET40_CLASSES[c]
            (root / name).mkdir()
            counter = 1
            for split, count in zip(("train", "test"), per_class, strict=True):
                for _ in range(count):
                    shape_id = f"{name}_{counter:04d}"
                    counter += 1
                    splits[split].append(shape_id)
                    np.savetxt(
                        root / name / f"{shape_id}.txt",
                        _shape_rows(rng, rows),
                        fmt="%.6f",
                        delimiter=",",
                    )
        for n in (40, 10):
            for split, ids in splits.items():
                (root / f"modelnet{n}_{split}.txt").write_text("\n".join(ids) + "\n")
        return root

    return write


@pytest.fixture
def reference_dat() -> Callable[..., None]:
    """Factory writing a ``.dat`` cache exactly as the reference does (plain pickle)."""
    return _write_reference_dat


def _write_reference_dat(path: Path, classes: list[int], per_class: int, n: int, seed: int) -> None:
    """A ``.dat`` cache exactly as the reference writes it: plain pickle of two lists."""
    rng = np.random.default_rng(seed)
    points, labels = [], []
    for c in classes:
        for _ in range(per_class):
            points.append(_shape_rows(rng, n).astype(np.float32))
            labels.append(np.array([c], dtype=np.int32))
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        pickle.dump([points, labels], fh)


@pytest.fixture
def write_scanobjectnn(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ScanObjectNN with all three variants' h5 files, 6 train / 3 test clouds of 64."""

    def write(n_points: int = 64) -> Path:
        root = tmp_path / "ScanObjectNN"
        rng = np.random.default_rng(2)
        files = [
            "main_split/training_objectdataset.h5",
            "main_split/test_objectdataset.h5",
            "main_split_nobg/training_objectdataset.h5",
            "main_split_nobg/test_objectdataset.h5",
            "main_split/training_objectdataset_augmentedrot_scale75.h5",
            "main_split/test_objectdataset_augmentedrot_scale75.h5",
        ]
        for k, rel in enumerate(files):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            m = 6 if "training" in rel else 3
            with h5py.File(path, "w") as f:
                # Offset per file so tests can tell which file a DataModule read.
                f["data"] = (rng.normal(size=(m, n_points, 3)) + 10 * k).astype(np.float32)
                f["label"] = (np.arange(m) % 15).astype(np.int64)
        return root

    return write


#: ShapeNetPart categories of the tiny fixture: (name, synset, parts). Mug's labels are far from
#: 0 so that a label-mapping mistake cannot pass by accident.
PART_CATEGORIES = [("Airplane", "02691156", (0, 1, 2, 3)), ("Bag", "02773838", (4, 5)),
                   ("Mug", "03797390", (36, 37))]  # fmt: skip


@pytest.fixture
def write_shapenetpart(tmp_path: Path) -> Callable[..., Path]:
    """Factory: a ShapeNetPart folder in the reference layout, 3 categories, tiny shapes.

    Per category ``per_category`` = (train, val, test) shapes; shape k holds ``40 + 7 * k`` points
    (variable lengths, as the real files) of off-centre, unscaled xyz, random normals and part
    labels cycling over the category's parts. ``synsetoffset2category.txt`` lists all 16
    categories, as the real file, though only 3 have folders.
    """
    from recon_lightning.data.shapenetpart import SHAPENETPART_CATEGORIES

    def write(per_category: tuple[int, int, int] = (2, 1, 2)) -> Path:
        root = tmp_path / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
        (root / "train_test_split").mkdir(parents=True)
        (root / "synsetoffset2category.txt").write_text(
            "".join(f"{name}\t{synset}\n" for name, synset in SHAPENETPART_CATEGORIES.items())
        )
        rng = np.random.default_rng(4)
        lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
        k = 0
        for _, synset, parts in PART_CATEGORIES:
            (root / synset).mkdir()
            for split, count in zip(("train", "val", "test"), per_category, strict=True):
                for _ in range(count):
                    shape_id = f"{k:04d}{split}"
                    n = 40 + 7 * k
                    xyz = rng.normal(size=(n, 3)) * (1.5 + k) + 2.0
                    normals = rng.normal(size=(n, 3))
                    labels = np.array(parts)[np.arange(n) % len(parts)]
                    rows = np.concatenate([xyz, normals, labels[:, None]], axis=1)
                    np.savetxt(root / synset / f"{shape_id}.txt", rows, fmt="%.6f")
                    lists[split].append(f"shape_data/{synset}/{shape_id}")
                    k += 1
        for split, entries in lists.items():
            # The real lists are shuffled; reversing checks that the loader re-orders them.
            path = root / "train_test_split" / f"shuffled_{split}_file_list.json"
            path.write_text(json.dumps(entries[::-1]))
        return root

    return write
