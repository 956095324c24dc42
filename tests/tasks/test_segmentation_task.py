"""PartSegmentationTask: fit on real-format ShapeNetPart files, the double step, restricted
prediction, eval_all_points, results.json, and a short synthetic run clearly above a constant
per-category prediction."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from recon_lightning.data import ShapeNetPartDataModule, SyntheticShapesDataModule
from recon_lightning.data.shapenetpart import (
    CATEGORY_TO_PARTS,
    SHAPENETPART_CATEGORIES,
    propagate_to_all_points,
)
from recon_lightning.evaluation.segmentation_metrics import PartSegmentationIoU, masked_argmax
from recon_lightning.tasks.segmentation import (
    FIGURE_FILE,
    TABLE_FILE,
    PartSegmentationTask,
    SegmentationExample,
    partseg_config,
)

#: A CPU-sized model: 3 blocks (one per feature third), small propagation and head.
ENCODER = {
    "trans_dim": 24,
    "depth": 3,
    "num_heads": 2,
    "num_group": 8,
    "group_size": 8,
    "drop_path_rate": 0.0,
}
SMALL_HEAD = {"propagation_dims": [32, 32], "head_dims": [32, 16]}
#: ShapeNetPart categories of the tiny folder (name, parts); Mug's labels are far from 0.
CATEGORIES = [("Airplane", (0, 1, 2, 3)), ("Bag", (4, 5)), ("Mug", (36, 37))]


def write_shapenetpart(root: Path, per_category: tuple[int, int, int] = (3, 1, 2)) -> Path:
    """A ShapeNetPart folder in the reference layout (the idea of tests/data/conftest.py).

    Each shape is a Gaussian blob per part (so parts are spatially separable), 60-90 points,
    off-centre and unscaled, with normals; all 16 categories listed, 3 with folders.
    """
    base = root / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (base / "train_test_split").mkdir(parents=True)
    (base / "synsetoffset2category.txt").write_text(
        "".join(f"{name}\t{synset}\n" for name, synset in SHAPENETPART_CATEGORIES.items())
    )
    rng = np.random.default_rng(7)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    k = 0
    for name, parts in CATEGORIES:
        synset = SHAPENETPART_CATEGORIES[name]
        (base / synset).mkdir()
        for split, count in zip(("train", "val", "test"), per_category, strict=True):
            for _ in range(count):
                n = 60 + 10 * (k % 4)
                labels = np.array(parts)[np.arange(n) % len(parts)]
                centres = {p: rng.normal(size=3) * 2 for p in parts}
                xyz = np.stack([centres[p] for p in labels]) + 0.3 * rng.normal(size=(n, 3))
                rows = np.concatenate([3 * xyz + 1, rng.normal(size=(n, 3)), labels[:, None]], 1)
                np.savetxt(base / synset / f"{k:04d}.txt", rows, fmt="%.6f")
                lists[split].append(f"shape_data/{synset}/{k:04d}")
                k += 1
    for split, entries in lists.items():
        path = base / "train_test_split" / f"shuffled_{split}_file_list.json"
        path.write_text(json.dumps(entries[::-1]))
    return base


def make_task(**kwargs) -> PartSegmentationTask:
    model = {"encoder": ENCODER, "num_parts": 50, "num_categories": 16, **SMALL_HEAD}
    return PartSegmentationTask(model={**model, **kwargs.pop("model", {})}, **kwargs)


def trainer(root: Path, **kwargs) -> pl.Trainer:
    settings = {
        "accelerator": "cpu",
        "devices": 1,
        "max_epochs": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
        "default_root_dir": str(root),
    }
    return pl.Trainer(**{**settings, **kwargs})


def test_partseg_config_flattens_and_refuses_typos():
    flat = partseg_config({"encoder": {**ENCODER, "decoder_depth": 4}, "cls_dim": 50})
    assert flat["num_parts"] == 50 and flat["trans_dim"] == 24 and "decoder_depth" not in flat
    assert partseg_config({"trans_dim": 8, "head_dims": (4, 2)})["head_dims"] == [4, 2]
    with pytest.raises(ValueError, match="num_part"):
        partseg_config({"encoder": ENCODER, "num_part": 50})
    with pytest.raises(ValueError, match="contradicts"):
        partseg_config({"cls_dim": 50, "num_parts": 40})


def test_one_batch_fit_on_shapenetpart_files(tmp_path):
    root = write_shapenetpart(tmp_path / "data")
    dm = ShapeNetPartDataModule(
        root, npoints=64, batch_size=4, eval_batch_size=4, num_workers=0, cache_dir=tmp_path / "c"
    )
    torch.manual_seed(0)
    task = make_task(scheduler={"epochs": 2, "warmup_epochs": 0})
    before = task.model.head.out.weight.detach().clone()
    trainer(tmp_path, limit_train_batches=1).fit(task, datamodule=dm)
    assert not torch.equal(task.model.head.out.weight, before)  # one step was taken
    assert task.part_table.shape == (16, 50) and task.class_names[11] == "Mug"
    assert [e for e, _, _ in task.val_history] == [0]
    metrics = task.trainer.callback_metrics
    assert {"train/loss", "val/miou_instance", "val/miou_class", "val/acc"} <= set(metrics)
    assert 0.0 <= float(metrics["val/miou_instance"]) <= 100.0
    # The test split holds 2 shapes of each of the 3 categories; the others have none.
    counts = task.last_eval["shapes_per_category"]
    assert counts[[0, 1, 11]].tolist() == [2, 2, 2] and int(counts.sum()) == 6
    assert (tmp_path / FIGURE_FILE).is_file()  # written at the end of fit


def test_eval_all_points_scores_every_original_point(tmp_path):
    root = write_shapenetpart(tmp_path / "data")
    dm = ShapeNetPartDataModule(
        root,
        npoints=48,
        batch_size=4,
        eval_batch_size=3,
        num_workers=0,
        eval_all_points=True,
        cache_dir=tmp_path / "c",
    )
    torch.manual_seed(1)
    task = make_task(all_points_method="nearest")
    trainer(tmp_path).validate(task, datamodule=dm)
    got = task.last_eval
    # The same numbers by hand: model on the sampled points, nearest propagation, mask.
    expected = PartSegmentationIoU(task.part_table)
    task.eval()
    with torch.no_grad():
        for batch in dm.val_dataloader():
            log_probs = task(batch["points"], batch["category"])
            values = propagate_to_all_points(
                batch["points"], log_probs, batch["points_all"], "nearest"
            )
            pred = masked_argmax(values, batch["category"], task.part_table)
            expected.update(pred, batch["seg_all"], batch["category"], batch["mask_all"])
    want = expected.compute()
    torch.testing.assert_close(got["miou_instance"], want["miou_instance"])
    torch.testing.assert_close(got["accuracy"], want["accuracy"])
    # Every original point counted (not the 48 drawn ones): the accuracy denominator says so.
    total = sum(dm.dataset("test").num_points(i) for i in range(len(dm.dataset("test"))))
    assert int(expected.total) == total and total != 48 * len(dm.dataset("test"))


def test_restricted_prediction_never_leaves_the_category():
    torch.manual_seed(2)
    task = make_task().eval()
    # Bias the head towards Table's last part: an unrestricted argmax would pick it everywhere.
    with torch.no_grad():
        task.model.head.out.bias.fill_(-20.0)
        task.model.head.out.bias[49] = 20.0
    points = torch.randn(16, 64, 3)
    category = torch.arange(16)
    with torch.no_grad():
        assert (task(points, category).argmax(-1) == 49).all()
        pred = task.predict_parts(points, category)
    for c in range(16):
        assert set(pred[c].unique().tolist()) <= set(CATEGORY_TO_PARTS[c]), c
    # A dataset's own layout replaces ShapeNetPart's (padded to the model's 50 outputs).
    task.set_part_layout({0: (0, 1), 1: (2, 3, 4)}, ["a", "b"])
    assert task.part_table.shape == (2, 50) and task.class_names == ["a", "b"]
    with torch.no_grad():
        pred = task.predict_parts(points[:2], torch.tensor([0, 1]))
    assert set(pred[0].tolist()) <= {0, 1} and set(pred[1].tolist()) <= {2, 3, 4}
    with pytest.raises(ValueError, match="num_parts"):
        task.set_part_layout({0: (0, 60)})


def _batches(n_batches: int, batch: int = 4, n: int = 64) -> DataLoader:
    g = torch.Generator().manual_seed(3)
    items = [
        {
            "points": torch.randn(n, 3, generator=g),
            "seg": torch.randint(0, 4, (n,), generator=g),
            "category": torch.tensor(0),
        }
        for _ in range(n_batches * batch)
    ]
    return DataLoader(items, batch_size=batch)


class _GradCapture(pl.Callback):
    """Snapshots of the gradients Lightning's closure produced (before any step or clipping)."""

    def __init__(self) -> None:
        self.grads: dict[str, torch.Tensor] = {}

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.grads = {
            n: p.grad.detach().clone()
            for n, p in pl_module.named_parameters()
            if p.grad is not None
        }


