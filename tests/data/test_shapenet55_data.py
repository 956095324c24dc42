"""ShapeNet-55 on tiny files in the reference layout: lists, json table, images, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_lightning.data import ShapeNet55, ShapeNet55DataModule
from recon_lightning.data.errors import DatasetNotFoundError, MalformedDatasetError
from recon_lightning.data.shapenet55 import category_table, load_category_table
from recon_lightning.data.shapenet_synsets import SHAPENET55_SYNSETS

SYNSETS = ["02691156", "03001627", "04379243"]


@pytest.mark.parametrize("orient", ["columns", "records", "index", "split"])
def test_json_table_any_orientation_zero_padded(write_shapenet, orient: str) -> None:
    root = write_shapenet(orient=orient)
    table = load_category_table(root / "shapenet55.json")
    assert table == [("02691156", "an airplane"), ("03001627", "a chair"), ("04379243", "a table")]


def test_whole_reads_test_then_train_lines(write_shapenet) -> None:
    root = write_shapenet()
    whole = ShapeNet55(root, "train", whole=True, npoints=32)
    train = ShapeNet55(root, "train", whole=False, npoints=32)
    test = (root / "ShapeNet-55" / "test.txt").read_text().split()
    assert len(whole) == 6 and len(train) == 4
    assert whole.files[:2] == test and whole.files[2:] == train.files
    assert whole.labels == [SYNSETS.index(f.split("-")[0]) for f in whole.files]


def test_ratio_keeps_leading_lines(write_shapenet) -> None:
    root = write_shapenet()
    assert len(ShapeNet55(root, "train", npoints=32, ratio=0.5)) == 2


def test_item_format_and_normalisation(write_shapenet) -> None:
    root = write_shapenet()
    ds = ShapeNet55(root, "train", npoints=32)
    item = ds[1]
    assert set(item) == {"points", "image", "text", "label", "index"}
    pts = item["points"]
    assert pts.shape == (32, 3) and pts.dtype == torch.float32
    torch.testing.assert_close(pts.mean(0), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(pts.norm(dim=1).max(), torch.tensor(1.0))
    assert item["image"].shape == (3, 224, 224) and item["image"].dtype == torch.uint8
    assert item["text"] == "a chair" and int(item["label"]) == 1 and int(item["index"]) == 1
    # The points are the unit-sphere normalisation of a random subset of the stored cloud: the
    # reference's permutation-then-first-npoints, drawn from torch's generator.
    stored = np.load(root / "shapenet_pc" / ds.files[1])
    torch.manual_seed(0)
    pts = ds[1]["points"]
    torch.manual_seed(0)
    perm = torch.randperm(64)[:32].numpy()
    subset = stored[perm] - stored[perm].mean(0)
    expected = subset / np.linalg.norm(subset, axis=1).max()
    np.testing.assert_allclose(pts.numpy(), expected, atol=1e-5)
    assert not torch.equal(ds[1]["points"], ds[1]["points"])


def test_missing_json_is_an_error_naming_the_file_and_the_fallback(write_shapenet) -> None:
    root = write_shapenet(with_json=False)
    with pytest.raises(DatasetNotFoundError) as err:
        ShapeNet55(root, "train", npoints=32)
    assert str(root / "shapenet55.json") in str(err.value)
    assert "data.texts_fallback=synset_names" in str(err.value)
    with pytest.raises(ValueError, match="texts_fallback"):
        category_table(root, texts_fallback="names")


def test_missing_json_with_explicit_fallback_uses_builtin_names(write_shapenet) -> None:
    root = write_shapenet(with_json=False)
    ds = ShapeNet55(root, "train", npoints=32, texts_fallback="synset_names")
    labels = list(SHAPENET55_SYNSETS)
    assert ds.labels == [labels.index(f.split("-")[0]) for f in ds.files]
    assert ds[0]["text"] == SHAPENET55_SYNSETS[ds.files[0].split("-")[0]]
    assert len(category_table(root, texts_fallback="synset_names")) == 55


def test_missing_images_fail_with_count_or_are_skipped(write_shapenet) -> None:
    root = write_shapenet(missing_images=2)
    with pytest.raises(DatasetNotFoundError) as err:
        ShapeNet55(root, "train", npoints=32)
    msg = str(err.value)
    assert "2 file(s) missing" in msg and "skip_missing_images" in msg
    assert "train002model.png" in msg
    with pytest.warns(UserWarning, match="skipping 2"):
        ds = ShapeNet55(root, "train", npoints=32, skip_missing_images=True)
    assert len(ds) == 2 and len(ds.labels) == 2


def test_corrupt_or_misshapen_npy_names_the_file(write_shapenet) -> None:
    root = write_shapenet()
    ds = ShapeNet55(root, "test", npoints=32)
    bad = root / "shapenet_pc" / ds.files[0]
    bad.write_bytes(b"definitely not a numpy file")
    with pytest.raises(MalformedDatasetError, match=bad.name):
        ds[0]
    np.save(bad, np.zeros((64, 4), np.float32))
    with pytest.raises(MalformedDatasetError, match=r"shape \(64, 4\)"):
        ds[0]
    np.save(bad, np.zeros((16, 3), np.float32))  # fewer points than npoints
    with pytest.raises(MalformedDatasetError, match=bad.name):
        ds[0]


def test_missing_list_point_file_and_bad_json(write_shapenet) -> None:
    root = write_shapenet()
    (root / "ShapeNet-55" / "test.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match="test.txt"):
        ShapeNet55(root, "train", whole=True)
    first = (root / "ShapeNet-55" / "train.txt").read_text().split()[0]
    (root / "shapenet_pc" / first).unlink()
    with pytest.raises(DatasetNotFoundError, match=first):
        ShapeNet55(root, "train")
    (root / "shapenet55.json").write_text("{not json")
    with pytest.raises(MalformedDatasetError, match="shapenet55.json"):
        load_category_table(root / "shapenet55.json")


def test_unknown_synset_in_list_names_list_and_table(write_shapenet) -> None:
    root = write_shapenet()
    with open(root / "ShapeNet-55" / "train.txt", "a") as fh:
        fh.write("09999999-foo.npy\n")
    with pytest.raises(MalformedDatasetError, match="09999999"):
        ShapeNet55(root, "train")


def test_datamodule_batches(write_shapenet, set_training) -> None:
    root = write_shapenet()
    dm = ShapeNet55DataModule(root, npoints=32, batch_size=2, num_workers=0)
    assert dm.dataset_name == "shapenet55" and dm.num_classes == 3
    assert dm.class_names == ["airplane", "chair", "table"]
    assert dm.descriptions == ["an airplane", "a chair", "a table"]
    dm.setup("fit")
    assert len(dm.dataset("train")) == 6 and len(dm.dataset("test")) == 2  # whole by default
    batch = next(iter(dm.train_dataloader()))
    assert batch["points"].shape == (2, 32, 3) and batch["image"].shape == (2, 3, 224, 224)
    assert len(batch["text"]) == 2 and batch["label"].dtype == torch.int64
    assert batch["index"].dtype == torch.int64
    pts = batch["points"].clone()
    set_training(dm, True)
    out = dm.on_after_batch_transfer(dict(batch), 0)
    torch.testing.assert_close(out["points"].norm(dim=-1), pts.norm(dim=-1))
    assert not torch.allclose(out["points"], pts)
    # Evaluation images use the deterministic resize.
    val = dm.dataset("test")
    assert torch.equal(val[0]["image"], val[0]["image"])
