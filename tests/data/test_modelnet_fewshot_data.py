"""Few-shot ModelNet40: split regeneration, folder-name variants, items, unsafe pickles."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from recon_lightning.data import ModelNetFewshot, ModelNetFewshotDataModule, make_fewshot_splits
from recon_lightning.data.errors import DatasetNotFoundError, MalformedDatasetError
from recon_lightning.data.modelnet import MODELNET40_CLASSES, cache_path
from recon_lightning.data.safe_pickle import safe_load_file

N = 24


@pytest.fixture
def modelnet_caches(tmp_path: Path, reference_dat) -> Path:
    """ModelNet40 .dat caches with 4 classes (5, 7, 9, 11): 4 train and 3 test shapes each."""
    root = tmp_path / "ModelNet" / "modelnet40_normal_resampled"
    reference_dat(cache_path(root, 40, "train"), [5, 7, 9, 11], per_class=4, n=N, seed=0)
    reference_dat(cache_path(root, 40, "test"), [5, 7, 9, 11], per_class=3, n=N, seed=1)
    return root


def _split(tmp_path: Path, modelnet_caches: Path, seed: int = 0) -> tuple[Path, list[Path]]:
    out = tmp_path / f"ModelNetFewshot{seed}"
    written = make_fewshot_splits(
        modelnet_caches, out, seed=seed, ways=(2, 3), shots=(1, 2), folds=2, eval_sample=3
    )
    return out, written


def _arrays(path: Path) -> dict[str, list[tuple[bytes, int, int]]]:
    data = safe_load_file(path)
    return {k: [(p.tobytes(), int(y), int(o)) for p, y, o in v] for k, v in data.items()}


def test_make_splits_layout_and_contents(tmp_path, modelnet_caches) -> None:
    out, written = _split(tmp_path, modelnet_caches)
    assert len(written) == 2 * 2 * 2
    assert (out / "3way_2shot" / "1.pkl").is_file()
    with open(out / "3way_2shot" / "0.pkl", "rb") as fh:
        episode = pickle.load(fh)  # the reference's reader can load it too
    assert set(episode) == {"train", "test"}
    assert len(episode["train"]) == 3 * 2 and len(episode["test"]) == 3 * 3
    train_cache = safe_load_file(cache_path(modelnet_caches, 40, "train"))
    test_cache = safe_load_file(cache_path(modelnet_caches, 40, "test"))
    train_rows = {p.tobytes() for p in train_cache[0]}
    test_rows = {p.tobytes() for p in test_cache[0]}
    mapping: dict[int, int] = {}
    for split, rows in (("train", train_rows), ("test", test_rows)):
        for points, label, orig in episode[split]:
            assert points.shape == (N, 6) and points.tobytes() in rows  # from the right split
            assert mapping.setdefault(label, orig) == orig  # one original class per new label
    assert sorted(mapping) == [0, 1, 2] and set(mapping.values()) <= {5, 7, 9, 11}


def test_make_splits_is_seeded(tmp_path, modelnet_caches) -> None:
    out_a, _ = _split(tmp_path, modelnet_caches, seed=0)
    out_b = tmp_path / "again"
    make_fewshot_splits(
        modelnet_caches, out_b, seed=0, ways=(2, 3), shots=(1, 2), folds=2, eval_sample=3
    )
    out_c, _ = _split(tmp_path, modelnet_caches, seed=1)
    rel = Path("3way_2shot") / "1.pkl"
    assert _arrays(out_a / rel) == _arrays(out_b / rel)
    assert _arrays(out_a / rel) != _arrays(out_c / rel)


def test_make_splits_requires_enough_shapes(tmp_path, modelnet_caches) -> None:
    with pytest.raises(MalformedDatasetError, match="need more than 4"):
        make_fewshot_splits(modelnet_caches, tmp_path / "x", ways=(2,), shots=(4,), folds=1)
    with pytest.raises(DatasetNotFoundError, match="modelnet40_train_8192pts_fps.dat"):
        make_fewshot_splits(tmp_path / "nowhere", tmp_path / "x")


@pytest.mark.parametrize("folder", ["3way_2shot", "3way2shot"])
def test_dataset_accepts_both_folder_names(tmp_path, modelnet_caches, folder: str) -> None:
    out, _ = _split(tmp_path, modelnet_caches)
    if folder == "3way2shot":
        (out / "3way_2shot").rename(out / folder)
    train = ModelNetFewshot(out, 3, 2, 1, "train")
    test = ModelNetFewshot(out, 3, 2, 1, "test")
    assert len(train) == 6 and len(test) == 9
    item = test[0]
    assert item["points"].shape == (N, 3) and item["points"].dtype == torch.float32
    torch.testing.assert_close(item["points"].norm(dim=1).max(), torch.tensor(1.0))
    torch.testing.assert_close(test[0]["points"], item["points"])
    a = train[0]["points"]
    assert not torch.equal(a, train[0]["points"])  # train: shuffled per access


def test_missing_episode_names_both_layouts(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError) as err:
        ModelNetFewshot(tmp_path, 5, 10, 3)
    msg = str(err.value)
    assert "5way_10shot/3.pkl" in msg and "5way10shot/3.pkl" in msg
    assert "make_fewshot_splits" in msg


def test_malicious_episode_is_refused(tmp_path, exploit_pickle) -> None:
    sentinel = tmp_path / "pwned"
    path = tmp_path / "5way_10shot" / "0.pkl"
    path.parent.mkdir()
    for kind in ("system", "exec"):
        path.write_bytes(exploit_pickle(sentinel, kind, wrap="episode"))
        with pytest.raises(MalformedDatasetError, match="refused"):
            ModelNetFewshot(tmp_path, 5, 10, 0)
        assert not sentinel.exists()


def test_malformed_episode(tmp_path) -> None:
    path = tmp_path / "5way_10shot" / "0.pkl"
    path.parent.mkdir()
    path.write_bytes(pickle.dumps({"train": [(np.zeros((4, 6), np.float32), 7, 3)], "test": []}))
    with pytest.raises(MalformedDatasetError, match=r"label 7, outside \[0, 5\)"):
        ModelNetFewshot(tmp_path, 5, 10, 0)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with pytest.raises(MalformedDatasetError, match="'train' and 'test'"):
        ModelNetFewshot(tmp_path, 5, 10, 0)


def test_datamodule(tmp_path, modelnet_caches, set_training) -> None:
    out, _ = _split(tmp_path, modelnet_caches)
    dm = ModelNetFewshotDataModule(
        out, way=3, shot=2, fold=0, npoints=16, batch_size=2, num_workers=0
    )
    assert dm.num_classes == 3 and dm.dataset_name == "modelnet_fewshot"
    assert set(dm.class_names) <= {MODELNET40_CLASSES[k] for k in (5, 7, 9, 11)}
    assert len(set(dm.class_names)) == 3
    assert dm.train_transform.__name__ == "rotate_y"
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    set_training(dm, True)
    out_batch = dm.on_after_batch_transfer(dict(batch), 0)
    assert out_batch["points"].shape == (2, 16, 3)
    with pytest.raises(ValueError, match="way"):
        ModelNetFewshotDataModule(out, way=-1, shot=2, fold=0)