@pytest.mark.parametrize("double_step", [True, False])
def test_double_step_is_two_adamw_steps_first_unclipped(tmp_path, double_step):
    clip = 0.05
    torch.manual_seed(4)
    task = make_task(
        double_step=double_step,
        optimizer={"lr": 1e-3},
        scheduler={"epochs": 5, "warmup_epochs": 0},
    )
    reference = copy.deepcopy(task)
    capture = _GradCapture()
    run = trainer(tmp_path, limit_train_batches=1, gradient_clip_val=clip, callbacks=[capture])
    run.fit(task, train_dataloaders=_batches(1))

    # The same optimiser (groups, lrs of epoch 0) on a copy, stepped by hand.
    opt = reference.configure_optimizers()["optimizer"]
    params = dict(reference.named_parameters())
    assert capture.grads.keys() == params.keys()
    for name, p in params.items():
        p.grad = capture.grads[name].clone()
    norm = torch.nn.utils.get_total_norm([p.grad for p in params.values()])
    assert norm > 10 * clip  # clipping really changes the second step
    if double_step:
        opt.step()  # right after backward, unclipped
    torch.nn.utils.clip_grad_norm_(list(params.values()), clip)
    opt.step()  # after clipping, same (now clipped) gradients
    got = dict(task.named_parameters())
    for name, p in params.items():
        torch.testing.assert_close(got[name], p, rtol=1e-6, atol=1e-7, msg=name)
    if double_step:
        state = next(iter(task.trainer.optimizers[0].state.values()))
        assert int(state["step"]) == 2


