"""PointFolderDataModule: users' own .npy / .ply clouds in class folders, tiny files in tmp_path."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_lightning.data import (
    DatasetNotFoundError,
    MalformedDatasetError,
    PointFolderDataModule,
    read_ply,
    read_point_file,
    write_ply,
)
from recon_lightning.data.point_folder import (
    PointFolder,
    deterministic_split,
    read_split_file,
    resample,
    scan_folder,
)
from recon_lightning.data.transforms import fps_sample


def cloud(n: int, seed: int, extra: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 3 + extra)).astype(np.float32)


def ply_bytes(
    points: np.ndarray, fmt: str = "binary_little_endian", before: str = "", after: str = ""
) -> bytes:
    """A PLY with vertex x y z plus a uchar ``red`` between y and z (other writers' layout)."""
    header = (
        f"ply\nformat {fmt} 1.0\ncomment made by a test\n{before}element vertex {len(points)}\n"
        "property float x\nproperty double y\nproperty uchar red\nproperty float z\n"
        f"{after}end_header\n"
    )
    if fmt == "ascii":
        body = "".join(f"{x} {y} 7 {z}\n" for x, y, z in points)
        return header.encode() + body.encode()
    order = "<" if fmt == "binary_little_endian" else ">"
    body = b"".join(struct.pack(order + "fdBf", x, y, 7, z) for x, y, z in points)
    return header.encode() + body


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Two classes x five clouds of 40-80 points in every supported file flavour."""
    root = tmp_path / "clouds"
    for c, name in enumerate(["mug", "chair"]):
        (root / name / "nested").mkdir(parents=True)
        for i in range(5):
            pts = cloud(40 + 10 * i, seed=10 * c + i) + 3 * c  # classes apart in space
            if i == 0:
                np.save(root / name / f"{i}.npy", np.concatenate([pts, pts], axis=1))  # 6 cols
            elif i == 1:
                (root / name / f"{i}.ply").write_bytes(ply_bytes(pts, "ascii"))
            elif i == 2:
                (root / name / f"{i}.PLY").write_bytes(ply_bytes(pts, "binary_big_endian"))
            elif i == 3:
                (root / name / "nested" / f"{i}.ply").write_bytes(ply_bytes(pts))
            else:
                write_ply(root / name / f"{i}.ply", pts, binary=i % 2 == 0)
    (root / "mug" / "notes.txt").write_text("not a cloud")  # other files are ignored
    return root


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_reader_takes_xyz_of_every_format(tmp_path, fmt):
    pts = cloud(7, 0)
    # A face element after the vertices, and (ASCII only) a 1-line element before them.
    before = "element info 1\nproperty int version\n" if fmt == "ascii" else ""
    after = "element face 1\nproperty list uchar int vertex_indices\n"
    data = ply_bytes(pts, fmt, before=before, after=after)
    if fmt == "ascii":
        data = data.replace(b"end_header\n", b"end_header\n3\n") + b"3 0 1 2\n"
    path = tmp_path / "a.ply"
    path.write_bytes(data)
    np.testing.assert_allclose(read_ply(path), pts, rtol=1e-6)


def test_binary_ply_skips_scalar_elements_before_vertices(tmp_path):
    pts = cloud(3, 1)
    data = ply_bytes(pts, before="element meta 2\nproperty short a\nproperty int b\n")
    head, body = data.split(b"end_header\n")
    path = tmp_path / "m.ply"
    path.write_bytes(head + b"end_header\n" + struct.pack("<hihi", 1, 2, 3, 4) + body)
    np.testing.assert_allclose(read_ply(path), pts, rtol=1e-6)


def test_write_ply_round_trips(tmp_path):
    pts = cloud(11, 2)
    for binary in (True, False):
        path = write_ply(tmp_path / f"{binary}.ply", pts, binary=binary)
        np.testing.assert_allclose(read_ply(path), pts, rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        write_ply(tmp_path / "x.ply", cloud(4, 0, extra=1))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"solid stl\n", "is not a PLY file"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n", "no 'end_header'"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nend_header\n1\n", "['y',"),
        (b"ply\nformat ascii 1.0\nelement face 0\nend_header\n", "no 'vertex' element"),
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 1\nproperty float x\n", "end_h"),
        (b"ply\nformat weird 1.0\nend_header\n", "unreadable PLY header line 2"),
        (b"ply\nelement vertex 1\nproperty float x\nend_header\n", "no 'format' line"),
    ],
)
def test_bad_ply_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.ply"
    path.write_bytes(content)
    with pytest.raises(MalformedDatasetError, match=str(path)) as info:
        read_point_file(path)
    assert message in str(info.value)


def test_truncated_and_unsupported_ply(tmp_path):
    path = tmp_path / "t.ply"
    path.write_bytes(ply_bytes(cloud(4, 0))[:-3])
    with pytest.raises(MalformedDatasetError, match="truncated"):
        read_ply(path)
    path.write_bytes(ply_bytes(cloud(4, 0), "ascii").rsplit(b"\n", 2)[0])
    with pytest.raises(MalformedDatasetError, match="truncated"):
        read_ply(path)
    face_first = ply_bytes(cloud(4, 0), before="element face 1\nproperty list uchar int v\n")
    path.write_bytes(face_first)
    with pytest.raises(MalformedDatasetError, match="list element .'face'. before the vertices"):
        read_ply(path)


def test_npy_files_are_checked_and_never_unpickled(tmp_path):
    ok = tmp_path / "ok.npy"
    np.save(ok, cloud(5, 0, extra=3).astype(np.float64))
    assert read_point_file(ok).shape == (5, 3) and read_point_file(ok).dtype == np.float32
    cases = {
        "flat.npy": (np.zeros(6, np.float32), r"shape \(6,\)"),
        "two.npy": (np.zeros((4, 2), np.float32), r"shape \(4, 2\)"),
        "empty.npy": (np.zeros((0, 3), np.float32), "holds no points"),
        "nan.npy": (np.full((2, 3), np.nan, np.float32), "NaN or infinite"),
        "text.npy": (np.array([["a", "b", "c"]]), "not numbers"),
        "objects.npy": (np.array([[{"x": 1}, 2, 3]], dtype=object), "allow_pickle"),
    }
    for name, (array, message) in cases.items():
        np.save(tmp_path / name, array, allow_pickle=True)
        with pytest.raises(MalformedDatasetError, match=message) as info:
            read_point_file(tmp_path / name)
        assert name in str(info.value)
    (tmp_path / "garbage.npy").write_bytes(b"\x00\x01 not numpy")
    with pytest.raises(MalformedDatasetError, match="garbage.npy"):
        read_point_file(tmp_path / "garbage.npy")
    (tmp_path / "c.xyz").write_text("0 0 0\n")
    with pytest.raises(MalformedDatasetError, match="unsupported point file type"):
        read_point_file(tmp_path / "c.xyz")


def test_scan_folder_labels_from_subfolders(folder):
    files, labels, names = scan_folder(folder)
    assert names == ["chair", "mug"]  # sorted folder names
    assert files[:5] == [
        "chair/0.npy",
        "chair/1.ply",
        "chair/2.PLY",
        "chair/4.ply",
        "chair/nested/3.ply",
    ]
    assert labels == [0] * 5 + [1] * 5
    files, labels, names = scan_folder(folder, class_names=["mug", "chair"])
    assert names == ["mug", "chair"] and files[0] == "mug/0.npy" and labels[0] == 0


def test_scan_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="missing dataset folder"):
        scan_folder(tmp_path / "nope")
    with pytest.raises(MalformedDatasetError, match="has no class subfolders"):
        scan_folder(tmp_path)
    (tmp_path / "a").mkdir()
    np.save(tmp_path / "a" / "x.npy", cloud(4, 0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MalformedDatasetError, match=r"class folder .*empty holds no \.npy/\.ply"):
        scan_folder(tmp_path)
    with pytest.raises(DatasetNotFoundError, match=r"\['b'\] missing"):
        scan_folder(tmp_path, class_names=["a", "b"])
    with pytest.raises(MalformedDatasetError, match=r"\['empty'\] that class_names does not"):
        scan_folder(tmp_path, class_names=["a"])
    np.save(tmp_path / "loose.npy", cloud(4, 0))
    with pytest.raises(MalformedDatasetError, match="loose.npy.*have no class"):
        scan_folder(tmp_path)


def test_deterministic_split_is_per_class_and_stable():
    files = [f"a/{i}.npy" for i in range(10)] + [f"b/{i}.npy" for i in range(3)] + ["c/0.npy"]
    labels = [0] * 10 + [1] * 3 + [2]
    split = deterministic_split(files, labels, test_fraction=0.2, seed=0)
    assert split == deterministic_split(list(files), list(labels), 0.2, 0)
    test = [files[i] for i in split["test"]]
    assert sum(f.startswith("a/") for f in test) == 2
    assert sum(f.startswith("b/") for f in test) == 1  # at least one test file per class
    assert "c/0.npy" not in test  # a single file stays in train
    assert sorted(split["train"] + split["test"]) == list(range(len(files)))
    assert deterministic_split(files, labels, 0.2, seed=1) != split
    # Adding a file to one class leaves the other classes' splits alone.
    more = deterministic_split([*files, "b/9.npy"], [*labels, 1], 0.2, 0)
    assert [files[i] for i in more["test"] if files[i].startswith("a/")] == test[:2]
    with pytest.raises(ValueError, match="test_fraction"):
        deterministic_split(files, labels, 1.0)


def test_split_file(folder, tmp_path):
    files, _, _ = scan_folder(folder)
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": files[:6], "test": files[6:8], "val": files[8:]}))
    assert read_split_file(path, files) == {
        "train": [0, 1, 2, 3, 4, 5],
        "test": [6, 7],
        "val": [8, 9],
    }
    path.write_text(json.dumps({"train": ["mug/ghost.npy"], "test": []}))
    with pytest.raises(DatasetNotFoundError, match="lists 'mug/ghost.npy'"):
        read_split_file(path, files)
    path.write_text(json.dumps({"train": files[:2], "test": files[1:2]}))
    with pytest.raises(MalformedDatasetError, match="in both 'train' and 'test'"):
        read_split_file(path, files)
    path.write_text(json.dumps({"train": files}))
    with pytest.raises(MalformedDatasetError, match="needs 'train' and 'test'"):
        read_split_file(path, files)
    path.write_text("[1, 2]")
    with pytest.raises(MalformedDatasetError, match="not a JSON object of path lists"):
        read_split_file(path, files)
    with pytest.raises(DatasetNotFoundError, match="missing dataset file"):
        read_split_file(tmp_path / "none.json", files)


def test_resample_to_a_fixed_size():
    pts = cloud(50, 0)
    fps = resample(pts, 20, seed=0)
    expected = fps_sample(torch.from_numpy(pts)[None], 20)[0].numpy()
    np.testing.assert_array_equal(fps, expected)
    sub = resample(pts, 20, seed=0, method="random")
    assert sub.shape == (20, 3) and len(np.unique(sub, axis=0)) == 20
    padded = resample(pts, 64, seed=3)
    np.testing.assert_array_equal(padded[:50], pts)  # every original point kept
    np.testing.assert_array_equal(padded, resample(pts, 64, seed=3))
    assert resample(pts, 50, seed=0) is pts


def test_dataset_items_are_normalised_fixed_size_clouds(folder):
    files, labels, _ = scan_folder(folder)
    ds = PointFolder(folder, files, labels, num_points=64)
    assert len(ds) == 10 and ds.points.shape == (10, 64, 3)
    item = ds[3]
    assert item["points"].dtype == torch.float32 and item["label"].item() == 0
    radius = item["points"].norm(dim=-1).max()
    torch.testing.assert_close(radius, torch.tensor(1.0))
    torch.testing.assert_close(item["points"].mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    # The same seed reads the same clouds; training shuffles the point order only.
    again = PointFolder(folder, files, labels, num_points=64, shuffle_points=True)
    shuffled = again[3]["points"]
    assert not torch.equal(shuffled, item["points"])
    torch.testing.assert_close(shuffled.sort(dim=0).values, item["points"].sort(dim=0).values)


def test_unreadable_file_is_named_when_the_split_is_built(folder):
    bad = folder / "chair" / "broken.ply"
    bad.write_bytes(b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\n")
    dm = PointFolderDataModule(folder, npoints=16, num_points=32, batch_size=2, test_fraction=0.5)
    with pytest.raises(MalformedDatasetError, match="broken.ply"):
        dm.setup("fit")
        dm.dataset("test")


def test_datamodule_follows_the_classification_contract(folder, set_training):
    dm = PointFolderDataModule(folder, npoints=32, num_points=48, batch_size=4, test_fraction=0.4)
    dm.setup("fit")
    assert dm.class_names == ["chair", "mug"] and dm.num_classes == 2
    assert dm.val_split == "test" and (len(dm.dataset("train")), len(dm.dataset("test"))) == (6, 4)
    assert not set(dm.dataset("train").files) & set(dm.dataset("test").files)
    # Loaders first: the stand-in trainer below only tells train from eval.
    batch = next(iter(dm.train_dataloader()))
    val = next(iter(dm.val_dataloader()))
    assert batch["points"].shape == (4, 48, 3) and batch["label"].dtype == torch.int64
    set_training(dm, True)
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert out["points"].shape == (4, 32, 3) and "points_raw" not in out
    set_training(dm, False)
    out = dm.on_after_batch_transfer(dict(val), 0)
    torch.testing.assert_close(out["points"], fps_sample(val["points"], 32))
    assert out["points_raw"] is val["points"]
    with pytest.raises(ValueError, match="num_points=8 must be >= npoints=16"):
        PointFolderDataModule(folder, npoints=16, num_points=8)
    with pytest.raises(ValueError, match="no split 'val'"):
        dm.build_dataset("val")


def test_datamodule_with_a_split_file_validates_on_its_val_split(folder, tmp_path):
    files, _, _ = scan_folder(folder)
    split = tmp_path / "split.json"
    split.write_text(
        json.dumps(
            {
                "train": files[:3] + files[5:8],
                "val": [files[3], files[8]],
                "test": [files[4], files[9]],
            }
        )
    )
    dm = PointFolderDataModule(folder, npoints=16, num_points=32, batch_size=2, split_file=split)
    dm.setup("fit")
    assert dm.val_split == "val" and dm.dataset("val").files == [files[3], files[8]]
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"train": files, "test": []}))
    dm = PointFolderDataModule(folder, npoints=16, num_points=32, batch_size=2, split_file=empty)
    with pytest.raises(MalformedDatasetError, match="'test' split .* is empty"):
        dm.setup("test")
