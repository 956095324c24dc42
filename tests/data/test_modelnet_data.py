"""ModelNet40/10: cache rebuild with our FPS, reference-format caches, items, errors, DataModule."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from recon_lightning.data import ModelNet, ModelNetDataModule
from recon_lightning.data.errors import DatasetNotFoundError, MalformedDatasetError
from recon_lightning.data.modelnet import MODELNET40_CLASSES, build_cache, cache_path
from recon_lightning.data.transforms import fps_sample
from recon_lightning.ops import furthest_point_sample

N = 32  # stored points per shape in these tests (8192 in the reference)


def test_build_cache_writes_reference_format_with_our_fps(write_modelnet) -> None:
    root = write_modelnet()
    path = build_cache(root, 40, "train", n_points=N, device="cpu", chunk=4)
    assert (
        path == cache_path(root, 40, "train", N) and path.name == "modelnet40_train_32pts_fps.dat"
    )
    # Readable by the reference's plain pickle.load, with its exact structure and dtypes.
    with open(path, "rb") as fh:
        points, labels = pickle.load(fh)
    assert len(points) == len(labels) == 6
    assert all(p.shape == (N, 6) and p.dtype == np.float32 for p in points)
    assert all(y.shape == (1,) and y.dtype == np.int32 for y in labels)
    assert [int(y[0]) for y in labels] == [0, 0, 1, 1, 2, 2]
    # The kept rows are FPS (start at 0, no origin skip) of the shape's xyz, all six columns.
    rows = np.loadtxt(root / "airplane" / "airplane_0001.txt", delimiter=",", dtype=np.float32)
    idx = furthest_point_sample(torch.from_numpy(rows[None, :, :3]), N, skip_origin=False)[0]
    np.testing.assert_array_equal(points[0], rows[idx.numpy()])
    assert [p.name for p in root.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_dataset_rebuilds_missing_cache_and_serves_items(write_modelnet) -> None:
    root = write_modelnet()
    train = ModelNet(root, 40, "train", n_points=N)
    test = ModelNet(root, 40, "test", n_points=N)
    assert cache_path(root, 40, "test", N).is_file()
    assert len(train) == 6 and len(test) == 3
    assert train.class_names == MODELNET40_CLASSES
    item = test[1]
    assert set(item) == {"points", "label"}
    pts = item["points"]
    assert pts.shape == (N, 3) and pts.dtype == torch.float32 and int(item["label"]) == 1
    torch.testing.assert_close(pts.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(pts.norm(dim=1).max(), torch.tensor(1.0))
    torch.testing.assert_close(test[1]["points"], pts)  # test split: fixed order
    # Train split: same points, shuffled order per access.
    a = train[0]["points"]
    ref = torch.from_numpy(train.points[0])
    ref = (ref - ref.mean(0)) / (ref - ref.mean(0)).norm(dim=1).max()
    assert not torch.equal(a, ref)
    torch.testing.assert_close(a[a[:, 0].argsort()], ref[ref[:, 0].argsort()])


def test_reference_cache_is_used_without_shape_files(write_modelnet, reference_dat) -> None:
    root = write_modelnet()
    reference_dat(cache_path(root, 40, "test", N), classes=[0, 1, 2], per_class=1, n=N, seed=3)
    for txt in root.glob("*/*.txt"):
        txt.unlink()
    ds = ModelNet(root, 40, "test", n_points=N)
    assert [int(y) for y in ds.labels] == [0, 1, 2]
    assert ds[2]["points"].shape == (N, 3)


def test_modelnet10_uses_its_own_lists_and_cache(write_modelnet) -> None:
    root = write_modelnet()
    ds = ModelNet(root, 10, "train", n_points=N)
    assert cache_path(root, 10, "train", N).is_file()
    assert len(ds.class_names) == 10 and len(ds) == 6


def test_malicious_cache_is_refused_without_running_it(
    write_modelnet, exploit_pickle, tmp_path
) -> None:
    root = write_modelnet()
    sentinel = tmp_path / "pwned"
    path = cache_path(root, 40, "test", N)
    for kind in ("system", "exec"):
        path.write_bytes(exploit_pickle(sentinel, kind))
        with pytest.raises(MalformedDatasetError, match=path.name) as err:
            ModelNet(root, 40, "test", n_points=N)
        assert "refused" in str(err.value)
        assert not sentinel.exists()


def test_malformed_and_stale_caches_name_the_file(write_modelnet, reference_dat) -> None:
    root = write_modelnet()
    path = cache_path(root, 40, "test", N)
    with open(path, "wb") as fh:
        pickle.dump({"points": []}, fh)
    with pytest.raises(MalformedDatasetError, match=path.name):
        ModelNet(root, 40, "test", n_points=N)
    with open(path, "wb") as fh:
        pickle.dump([[np.zeros((N, 2), np.float32)], [np.array([0], np.int32)]], fh)
    with pytest.raises(MalformedDatasetError, match=r"cloud 0 has shape \(32, 2\)"):
        ModelNet(root, 40, "test", n_points=N)
    path.write_bytes(b"\x80\x04truncated")
    with pytest.raises(MalformedDatasetError, match=path.name):
        ModelNet(root, 40, "test", n_points=N)
    reference_dat(path, classes=[0], per_class=5, n=N, seed=0)  # 5 shapes, the list has 3
    with pytest.raises(MalformedDatasetError, match="stale"):
        ModelNet(root, 40, "test", n_points=N)
    reference_dat(path, classes=[0, 1, 41], per_class=1, n=N, seed=0)
    with pytest.raises(MalformedDatasetError, match="labels outside"):
        ModelNet(root, 40, "test", n_points=N)


def test_missing_files_are_named(write_modelnet) -> None:
    root = write_modelnet()
    (root / "bed" / "bed_0001.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 file\(s\) missing.*bed_0001.txt"):
        ModelNet(root, 40, "train", n_points=N)
    (root / "modelnet40_shape_names.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="modelnet40_shape_names.txt"):
        ModelNet(root, 40, "train", n_points=N)
    with pytest.raises(DatasetNotFoundError, match="nowhere"):
        ModelNet(root.parent / "nowhere", 40, "train")


def test_too_short_shape_file_is_malformed(write_modelnet) -> None:
    root = write_modelnet(rows=20)
    with pytest.raises(MalformedDatasetError, match=r"airplane_0001.txt has shape \(20, 6\)"):
        build_cache(root, 40, "train", n_points=N, device="cpu")


def test_datamodule_train_and_eval_sampling(write_modelnet, set_training) -> None:
    root = write_modelnet()
    dm = ModelNetDataModule(root, 40, npoints=16, n_points=N, batch_size=3, num_workers=0)
    assert dm.dataset_name == "modelnet40" and dm.num_classes == 40
    assert dm.vote_transform.__name__ == "scale"
    assert dm.train_transform.__name__ == "scale_and_translate"
    dm.prepare_data()
    assert cache_path(root, 40, "train", N).is_file()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["points"].shape == (3, N, 3)
    set_training(dm, True)
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert out["points"].shape == (3, 16, 3) and "points_raw" not in out
    set_training(dm, False)
    test_batch = next(iter(dm.test_dataloader()))
    out = dm.on_after_batch_transfer(dict(test_batch), 0)
    torch.testing.assert_close(out["points"], fps_sample(test_batch["points"], 16))
    assert out["points_raw"].shape == (3, N, 3)
    assert dm.point_all(N) == 19  # ceil(16 * 1200 / 1024), capped by 32 stored points


def test_datamodule_rejects_bad_category(tmp_path) -> None:
    with pytest.raises(ValueError, match="10 or 40"):
        ModelNetDataModule(tmp_path, num_category=20)