def test_results_record_and_table(tmp_path):
    task = make_task()
    task.val_history = [(0, 50.0, 60.0), (1, 55.0, 40.0), (2, 52.0, 45.0)]
    per_category = torch.full((16,), float("nan"))
    per_category[[0, 11]] = torch.tensor([0.5, 0.75])
    task.last_eval = {
        "miou_instance": torch.tensor(0.52),
        "miou_class": torch.tensor(0.45),
        "miou_per_category": per_category,
        "shapes_per_category": torch.tensor([3] + [0] * 10 + [1] + [0] * 4),
        "accuracy": torch.tensor(0.8),
    }
    task.last_eval_stage = "val"
    info = {"config_name": "partseg_shapenetpart", "seed": 0, "checkpoint": None}
    path = task.write_results(tmp_path / "results.json", {**info, "wall_time_s": 1.0})
    record = json.loads(path.read_text())
    assert record["task"] == "partseg" and record["config_name"] == "partseg_shapenetpart"
    assert record["headline"] == {"metric": "last_epoch_miou_instance", "value": 52.0}
    m = record["metrics"]
    assert m["best_epoch"] == 1 and m["best_epoch_miou_instance_test_selected"] == 55.0
    # The reference's running max of the class mIoU comes from another epoch (0).
    assert m["best_miou_class_running_max"] == 60.0 and m["best_miou_class_epoch"] == 0
    assert m["last_epoch_miou_class"] == 45.0 and m["epochs_validated"] == 3
    assert m["miou_per_category"]["Airplane"] == 50.0 and m["miou_per_category"]["Mug"] == 75.0
    assert m["miou_per_category"]["Bag"] is None and m["shapes_per_category"]["Airplane"] == 3
    assert {"best_epoch_miou_instance_test_selected", "miou_per_category"} <= set(record["notes"])
    assert record["setting"]["double_step"] is False and record["setting"]["num_parts"] == 50
    table = (tmp_path / TABLE_FILE).read_text()
    assert "last validation epoch" in table and "| Mug | 1 | 75.00 |" in table
    assert "| Bag | 0 | – |" in table and "| **Instance mIoU** | 4 | 52.00 |" in table
    # A test run, once there is one, is the headline.
    task.test_metrics = {"test/miou_instance": 51.0, "test/miou_class": 44.0, "test/acc": 80.0}
    assert task.results(info)["headline"] == {"metric": "test_miou_instance", "value": 51.0}


