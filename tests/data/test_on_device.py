"""data.on_device: the stacked cache, the index loader, the device batches against the DataLoader
path (which points, normalisation, rotations, batch format), resident cached teachers, a fit."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from recon_lightning.data import ShapeNet55, ShapeNet55DataModule
from recon_lightning.data import on_device as od
from recon_lightning.data import shapenet55 as sn
from recon_lightning.data.errors import MalformedDatasetError
from recon_lightning.data.on_device import (
    LabelTexts,
    OnDeviceTrainLoader,
    ensure_point_cache,
    load_point_store,
    point_cache_dirs,
    point_cache_name,
)
from recon_lightning.data.transforms import normalize_unit_sphere, rotate_y
from recon_lightning.tasks.pretrain import PretrainTask
from recon_lightning.teachers import (
    CachedTeachers,
    CacheMismatchError,
    build_cache,
    build_teachers,
)

#: The category texts of the ``write_shapenet`` fixture, in label order.
DESCRIPTIONS = ("an airplane", "a chair", "a table")

TINY = {
    "encoder": {
        "trans_dim": 32,
        "depth": 1,
        "num_heads": 2,
        "num_group": 8,
        "group_size": 8,
        "drop_path_rate": 0.0,
        "decoder_depth": 1,
        "decoder_num_heads": 2,
    },
    "masking": {"mask_type": "rand", "mask_ratio": 0.5},
}


def _trainer(
    dm: ShapeNet55DataModule, teachers: object = None, world: int = 1, rank: int = 0
) -> None:
    """Attach a stand-in trainer: training mode, a CPU strategy, a task with ``teachers`` (no
    task when None: the DataModule then has no teachers to check or make resident)."""
    dm.trainer = SimpleNamespace(  # type: ignore[assignment]
        training=True,
        world_size=world,
        global_rank=rank,
        current_epoch=0,
        lightning_module=None if teachers is None else SimpleNamespace(teachers=teachers),
        strategy=SimpleNamespace(root_device=torch.device("cpu")),
    )


def _store(root: Path, npoints: int = 4, **kwargs: object) -> tuple[ShapeNet55, od.PointStore]:
    ds = ShapeNet55(root, "train", whole=True, npoints=npoints)
    return ds, load_point_store(ds, "cpu", point_cache_dirs(root), **kwargs)


# ---------------------------------------------------------------------------------- cache


def test_stacked_cache_is_built_once_and_keyed_on_the_file_list(write_shapenet, monkeypatch):
    root = write_shapenet()
    ds = ShapeNet55(root, "train", whole=True, npoints=32)
    path = ensure_point_cache(ds, point_cache_dirs(root))
    assert path is not None and path.parent == root / ".recon_cache"
    stacked = np.load(path, mmap_mode="r")
    expected = np.stack([np.load(root / "shapenet_pc" / f) for f in ds.files])
    assert stacked.shape == (6, 64, 3) and np.array_equal(stacked, expected)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp.npy")]

    # Memory-mapped next time: no point file is read again.
    def no_reads(index: int) -> np.ndarray:
        raise AssertionError("re-read a point file")

    monkeypatch.setattr(ds, "load_points", no_reads)
    assert ensure_point_cache(ds, point_cache_dirs(root)) == path
    store = load_point_store(ds, "cpu", point_cache_dirs(root))
    assert torch.equal(store.points, torch.from_numpy(expected))
    assert store.labels.tolist() == ds.labels and store.descriptions == tuple(ds.descriptions)

    # Another file list is another cache.
    train_only = ShapeNet55(root, "train", whole=False, npoints=32)
    assert point_cache_name(train_only.files) != path.name
    other = ensure_point_cache(train_only, [root / "elsewhere"])
    assert other is not None and np.load(other).shape == (4, 64, 3)


def test_stale_or_unwritable_caches_and_unequal_clouds(write_shapenet, tmp_path, caplog):
    root = write_shapenet()
    ds = ShapeNet55(root, "train", whole=True, npoints=32)
    folder = root / ".recon_cache"
    folder.mkdir()
    np.save(folder / point_cache_name(ds.files), np.zeros((5, 64, 3), np.float32))  # stale
    with caplog.at_level(logging.INFO, logger=od.__name__):
        path = ensure_point_cache(ds, [folder])
    assert "stacking anew" in caplog.text and "stacking 6 point clouds: 6/6" in caplog.text
    assert path is not None and np.load(path).shape == (6, 64, 3)
    # Nowhere writable: stacked in memory for the run.
    blocked = tmp_path / "file"
    blocked.write_text("")
    assert ensure_point_cache(ds, [blocked / "sub"]) is None
    store = load_point_store(ds, "cpu", [blocked / "sub"])
    assert torch.equal(store.points, torch.from_numpy(np.load(path)))
    # Clouds of different sizes cannot be stacked.
    np.save(root / "shapenet_pc" / ds.files[3], np.zeros((40, 3), np.float32))
    with pytest.raises(MalformedDatasetError, match="on_device=false"):
        ensure_point_cache(ds, [tmp_path / "other"])


def test_on_device_points_keeps_a_seeded_subset_of_each_cloud(write_shapenet):
    root = write_shapenet()
    ds, full = _store(root)
    _, kept = _store(root, points_per_shape=20, seed=3)
    _, again = _store(root, points_per_shape=20, seed=3)
    _, other = _store(root, points_per_shape=20, seed=4)
    assert kept.points.shape == (6, 20, 3) and torch.equal(kept.points, again.points)
    assert not torch.equal(kept.points, other.points)
    for s in range(6):
        rows = {tuple(p) for p in full.points[s].tolist()}
        ours = [tuple(p) for p in kept.points[s].tolist()]
        assert len(set(ours)) == 20 and set(ours) <= rows  # without replacement, from the shape
    with pytest.raises(ValueError, match="at least data.npoints"):
        ShapeNet55DataModule(root, npoints=32, on_device=True, on_device_points=16)


# ---------------------------------------------------------------------------------- loader


def test_loader_epochs_shards_and_resume():
    loader = OnDeviceTrainLoader(10, 3, "cpu", seed=7)
    assert len(loader) == 3  # drop_last
    first = [b["index"] for b in loader]
    assert all(b.dtype == torch.int64 and b.shape == (3,) for b in first)
    assert len(set(torch.cat(first).tolist())) == 9
    # The DataLoader path's order: DistributedSampler's shuffle of seed + epoch.
    order = torch.randperm(10, generator=torch.Generator().manual_seed(7)).tolist()
    assert torch.cat(first).tolist() == order[:9]
    assert [b["index"].tolist() for b in loader] == [b.tolist() for b in first]
    loader.sampler.set_epoch(1)  # what Lightning calls before each epoch
    second = [b["index"].tolist() for b in loader]
    assert second != [b.tolist() for b in first]

    # A checkpoint taken after one batch of epoch 1 resumes with that epoch's other batches.
    loader.sampler.set_epoch(1)
    it = iter(loader)
    next(it)
    state = loader.state_dict()
    assert state == {"epoch": 1, "batches": 1, "epoch_done": 0}
    resumed = OnDeviceTrainLoader(10, 3, "cpu", seed=7)
    resumed.load_state_dict(state)
    resumed.sampler.set_epoch(1)
    assert [b["index"].tolist() for b in resumed] == second[1:]
    resumed.load_state_dict({"epoch": 1, "batches": 3, "epoch_done": 1})
    resumed.sampler.set_epoch(2)
    loader.sampler.set_epoch(2)
    assert [b["index"].tolist() for b in resumed] == [b["index"].tolist() for b in loader]

    # DDP: same order on every rank, disjoint shards, the same number of batches.
    ranks = [OnDeviceTrainLoader(10, 2, "cpu", seed=7, num_replicas=2, rank=r) for r in (0, 1)]
    shards = [torch.cat([b["index"] for b in r]).tolist() for r in ranks]
    assert [len(r) for r in ranks] == [2, 2] and not set(shards[0]) & set(shards[1])
    assert shards[0] == order[0::2][:4] and shards[1] == order[1::2][:4]


def test_datamodule_gives_each_rank_its_shard(write_shapenet):
    root = write_shapenet()
    shards = []
    for rank in (0, 1):
        dm = ShapeNet55DataModule(root, npoints=32, batch_size=1, num_workers=0, on_device=True)
        _trainer(dm, world=2, rank=rank)
        dm.setup("fit")
        loader = dm.train_dataloader()
        assert isinstance(loader, OnDeviceTrainLoader) and len(loader) == 3
        shards.append({int(b["index"]) for b in loader})
    assert not shards[0] & shards[1] and shards[0] | shards[1] == set(range(6))


# ---------------------------------------------------------------------------------- batches


def _default_path_points(ds: ShapeNet55, index: int, draws: int) -> torch.Tensor:
    """``draws`` items of shape ``index`` from the DataLoader path (images skipped)."""
    ds.load_image = lambda i: None  # type: ignore[method-assign]
    ds.image_transform = lambda img: torch.zeros(1)  # type: ignore[assignment]
    return torch.stack([ds[index]["points"] for _ in range(draws)])


def _chosen(raw: torch.Tensor, stored: torch.Tensor) -> torch.Tensor:
    """(T, n, 3) un-normalised subsets of ``stored`` (P, 3) -> (T, n) stored row of each point."""
    match = (raw[:, :, None, :] == stored[None, None]).all(-1)  # (T, n, P)
    assert bool((match.sum(-1) == 1).all())
    return match.int().argmax(-1)


def _check_uniform_subsets(chosen: torch.Tensor, stored: int) -> None:
    """Each draw has distinct rows; each row, pair of rows and first row has its uniform rate."""
    draws, n = chosen.shape
    assert all(len(set(row)) == n for row in chosen.tolist())  # without replacement

    def near(counts: torch.Tensor, p: float) -> bool:
        sd = math.sqrt(draws * p * (1 - p))
        return bool(((counts.double() - draws * p).abs() < 5 * sd).all())

    hits = torch.zeros(draws, stored).scatter_(1, chosen, 1.0)
    assert near(hits.sum(0), n / stored)
    pairs = (hits.T @ hits)[~torch.eye(stored, dtype=torch.bool)]
    assert near(pairs, n * (n - 1) / (stored * (stored - 1)))
    assert near(torch.bincount(chosen[:, 0], minlength=stored), 1 / stored)


def test_same_subset_distribution_as_the_dataloader_path(write_shapenet, monkeypatch):
    root = write_shapenet(n_points=8)
    ds, store = _store(root, npoints=3)
    # Without normalisation the chosen stored rows can be read off the points.
    monkeypatch.setattr(od, "normalize_unit_sphere", lambda p: p)
    monkeypatch.setattr(sn, "normalize_unit_sphere_np", lambda p: p)
    draws, shape = 3000, 2
    torch.manual_seed(0)
    ours = store.batch(torch.full((draws,), shape), 3)["points"]
    default = _default_path_points(ds, shape, draws)
    stored = store.points[shape]
    for raw in (ours, default):
        _check_uniform_subsets(_chosen(raw, stored), 8)


def test_normalisation_rotation_and_batch_format_match_the_dataloader_path(
    write_shapenet, set_training
):
    root = write_shapenet()
    dm = ShapeNet55DataModule(root, npoints=32, batch_size=4, num_workers=0, pin_memory=False)
    dm.setup("fit")
    loaded = next(iter(dm.train_dataloader()))
    set_training(dm, True)
    default = dm.on_after_batch_transfer(loaded, 0)

    ddm = ShapeNet55DataModule(root, npoints=32, batch_size=4, num_workers=0, on_device=True)
    _trainer(ddm)
    ddm.setup("fit")
    loader = ddm.train_dataloader()
    batch = ddm.on_after_batch_transfer(next(iter(loader)), 0)
    assert set(batch) == set(default) - {"image"}
    for key in ("points", "label", "index"):
        assert batch[key].shape == default[key].shape and batch[key].dtype == default[key].dtype
    assert isinstance(batch["text"], LabelTexts) and len(batch["text"]) == len(default["text"])
    ds = ddm.dataset("train")
    assert list(batch["text"]) == [ds[i]["text"] for i in batch["index"].tolist()]
    assert batch["label"].tolist() == [ds.labels[i] for i in batch["index"].tolist()]
    # Rotation about y keeps each point's radius: the clouds are unit-sphere normalised.
    radius = batch["points"].norm(dim=-1)
    torch.testing.assert_close(radius.amax(1), torch.ones(4))

    # Same seed, without then with the rotation: normalised subsets of the stored clouds, then
    # rotated about y by uniform angles.
    store = ddm._point_store
    assert store is not None
    index = torch.arange(6).repeat(400)
    plain = store.batch(index, 32, torch.Generator().manual_seed(1))["points"]
    turned = store.batch(index, 32, torch.Generator().manual_seed(1), rotate_y)["points"]
    keys = torch.rand(len(index), 64, generator=torch.Generator().manual_seed(1))
    subset = store.points[index[:, None], keys.argsort(1)[:, :32]]
    torch.testing.assert_close(plain, normalize_unit_sphere(subset))
    # ... the DataLoader path's normalisation (numpy, per item) of the same subsets.
    per_item = np.stack([sn.normalize_unit_sphere_np(c) for c in subset[:12].numpy()])
    np.testing.assert_allclose(plain[:12].numpy(), per_item, atol=1e-6)
    torch.testing.assert_close(plain.mean(1), torch.zeros(len(index), 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(turned[..., 1], plain[..., 1])
    angle = torch.atan2(turned[:, 0, 2], turned[:, 0, 0]) - torch.atan2(
        plain[:, 0, 2], plain[:, 0, 0]
    )
    counts = torch.bincount(
        (angle % (2 * math.pi) / (2 * math.pi) * 8).long().clamp(max=7), minlength=8
    )
    expected = len(index) / 8
    assert bool(((counts - expected).abs() < 5 * math.sqrt(expected * 7 / 8)).all())


def test_on_device_refuses_online_teachers(write_shapenet):
    root = write_shapenet()
    dm = ShapeNet55DataModule(root, npoints=32, batch_size=2, num_workers=0, on_device=True)
    _trainer(dm, teachers=torch.nn.Identity())
    with pytest.raises(ValueError, match="teachers=cached"):
        dm.prepare_data()
    assert not (root / ".recon_cache").exists()  # refused before stacking anything


# ---------------------------------------------------------------------------------- teachers


class _Images(Dataset):
    """Pretraining items for ``build_cache`` with the fixture's descriptions (6 shapes)."""

    def __len__(self) -> int:
        return 6

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(i)
        return {
            "image": torch.randint(0, 256, (3, 224, 224), generator=g, dtype=torch.uint8),
            "text": DESCRIPTIONS[i % 3],
            "index": i,
        }


