"""recon-train / recon-eval / recon-convert on the part-segmentation recipe, shrunk to CPU size.

The recipe (``experiment=partseg_shapenetpart``) runs on a tiny ShapeNetPart folder in the
reference's layout, on the synthetic part family (``data=synthetic``), and recon-eval tests a
converted official ``best_model.pth``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recon_lightning.checkpoints import to_official
from recon_lightning.cli.convert import convert
from recon_lightning.cli.eval import run_eval
from recon_lightning.cli.train import run
from recon_lightning.data.shapenetpart import SHAPENETPART_CATEGORIES
from recon_lightning.models import ReConPartSegmentation, build_pretrainer

CONF = Path(__file__).resolve().parents[2] / "conf"
ENCODER = {"trans_dim": 32, "depth": 3, "num_heads": 2, "num_group": 16, "group_size": 8}
HEAD = {"propagation_dims": [32, 32], "head_dims": [32, 16]}
TINY = [
    *(f"encoder.{k}={v}" for k, v in ENCODER.items()),
    *(f"++task.model.{k}=[{','.join(map(str, v))}]" for k, v in HEAD.items()),
    "data.total_bs=4",
    "++data.eval_batch_size=4",
    "data.num_workers=0",
    "trainer=cpu",
    "logger=none",
    "++trainer.enable_progress_bar=false",
]
CATEGORIES = [("Airplane", (0, 1, 2, 3)), ("Mug", (36, 37))]


def write_shapenetpart(data_dir: Path, per_split: tuple[int, int, int] = (3, 1, 2)) -> Path:
    """ShapeNetPart in the reference layout under ``data_dir`` (2 categories, ~60-point shapes)."""
    root = data_dir / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    (root / "train_test_split").mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text(
        "".join(f"{name}\t{synset}\n" for name, synset in SHAPENETPART_CATEGORIES.items())
    )
    rng = np.random.default_rng(3)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    k = 0
    for name, parts in CATEGORIES:
        synset = SHAPENETPART_CATEGORIES[name]
        (root / synset).mkdir()
        for split, count in zip(("train", "val", "test"), per_split, strict=True):
            for _ in range(count):
                n = 60 + 5 * k
                labels = np.array(parts)[np.arange(n) % len(parts)]
                rows = np.concatenate(
                    [rng.normal(size=(n, 3)) * 2 + 1, rng.normal(size=(n, 3)), labels[:, None]], 1
                )
                np.savetxt(root / synset / f"{k:04d}.txt", rows, fmt="%.6f")
                lists[split].append(f"shape_data/{synset}/{k:04d}")
                k += 1
    for split, entries in lists.items():
        path = root / "train_test_split" / f"shuffled_{split}_file_list.json"
        path.write_text(json.dumps(entries))
    return data_dir


def compose_cfg(root: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=root, overrides=overrides)


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_shapenetpart(tmp_path_factory.mktemp("data"))


def test_recipe_keeps_the_reference_settings(tmp_path):
    cfg = compose_cfg("train", ["experiment=partseg_shapenetpart", f"paths.output_dir={tmp_path}"])
    assert cfg.data._target_.endswith("ShapeNetPartDataModule") and cfg.data.total_bs == 16
    assert cfg.encoder.trans_dim == 384 and cfg.encoder.depth == 12
    assert (cfg.encoder.num_group, cfg.encoder.group_size, cfg.encoder.drop_path_rate) == (
        128,
        32,
        0.1,
    )
    assert cfg.task.optimizer.lr == 1e-4 and cfg.task.optimizer.weight_decay == 0.05
    assert cfg.task.scheduler.epochs is None and cfg.task.scheduler.warmup_epochs == 10
    assert cfg.trainer.max_epochs == 301 and cfg.trainer.gradient_clip_val == 10
    assert cfg.task.double_step is False
    assert cfg.callbacks.model_checkpoint.monitor == "val/miou_instance"


def test_recon_train_fast_dev_run_on_the_real_layout(data_dir, tmp_path):
    torch.manual_seed(0)
    pre = build_pretrainer(**ENCODER)
    ckpt = tmp_path / "pre.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in pre.state_dict().items()}}, ckpt)
    out = tmp_path / "out"
    overrides = [
        "experiment=partseg_shapenetpart",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={out}",
        f"ckpt_path={ckpt}",
        "data.npoints=64",
        "task.double_step=true",
        "++trainer.fast_dev_run=true",
        "callbacks=none",
        *TINY,
    ]
    metrics = run(compose_cfg("train", overrides))
    assert {"train/loss", "val/miou_instance", "val/miou_class"} <= set(metrics)
    record = results(out)
    assert record["task"] == "partseg" and record["config_name"] == "partseg_shapenetpart"
    assert record["headline"]["metric"] == "last_epoch_miou_instance"
    assert record["setting"]["dataset"] == "shapenetpart" and record["setting"]["double_step"]
    # The pretraining checkpoint filled the encoder; the segmentation head started new.
    missing = record["setting"]["random_init_entries"]
    assert missing and all(k.startswith(("label_embed.", "propagation.", "head.")) for k in missing)
    assert set(record["metrics"]["miou_per_category"]) >= {"Airplane", "Mug"}
    assert (out / "segmentation_table.md").is_file() and (out / "partseg_examples.png").is_file()


def test_recon_train_fast_dev_run_on_synthetic_parts(tmp_path):
    out = tmp_path / "out"
    overrides = [
        "experiment=partseg_shapenetpart",
        "data=synthetic",
        "data.num_points=96",
        "data.npoints=64",
        "data.train_size=8",
        "data.val_size=4",
        "data.test_size=4",
        f"paths.output_dir={out}",
        "++trainer.fast_dev_run=true",
        "callbacks=none",
        *TINY,
    ]
    run(compose_cfg("train", overrides))
    record = results(out)
    assert record["setting"]["dataset"] == "synthetic_shapes"
    assert set(record["metrics"]["miou_per_category"]) == {
        "table",
        "mug",
        "lamp",
        "rocket",
        "chair",
    }


def _official_best_model(path: Path) -> Path:
    """A tiny segmentation model saved as the reference's ``best_model.pth``."""
    torch.manual_seed(1)
    model = ReConPartSegmentation(**ENCODER, **HEAD)
    state = {to_official(k, "partseg"): v for k, v in model.state_dict().items()}
    torch.save({"epoch": 3, "model_state_dict": state}, path)
    return path


