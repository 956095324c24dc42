"""ScanObjectNN: variant file names, items as stored, h5 validation, DataModule transforms."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from recon_lightning.data import ScanObjectNN, ScanObjectNNDataModule
from recon_lightning.data.errors import DatasetNotFoundError, MalformedDatasetError
from recon_lightning.data.scanobjectnn import SCANOBJECTNN_CLASSES, h5_path
from recon_lightning.data.transforms import fps_sample

# The fixture offsets each file's points by 10 * (its position in this list).
FILE_ORDER = [
    ("obj_bg", "train"),
    ("obj_bg", "test"),
    ("obj_only", "train"),
    ("obj_only", "test"),
    ("hardest", "train"),
    ("hardest", "test"),
]


@pytest.mark.parametrize(("variant", "split"), FILE_ORDER)
def test_variant_reads_the_reference_file(write_scanobjectnn, variant: str, split: str) -> None:
    root = write_scanobjectnn()
    ds = ScanObjectNN(root, variant, split)
    assert len(ds) == (6 if split == "train" else 3)
    offset = 10 * FILE_ORDER.index((variant, split))
    assert abs(float(ds.points.mean()) - offset) < 1.0


def test_points_are_used_as_stored_and_train_is_permuted(write_scanobjectnn) -> None:
    root = write_scanobjectnn()
    with h5py.File(h5_path(root, "hardest", "test"), "r") as f:
        stored = np.asarray(f["data"])
    test = ScanObjectNN(root, "hardest", "test")
    item = test[2]
    np.testing.assert_array_equal(item["points"].numpy(), stored[2])  # no normalisation
    assert item["label"].dtype == torch.int64 and int(item["label"]) == 2
    train = ScanObjectNN(root, "hardest", "train")
    a, b = train[0]["points"], train[0]["points"]
    assert not torch.equal(a, b)  # a fresh permutation per access
    torch.testing.assert_close(a[a[:, 0].argsort()], b[b[:, 0].argsort()])


def test_class_names_default_and_faithful(tmp_path) -> None:
    dm = ScanObjectNNDataModule(tmp_path, "obj_only")
    assert dm.num_classes == 15 and dm.class_names[-1] == "toilet"
    assert dm.class_names == SCANOBJECTNN_CLASSES
    faithful = ScanObjectNNDataModule(tmp_path, "obj_only", faithful_class_names=True)
    assert faithful.class_names[-1] == "toile" and faithful.class_names[:-1] == dm.class_names[:-1]


def test_vote_transform_per_variant(tmp_path) -> None:
    assert ScanObjectNNDataModule(tmp_path, "hardest").vote_transform.__name__ == "rotate_y"
    assert ScanObjectNNDataModule(tmp_path, "obj_bg").vote_transform.__name__ == "identity"
    assert ScanObjectNNDataModule(tmp_path, "obj_only").vote_transform_name == "none"
    assert ScanObjectNNDataModule(tmp_path, "obj_bg").dataset_name == "scanobjectnn_obj_bg"


def _rewrite(path, **datasets) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            f[key] = value


def test_malformed_h5_files_name_the_file(write_scanobjectnn) -> None:
    root = write_scanobjectnn()
    path = h5_path(root, "obj_bg", "test")
    _rewrite(path, data=np.zeros((3, 64, 4), np.float32), label=np.zeros(3, np.int64))
    with pytest.raises(MalformedDatasetError, match=rf"{path.name}.*\(3, 64, 4\)"):
        ScanObjectNN(root, "obj_bg", "test")
    _rewrite(path, data=np.zeros((3, 64, 3), np.float32))
    with pytest.raises(MalformedDatasetError, match="lacks the key"):
        ScanObjectNN(root, "obj_bg", "test")
    _rewrite(path, data=np.zeros((3, 64, 3), np.float32), label=np.zeros(2, np.int64))
    with pytest.raises(MalformedDatasetError, match="'label' has shape"):
        ScanObjectNN(root, "obj_bg", "test")
    _rewrite(path, data=np.zeros((3, 64, 3), np.float32), label=np.full(3, 15, np.int64))
    with pytest.raises(MalformedDatasetError, match="labels outside"):
        ScanObjectNN(root, "obj_bg", "test")
    _rewrite(path, data=np.zeros((3, 64, 3), np.int32), label=np.zeros(3, np.int64))
    with pytest.raises(MalformedDatasetError, match="dtype"):
        ScanObjectNN(root, "obj_bg", "test")
    path.write_bytes(b"not an hdf5 file")
    with pytest.raises(MalformedDatasetError, match=path.name):
        ScanObjectNN(root, "obj_bg", "test")


def test_label_column_vector_is_accepted(write_scanobjectnn) -> None:
    root = write_scanobjectnn()
    path = h5_path(root, "obj_bg", "test")
    _rewrite(path, data=np.ones((3, 64, 3), np.float32), label=np.array([[1], [2], [3]]))
    assert ScanObjectNN(root, "obj_bg", "test").labels.tolist() == [1, 2, 3]


def test_missing_file_names_path_and_source(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="main_split_nobg/training_objectdataset.h5"):
        ScanObjectNN(tmp_path, "obj_only", "train")
    with pytest.raises(ValueError, match="variant"):
        ScanObjectNNDataModule(tmp_path, "pb_t50")


def test_datamodule_sampling(write_scanobjectnn, set_training) -> None:
    root = write_scanobjectnn()
    dm = ScanObjectNNDataModule(root, "hardest", npoints=48, batch_size=4, num_workers=0)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["points"].shape == (4, 64, 3)
    set_training(dm, True)
    out = dm.on_after_batch_transfer(dict(batch), 0)
    assert out["points"].shape == (4, 48, 3)
    # FPS pool = ceil(48 * 1200 / 1024) = 57 of 64, then a subset, then a y-rotation: heights
    # (y) are kept, and each is one of the cloud's stored heights.
    for b in range(4):
        assert set(out["points"][b, :, 1].tolist()) <= set(batch["points"][b, :, 1].tolist())
    set_training(dm, False)
    test_batch = next(iter(dm.val_dataloader()))
    out = dm.on_after_batch_transfer(dict(test_batch), 0)
    torch.testing.assert_close(out["points"], fps_sample(test_batch["points"], 48))