def test_training_step_holds_no_point_by_patch_matrix():
    """Autograd keeps no (B, N, G) tensor: the 3-NN propagation never builds dense distances."""
    torch.manual_seed(5)
    b, n, g = 2, 101, 13
    task = make_task(model={"encoder": {**ENCODER, "num_group": g}}).train()
    points, category = torch.randn(b, n, 3), torch.tensor([0, 11])
    shapes: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        log_probs = task(points, category)
    torch.nn.functional.nll_loss(log_probs.transpose(1, 2), torch.zeros(b, n).long()).backward()
    dense = [s for s in shapes if n in s and g in s]
    assert shapes and not dense, dense


def _constant_baseline(dm: SyntheticShapesDataModule) -> float:
    """Instance mIoU (%) of predicting, for every shape, the part of its category that covers
    the most training points."""
    counts: dict[int, np.ndarray] = {}
    train = dm.dataset("train")
    for i in range(len(train)):
        s = train.generate(i)
        counts.setdefault(s.label, np.zeros(dm.num_parts, dtype=np.int64))
        counts[s.label] += np.bincount(s.seg, minlength=dm.num_parts)
    metric = PartSegmentationIoU(dm.category_to_parts, dm.num_parts)
    for batch in dm.val_dataloader():
        best = torch.tensor([int(counts[int(c)].argmax()) for c in batch["category"]])
        metric.update(best[:, None].expand_as(batch["seg"]), batch["seg"], batch["category"])
    return 100.0 * float(metric.compute()["miou_instance"])


@pytest.fixture
def one_thread():
    """One torch thread: small matrices gain little from two, and under `pytest -n 2` on two
    shared cores two threads per worker oversubscribe them (3x slower measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_synthetic_part_family_segments_well_above_a_constant_prediction(tmp_path, one_thread):
    start = time.perf_counter()
    pl.seed_everything(0, verbose=False)
    dm = SyntheticShapesDataModule(
        mode="auto",
        train_size=128,
        val_size=60,
        test_size=20,
        num_points=128,
        npoints=128,
        batch_size=16,
        num_workers=0,
    )
    epochs = 12
    task = make_task(
        model={
            "encoder": {**ENCODER, "trans_dim": 32, "num_group": 16},
            "propagation_dims": [128, 128],
            "head_dims": [128, 64],
        },
        optimizer={"lr": 2e-3},
        scheduler={"epochs": epochs, "warmup_epochs": 0},
        num_examples=0,
    )
    trainer(tmp_path, max_epochs=epochs, gradient_clip_val=10).fit(task, datamodule=dm)
    assert dm.mode == "partseg" and task.class_names == dm.class_names
    baseline = _constant_baseline(dm)
    _, last_inst, _ = task.val_history[-1]
    print(f"synthetic partseg: instance mIoU {last_inst:.1f} vs constant {baseline:.1f} "
          f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
    assert 20.0 < baseline < 40.0
    assert last_inst > baseline + 25.0


def test_wandb_logger_gets_point_clouds_coloured_by_part():
    wandb = pytest.importorskip("wandb")
    from types import SimpleNamespace

    from lightning.pytorch.loggers import WandbLogger

    logged: list[dict] = []

    class OfflineWandb(WandbLogger):
        """A WandbLogger whose run only records what it is given (no network, no files)."""

        def __init__(self) -> None:  # no wandb.init
            pass

        @property
        def experiment(self):
            return SimpleNamespace(log=logged.append)

    task = make_task()
    rng = np.random.default_rng(0)
    task.examples = [
        SegmentationExample(rng.normal(size=(20, 3)), np.full(20, 37), np.full(20, 36), 11)
    ]
    task._trainer = SimpleNamespace(loggers=[OfflineWandb()])
    task._log_wandb_examples("test")
    (entry,) = logged
    clouds = entry["test/segmentations"]
    assert len(clouds) == 2 and all(isinstance(c, wandb.Object3D) for c in clouds)