def test_recon_eval_of_a_converted_official_checkpoint(data_dir, tmp_path):
    src = _official_best_model(tmp_path / "best_model.pth")
    dst = convert(src, tmp_path / "partseg.ckpt", num_heads=2, num_group=16, group_size=8)
    common = ["experiment=partseg_shapenetpart", f"paths.data_dir={data_dir}", *TINY]
    for ckpt, name in ((dst, "converted"), (src, "official")):
        out = tmp_path / name
        cfg = compose_cfg("eval", [*common, f"ckpt_path={ckpt}", f"paths.output_dir={out}"])
        metrics = run_eval(cfg)
        assert set(metrics) == {"test/miou_instance", "test/miou_class", "test/acc"}
        record = results(out)
        assert record["headline"] == {
            "metric": "test_miou_instance",
            "value": metrics["test/miou_instance"],
        }
        assert record["setting"]["random_init_entries"] == []
        assert record["metrics"]["shapes_per_category"]["Mug"] == 2
        assert "test run" in (out / "segmentation_table.md").read_text()
        assert (out / "partseg_examples.png").is_file()
    # The official file and its conversion are the same weights: the same evaluation.
    assert results(tmp_path / "converted")["metrics"] == results(tmp_path / "official")["metrics"]


def test_recon_eval_refuses_a_pretraining_checkpoint(data_dir, tmp_path):
    pre = build_pretrainer(**ENCODER)
    ckpt = tmp_path / "pre.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in pre.state_dict().items()}}, ckpt)
    overrides = [
        "experiment=partseg_shapenetpart",
        f"paths.data_dir={data_dir}",
        f"ckpt_path={ckpt}",
        f"paths.output_dir={tmp_path}",
        *TINY,
    ]
    with pytest.raises(ValueError, match="not a fine-tuned segmentation model"):
        run_eval(compose_cfg("eval", overrides))
