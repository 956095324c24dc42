"""ShapeNetPart on tiny files in the reference layout: splits, items, cache, errors, DataModule."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from recon_lightning.data import ShapeNetPart, ShapeNetPartDataModule
from recon_lightning.data import shapenetpart as spp
from recon_lightning.data.errors import DatasetNotFoundError, MalformedDatasetError

CONF = Path(__file__).resolve().parents[2] / "conf"
NPOINTS = 32


def _rows(path: Path) -> np.ndarray:
    return np.loadtxt(path).astype(np.float32)


def _normalised(xyz: np.ndarray) -> np.ndarray:
    centred = xyz - xyz.mean(0)
    return centred / np.linalg.norm(centred, axis=1).max()


# ---------------------------------------------------------------------------------- constants


def test_category_and_part_tables() -> None:
    dm = ShapeNetPartDataModule
    assert dm.num_classes == 16 and dm.num_parts == 50 and len(dm.class_names) == 16
    assert dm.class_names[0] == "Airplane" and dm.class_names[-1] == "Table"
    assert dm.category_to_parts[0] == (0, 1, 2, 3)
    assert dm.category_to_parts[dm.class_names.index("Motorbike")] == tuple(range(30, 36))
    assert dm.category_to_parts[15] == (47, 48, 49)
    # Every part belongs to exactly one category, and the parts are 0..49 in category order.
    flat = [p for c in range(16) for p in dm.category_to_parts[c]]
    assert flat == list(range(50))
    assert all(dm.category_to_parts[dm.part_to_category[p]].count(p) == 1 for p in range(50))
    mask = spp.part_mask()
    assert mask.shape == (16, 50) and mask.sum() == 50 and bool(mask[11, 36])


# ---------------------------------------------------------------------------------- dataset


def test_splits_follow_the_reference_order(write_shapenetpart) -> None:
    root = write_shapenetpart()
    trainval = ShapeNetPart(root, "trainval", npoints=NPOINTS, seed=0)
    test = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    train = ShapeNetPart(root, "train", npoints=NPOINTS, seed=0)
    val = ShapeNetPart(root, "val", npoints=NPOINTS, seed=0)
    assert len(trainval) == 9 and len(test) == 6 and len(train) == 6 and len(val) == 3
    assert sorted(trainval.names) == sorted(train.names + val.names)
    # Category file order (Airplane, Bag, ..., Mug), then file name; the lists were reversed.
    assert trainval.category.tolist() == [0] * 3 + [1] * 3 + [11] * 3
    assert test.names == sorted(test.names, key=lambda n: (n.split("/")[0], n))
    assert test.category.tolist() == [0, 0, 1, 1, 11, 11]


def test_item_format_labels_and_normalisation(write_shapenetpart) -> None:
    root = write_shapenetpart()
    ds = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    item = ds[4]  # a Mug
    assert set(item) == {"points", "seg", "category", "index"}
    assert item["points"].shape == (NPOINTS, 3) and item["points"].dtype == torch.float32
    assert item["seg"].shape == (NPOINTS,) and item["seg"].dtype == torch.int64
    assert item["category"].dtype == torch.int64 and int(item["category"]) == 11
    assert int(item["index"]) == 4
    assert set(item["seg"].tolist()) <= {36, 37}
    # Every drawn point is a row of the unit-sphere-normalised file, with its own label.
    rows = _rows(root / f"{ds.names[4]}.txt")
    full = _normalised(rows[:, :3])
    np.testing.assert_allclose(np.linalg.norm(full, axis=1).max(), 1.0, rtol=1e-6)
    pts = item["points"].numpy()
    match = np.abs(pts[:, None, :] - full[None]).sum(-1).argmin(1)
    np.testing.assert_allclose(pts, full[match], atol=1e-6)
    np.testing.assert_array_equal(item["seg"].numpy(), rows[match, 6].astype(np.int64))


def test_eval_draws_are_seeded_per_shape(write_shapenetpart) -> None:
    root = write_shapenetpart()
    a = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    b = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    torch.manual_seed(123)  # the global generator must not matter
    first = a[2]
    torch.manual_seed(456)
    assert torch.equal(first["points"], a[2]["points"]) and torch.equal(first["seg"], a[2]["seg"])
    assert torch.equal(first["points"], b[2]["points"])
    assert not torch.equal(a[2]["points"], ShapeNetPart(root, "test", NPOINTS, seed=1)[2]["points"])
    # npoints above the stored count: drawn with replacement, as the reference.
    big = ShapeNetPart(root, "test", npoints=500, seed=0)[0]
    assert big["points"].shape == (500, 3)


def test_training_draws_use_torch_generator(write_shapenetpart) -> None:
    root = write_shapenetpart()
    ds = ShapeNetPart(root, "trainval", npoints=NPOINTS, seed=None)
    torch.manual_seed(0)
    x = ds[1]["points"]
    torch.manual_seed(0)
    assert torch.equal(x, ds[1]["points"])  # reproducible from Lightning's seeding
    assert not torch.equal(ds[1]["points"], ds[1]["points"])  # and fresh on every access


def test_all_points_items(write_shapenetpart) -> None:
    root = write_shapenetpart()
    ds = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0, return_all_points=True)
    item = ds[1]
    n = ds.num_points(1)
    assert item["points_all"].shape == (n, 3) and item["seg_all"].shape == (n,)
    rows = _rows(root / f"{ds.names[1]}.txt")
    np.testing.assert_allclose(item["points_all"].numpy(), _normalised(rows[:, :3]), atol=1e-6)
    np.testing.assert_array_equal(item["seg_all"].numpy(), rows[:, 6].astype(np.int64))


# ---------------------------------------------------------------------------------- cache


def test_cache_is_written_once_and_reused(write_shapenetpart, monkeypatch) -> None:
    root = write_shapenetpart()
    first = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    cache = root / ".recon_cache" / "shapenetpart_test.npz"
    assert cache.is_file()
    assert [p.name for p in cache.parent.iterdir()] == [cache.name]  # no temp file left
    with np.load(cache, allow_pickle=False) as z:  # plain arrays, no pickle
        assert {"key", "xyz", "seg", "offsets", "category", "names"} <= set(z.files)
        assert z["offsets"][-1] == len(z["xyz"]) == len(z["seg"])

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(spp, "parse_shape_file", fail)
    second = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    assert second.names == first.names
    assert torch.equal(second[3]["points"], first[3]["points"])


def test_changed_source_invalidates_cache(write_shapenetpart, monkeypatch) -> None:
    root = write_shapenetpart()
    ds = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0, return_all_points=True)
    path = root / f"{ds.names[0]}.txt"
    rows = _rows(path)
    rows[:, :3] *= 2.0  # same line count; new content, size and mtime
    rows[:, 6] = 3
    np.savetxt(path, rows, fmt="%.6f")
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    calls = []
    parse = spp.parse_shape_file
    monkeypatch.setattr(spp, "parse_shape_file", lambda *a: calls.append(a) or parse(*a))
    fresh = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0, return_all_points=True)
    assert len(calls) == 6
    assert set(fresh[0]["seg_all"].tolist()) == {3}
    # Touching a file (mtime only) also invalidates.
    calls.clear()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2 * 10**9))
    ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    assert len(calls) == 6
    # A changed split list (one shape fewer) too.
    calls.clear()
    lst = root / "train_test_split" / "shuffled_test_file_list.json"
    lst.write_text(json.dumps(json.loads(lst.read_text())[1:]))
    assert len(ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)) == 5
    assert len(calls) == 5


def test_corrupt_cache_is_rebuilt(write_shapenetpart, caplog) -> None:
    root = write_shapenetpart()
    first = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    cache = root / ".recon_cache" / "shapenetpart_test.npz"
    cache.write_bytes(cache.read_bytes()[:100])  # truncated
    with caplog.at_level(logging.WARNING, logger="recon_lightning"):
        again = ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    assert any("unreadable" in r.getMessage() for r in caplog.records)
    assert torch.equal(again[5]["points"], first[5]["points"])
    with np.load(cache, allow_pickle=False) as z:  # rewritten whole
        assert z["offsets"][-1] == len(z["xyz"])


def test_read_only_data_folder_falls_back_to_user_cache(
    write_shapenetpart, monkeypatch, tmp_path, caplog
) -> None:
    root = write_shapenetpart()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    # Running as root ignores file modes, so make the data folder "read-only" at the probe.
    real = spp._is_writable
    monkeypatch.setattr(spp, "_is_writable", lambda f: f.parent != root and real(f))
    with caplog.at_level(logging.INFO, logger="recon_lightning"):
        ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)
    assert not (root / ".recon_cache" / "shapenetpart_test.npz").exists()
    cached = list((tmp_path / "xdg" / "recon_lightning").glob("shapenetpart-*/*.npz"))
    assert [p.name for p in cached] == ["shapenetpart_test.npz"]
    assert any("read-only" in r.getMessage() for r in caplog.records)
    # The fallback cache is found again.
    monkeypatch.setattr(spp, "parse_shape_file", lambda *a: pytest.fail("re-parsed"))
    ShapeNetPart(root, "test", npoints=NPOINTS, seed=0)


def test_explicit_cache_dir(write_shapenetpart, tmp_path) -> None:
    root = write_shapenetpart()
    ShapeNetPart(root, "val", npoints=NPOINTS, seed=0, cache_dir=tmp_path / "c")
    assert (tmp_path / "c" / "shapenetpart_val.npz").is_file()
    assert not (root / ".recon_cache").exists()


def test_progress_logs_a_few_lines_when_not_a_tty(write_shapenetpart, caplog) -> None:
    root = write_shapenetpart()
    with caplog.at_level(logging.INFO, logger="recon_lightning"):
        ShapeNetPart(root, "trainval", npoints=NPOINTS, seed=0)
    lines = [r.getMessage() for r in caplog.records if "parsing shape files" in r.getMessage()]
    assert lines[0].endswith("0/9") and lines[-1].endswith("9/9") and 2 <= len(lines) <= 5


# ---------------------------------------------------------------------------------- errors


def test_missing_folder_and_files_name_the_path(write_shapenetpart, tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"nowhere.*shapenetcore_partanno.*\.zip"):
        ShapeNetPart(tmp_path / "nowhere", "test")
    root = write_shapenetpart()
    (root / "train_test_split" / "shuffled_val_file_list.json").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"shuffled_val_file_list\.json.*unzip"):
        ShapeNetPart(root, "trainval")
    ShapeNetPart(root, "test", npoints=NPOINTS)  # the other lists still work
    shape = next((root / "03797390").glob("*test.txt"))
    shape.unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"{shape.name}.*paths\.data_dir"):
        ShapeNetPart(root, "test")
    (root / "synsetoffset2category.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"synsetoffset2category\.txt"):
        ShapeNetPart(root, "test")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("0.1 0.2 0.3 0 0 1", r"line 3: expected 7 columns .* found 6"),
        ("0.1 0.2 0.3 0 0 1 2 5", r"line 3: expected 7 columns .* found 8"),
        ("0.1 0.2 abc 0 0 1 36", r"line 3, column 3: 'abc' is not a number"),
        ("0.1 0.2 0.3 0 0 1 17", r"line 3: part label 17 is not a part of Mug \(.*36..37"),
        ("0.1 0.2 0.3 0 0 1 36.5", r"line 3: part label 36.5 is not a part of Mug"),
        ("0.1 nan 0.3 0 0 1 36", r"line 3: non-finite"),
    ],
)
def test_malformed_shape_file_names_file_and_line(
    write_shapenetpart, line: str, message: str
) -> None:
    root = write_shapenetpart()
    path = next((root / "03797390").glob("*test.txt"))
    lines = path.read_text().splitlines()
    lines.insert(0, "")  # a blank line: line numbers are physical lines
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(MalformedDatasetError, match=message) as info:
        ShapeNetPart(root, "test")
    assert str(path) in str(info.value)


def test_empty_shape_file_and_bad_lists(write_shapenetpart) -> None:
    root = write_shapenetpart()
    path = next((root / "02773838").glob("*test.txt"))
    path.write_text("\n")
    with pytest.raises(MalformedDatasetError, match="holds no points"):
        ShapeNetPart(root, "test")
    path.write_text("\n\n1 2 3 4 5 6\n1 2 3 4 5 6\n")  # consistently 6 columns (no label)
    with pytest.raises(MalformedDatasetError, match=r"line 3: expected 7 columns .* found 6"):
        ShapeNetPart(root, "test")
    lst = root / "train_test_split" / "shuffled_val_file_list.json"
    lst.write_text(json.dumps(["shape_data/99999999/abc"]))
    with pytest.raises(MalformedDatasetError, match=r"shuffled_val_file_list\.json.*99999999"):
        ShapeNetPart(root, "val")
    lst.write_text("{not json")
    with pytest.raises(MalformedDatasetError, match="cannot parse"):
        ShapeNetPart(root, "val")
    (root / "synsetoffset2category.txt").write_text("Airplane\t02691156\nSpaceship\t01234567\n")
    with pytest.raises(MalformedDatasetError, match=r"line 2: unknown category 'Spaceship'"):
        ShapeNetPart(root, "val")


# ---------------------------------------------------------------------------------- DataModule


def _dm(root: Path, **kwargs) -> ShapeNetPartDataModule:
    settings = {"npoints": NPOINTS, "batch_size": 4, "eval_batch_size": 4, "num_workers": 0}
    return ShapeNetPartDataModule(root, **{**settings, **kwargs})


def test_datamodule_loaders_and_batch_contract(write_shapenetpart, set_training) -> None:
    root = write_shapenetpart()
    dm = _dm(root)
    dm.prepare_data()
    assert (root / ".recon_cache" / "shapenetpart_trainval.npz").is_file()
    dm.setup("fit")
    assert len(dm.dataset("trainval")) == 9 and dm.val_split == "test"
    train = list(dm.train_dataloader())
    assert len(train) == 2  # 9 shapes, batch 4, last partial batch dropped
    for batch in [*train, *dm.val_dataloader()]:
        assert batch["points"].dtype == torch.float32 and batch["points"].shape[1:] == (NPOINTS, 3)
        assert batch["seg"].dtype == torch.int64 and batch["seg"].shape == batch["points"].shape[:2]
        assert batch["category"].dtype == torch.int64 and batch["category"].dim() == 1
        allowed = dm.part_mask()[batch["category"]]
        assert bool(allowed.gather(1, batch["seg"]).all())  # labels within their category
    val = list(dm.val_dataloader())
    assert [len(b["category"]) for b in val] == [4, 2]
    dm.setup("test")
    test = list(dm.test_dataloader())
    assert all(torch.equal(a["points"], b["points"]) for a, b in zip(val, test, strict=True))


def test_training_draws_differ_across_epochs_and_eval_repeats(write_shapenetpart) -> None:
    root = write_shapenetpart()
    dm = _dm(root, batch_size=9)
    dm.setup(None)

    def epoch(loader) -> dict[int, torch.Tensor]:
        return {int(i): p for b in loader for i, p in zip(b["index"], b["points"], strict=True)}

    loader = dm.train_dataloader()
    e1 = epoch(loader)
    again = epoch(dm.train_dataloader())  # the same epoch again: the same draws (resumable)
    assert all(torch.equal(e1[k], again[k]) for k in e1)
    loader.sampler.set_epoch(1)  # what Lightning does at every epoch start
    e2 = epoch(loader)
    assert e1.keys() == e2.keys() and len(e1) == 9
    assert all(not torch.equal(e1[k], e2[k]) for k in e1)
    v1, v2 = epoch(dm.val_dataloader()), epoch(dm.val_dataloader())
    assert all(torch.equal(v1[k], v2[k]) for k in v1)


def test_augmentation_only_in_training(write_shapenetpart, set_training) -> None:
    root = write_shapenetpart()
    dm = _dm(root)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    points = batch["points"].clone()
    set_training(dm, False)
    assert torch.equal(dm.on_after_batch_transfer(dict(batch), 0)["points"], points)
    dm.trainer = None
    assert torch.equal(dm.on_after_batch_transfer(dict(batch), 0)["points"], points)
    set_training(dm, True)
    out = dm.on_after_batch_transfer(dict(batch), 0)["points"]
    assert out.shape == points.shape and not torch.equal(out, points)
    # Per shape: one isotropic factor in [0.8, 1.25] and one shift in [-0.1, 0.1]^3.
    centred_in = points - points.mean(1, keepdim=True)
    centred_out = out - out.mean(1, keepdim=True)
    factor = centred_out.norm(dim=-1).amax(1) / centred_in.norm(dim=-1).amax(1)
    torch.testing.assert_close(centred_out, centred_in * factor[:, None, None])
    assert bool(((factor >= 0.8) & (factor <= 1.25)).all())
    shift = out - points * factor[:, None, None]
    assert bool((shift.std(1) < 1e-5).all()) and bool((shift.abs() <= 0.1 + 1e-6).all())
    assert torch.equal(
        _dm(root, augment=False).on_after_batch_transfer(dict(batch), 0)["points"], points
    )


def test_scale_and_shift_matches_reference_ranges() -> None:
    g = torch.Generator().manual_seed(0)
    pts = torch.ones(1000, 2, 3)
    out = spp.scale_and_shift(pts, generator=g)
    # With all-ones clouds, out = factor + shift per axis; both points of a cloud agree.
    assert torch.equal(out[:, 0], out[:, 1])
    assert float(out.min()) >= 0.7 and float(out.max()) <= 1.35


def test_eval_all_points_batches(write_shapenetpart) -> None:
    root = write_shapenetpart()
    dm = _dm(root, eval_all_points=True)
    dm.setup("test")
    batch = next(iter(dm.test_dataloader()))
    ds = dm.dataset("test")
    lengths = [ds.num_points(k) for k in range(4)]
    width = max(lengths)
    assert batch["points"].shape == (4, NPOINTS, 3)
    assert batch["points_all"].shape == (4, width, 3) and batch["points_all"].dtype == torch.float32
    assert batch["seg_all"].shape == (4, width) and batch["seg_all"].dtype == torch.int64
    assert batch["mask_all"].dtype == torch.bool and batch["num_points"].tolist() == lengths
    assert batch["mask_all"].sum(1).tolist() == lengths
    assert bool((batch["seg_all"][~batch["mask_all"]] == -1).all())
    assert bool((batch["points_all"][~batch["mask_all"]] == 0).all())
    assert bool((batch["seg_all"][batch["mask_all"]] >= 0).all())
    # Training batches stay fixed-size.
    dm.setup("fit")
    assert set(next(iter(dm.train_dataloader()))) == {"points", "seg", "category", "index"}


def test_propagate_to_all_points() -> None:
    g = torch.Generator().manual_seed(0)
    points_all = torch.randn(2, 50, 3, generator=g)
    idx = torch.stack([torch.randperm(50, generator=g)[:20] for _ in range(2)])
    points = torch.stack([points_all[b, idx[b]] for b in range(2)])
    values = torch.randn(2, 20, 5, generator=g)
    for method in ("three_nn", "nearest"):
        out = spp.propagate_to_all_points(points, values, points_all, method=method)
        assert out.shape == (2, 50, 5)
        # A sampled original point gets its own values back.
        for b in range(2):
            torch.testing.assert_close(out[b, idx[b]], values[b], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="method"):
        spp.propagate_to_all_points(points, values, points_all, method="mean")


def test_split_too_small_for_a_batch(write_shapenetpart) -> None:
    root = write_shapenetpart()
    dm = _dm(root, batch_size=10)
    with pytest.raises(ValueError, match=r"'trainval' split has 9 samples.*total_bs"):
        dm.setup("fit")
    dm = _dm(root, batch_size=4)
    dm.trainer = SimpleNamespace(training=False, world_size=4)
    with pytest.raises(ValueError, match=r"4 device"):
        dm.setup("fit")
    dm.setup("test")  # evaluation alone does not need a full batch


def test_datamodule_rejects_bad_settings(tmp_path) -> None:
    with pytest.raises(ValueError, match="train_split"):
        ShapeNetPartDataModule(tmp_path, train_split="test")
    with pytest.raises(ValueError, match="val_split"):
        ShapeNetPartDataModule(tmp_path, val_split="train")
    with pytest.raises(ValueError, match="num_workers"):
        ShapeNetPartDataModule(tmp_path, num_workers="many")


def test_config_composes_and_instantiates(tmp_path) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train", overrides=["data=shapenetpart", f"paths.data_dir={tmp_path}"]
        )
    data_cfg = cfg.data.copy()
    assert data_cfg.total_bs == 16
    with open_dict(data_cfg):  # what recon-train does with the global batch on one device
        data_cfg.batch_size = data_cfg.pop("total_bs")
    dm = instantiate(data_cfg)
    assert type(dm) is ShapeNetPartDataModule
    assert dm.root == tmp_path / spp.FOLDER
    assert (dm.npoints, dm.batch_size, dm.eval_batch_size) == (2048, 16, 32)
    assert dm.eval_all_points is False and dm.cache_dir is None


class _Recorder(L.LightningModule):
    """Records what each loop's steps receive, after Lightning's batch transfer hooks."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: dict[str, list[dict[str, torch.Tensor]]] = {"train": [], "val": [], "test": []}

    def _record(self, stage: str, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        self.seen[stage].append({k: v.detach().clone() for k, v in batch.items()})
        return (self.weight * batch["points"].sum()) ** 2

    def training_step(self, batch, batch_idx):
        return self._record("train", batch)

    def validation_step(self, batch, batch_idx):
        self._record("val", batch)

    def test_step(self, batch, batch_idx):
        self._record("test", batch)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def test_fit_and_test_with_a_real_trainer(write_shapenetpart, monkeypatch) -> None:
    root = write_shapenetpart()
    dm = _dm(root, eval_all_points=True)
    augmented: list[torch.Tensor] = []
    real = spp.scale_and_shift

    def spy(points: torch.Tensor, *args) -> torch.Tensor:
        out = real(points, *args)
        augmented.append(out.detach().clone())
        return out

    monkeypatch.setattr(spp, "scale_and_shift", spy)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    assert len(model.seen["train"]) == 4 and len(model.seen["val"]) == 4
    # Every training batch, and only those, went through the augmentation.
    assert len(augmented) == 4
    for batch, out in zip(model.seen["train"], augmented, strict=True):
        assert set(batch) == {"points", "seg", "category", "index"}
        assert torch.equal(batch["points"], out)
    # Evaluation batches are the seeded, unaugmented items, identical in every pass.
    ds = dm.dataset("test")
    for batch in model.seen["val"] + model.seen["test"]:
        assert {"points_all", "seg_all", "mask_all", "num_points"} <= set(batch)
        for p, i in zip(batch["points"], batch["index"], strict=True):
            assert torch.equal(p, ds[int(i)]["points"])
    for a, b in zip(model.seen["val"][:2], model.seen["test"], strict=True):
        assert torch.equal(a["points_all"], b["points_all"]) and torch.equal(
            a["points"], b["points"]
        )