@pytest.fixture(scope="module")
def teacher_cache(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    teachers = build_teachers(mode="random", tiny=True)
    out = tmp_path_factory.mktemp("teacher_cache")
    return build_cache(_Images(), teachers, out, views=3, batch_size=6, progress=False)


def test_resident_targets_equal_memory_mapped_targets(write_shapenet, teacher_cache):
    root = write_shapenet()
    ds, store = _store(root, npoints=32)
    mapped = CachedTeachers(teacher_cache)
    resident = CachedTeachers(teacher_cache)
    resident.make_resident("cpu", descriptions=ds.descriptions)
    assert resident.resident and not mapped.resident
    batch = store.batch(torch.tensor([5, 0, 3, 3, 1]), 32)
    listed = dict(batch, text=[ds.descriptions[i] for i in batch["label"].tolist()])
    for seed in range(3):
        a = mapped.targets(listed, generator=torch.Generator().manual_seed(seed))
        b = resident.targets(batch, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert batch["text"]._texts is None  # text rows came from the labels: no host read-back
    view = torch.tensor([2, 0, 1, 1, 0])
    img, _ = resident.targets(batch)  # device RNG: rows are cached views of the right shapes
    stored = torch.stack(
        [mapped.image_lookup(batch["index"], torch.full((5,), k)) for k in range(3)]
    )
    assert bool((img[None] == stored).all(-1).any(0).all())
    assert torch.equal(
        resident._resident_on(torch.device("cpu"))[batch["index"], view],
        mapped.image_lookup(batch["index"], view),
    )
    # Pickled (DDP spawn, workers): the device copy stays behind and is made again on use.
    import pickle

    copy = pickle.loads(pickle.dumps(resident))
    assert copy._resident_image is None
    c = copy.targets(batch, generator=torch.Generator().manual_seed(0))
    a = mapped.targets(listed, generator=torch.Generator().manual_seed(0))
    assert torch.equal(c[0], a[0]) and torch.equal(c[1], a[1])


def test_resident_cache_checks_and_uncached_categories(write_shapenet, teacher_cache):
    root = write_shapenet()
    # A cache of another dataset fails at setup, before the clouds are loaded.
    dm = ShapeNet55DataModule(
        root, npoints=32, whole=False, batch_size=2, num_workers=0, on_device=True
    )
    _trainer(dm, teachers=CachedTeachers(teacher_cache))
    with pytest.raises(CacheMismatchError, match="holds 6 shapes, the dataset has 4"):
        dm.setup("fit")
    assert dm._point_store is None
    # A category the cache never saw cannot borrow another's text features.
    resident = CachedTeachers(teacher_cache)
    resident.make_resident("cpu", descriptions=[*DESCRIPTIONS, "a sofa"])
    batch = {"index": torch.tensor([0, 1]), "label": torch.tensor([2, 3])}
    with pytest.raises(IndexError):
        resident.targets(batch)


def test_one_epoch_pretraining_fit_on_device(write_shapenet, teacher_cache, tmp_path, monkeypatch):
    root = write_shapenet()

    def no_items(self: ShapeNet55, index: int) -> dict:
        raise AssertionError("the on-device path read a dataset item")

    monkeypatch.setattr(ShapeNet55, "__getitem__", no_items)
    monkeypatch.setenv("PL_GLOBAL_SEED", "0")
    torch.manual_seed(0)
    dm = ShapeNet55DataModule(
        root, npoints=32, batch_size=2, num_workers=0, persistent_workers=False, on_device=True
    )
    task = PretrainTask(TINY, teachers=CachedTeachers(teacher_cache))

    class Served(pl.Callback):
        """The loader's checkpoint state after each training batch."""

        states: list[dict[str, int]] = []

        def on_train_batch_end(self, trainer, *args) -> None:
            self.states.append(trainer.train_dataloader.state_dict())

    trainer = pl.Trainer(
        callbacks=[Served()],
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(task, datamodule=dm)
    assert trainer.global_step == 3  # 6 shapes (whole list), batches of 2
    # What a checkpoint would store: batches consumed (not prefetched), then the epoch's end.
    assert [(s["batches"], s["epoch_done"]) for s in Served.states] == [(1, 0), (2, 0), (3, 1)]
    assert isinstance(trainer.train_dataloader, OnDeviceTrainLoader)
    assert task.teachers.resident
    assert torch.isfinite(trainer.callback_metrics["train/loss"])
    assert os.environ["PL_GLOBAL_SEED"] == "0"


def test_recon_train_with_on_device_and_cached_teachers(
    write_shapenet, teacher_cache, tmp_path, monkeypatch
):
    """`recon-train data=shapenet55 data.on_device=true teachers=cached`: RankSeeding, the
    per-device batch and the config keys together (the cache is what `recon-data
    cache-teachers` writes, built as in the fixture)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from recon_lightning.cli.train import run

    root = write_shapenet()
    monkeypatch.setattr(ShapeNet55, "__getitem__", lambda self, i: pytest.fail("read an item"))
    overrides = [
        "data=shapenet55",
        f"paths.data_dir={root.parent}",
        "data.npoints=32",
        "data.num_workers=0",
        "data.on_device=true",
        "data.total_bs=2",
        "teachers=cached",
        f"teachers.cache_dir={teacher_cache}",
        *[f"encoder.{k}={v}" for k, v in TINY["encoder"].items()],
        f"paths.output_dir={tmp_path / 'out'}",
        "logger=none",
        "callbacks=none",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "++trainer.limit_val_batches=0",
        "++trainer.enable_checkpointing=false",
    ]
    GlobalHydra.instance().clear()
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    metrics = run(cfg)
    assert np.isfinite(metrics["train/img"]) and np.isfinite(metrics["train/text"])
