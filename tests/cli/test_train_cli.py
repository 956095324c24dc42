"""`recon-train` and `recon-data` end to end on tiny datasets in the real on-disk layouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from recon_lightning.cli import data as data_cli
from recon_lightning.cli.train import run

CONF = Path(__file__).resolve().parents[2] / "conf"
# A CPU-sized model; the recipe's own sizes are what `experiment=` sets, shrunk here.
TINY = [
    "encoder.trans_dim=32",
    "encoder.depth=2",
    "encoder.num_heads=2",
    "encoder.num_group=16",
    "encoder.group_size=16",
    "encoder.decoder_depth=1",
    "encoder.decoder_num_heads=2",
    "data.total_bs=4",
    "data.num_workers=0",
    "logger=none",
    "callbacks=none",
]
SYNSETS = {"02691156": "airplane", "03001627": "chair"}


def write_shapenet55(root: Path, per_split: int = 4) -> Path:
    """ShapeNet55-34 as the reference lays it out: 8192x3 .npy, PNGs, lists and the json."""
    base = root / "ShapeNet55-34"
    for sub in ("shapenet_pc", "shapenet_img", "ShapeNet-55"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        lines = []
        for k in range(per_split):
            synset = list(SYNSETS)[k % 2]
            stem = f"{synset}-{split}{k:04d}"
            np.save(
                base / "shapenet_pc" / f"{stem}.npy", rng.normal(size=(8192, 3)).astype(np.float32)
            )
            img = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            Image.fromarray(img).save(base / "shapenet_img" / f"{stem}.png")
            lines.append(f"{stem}.npy")
        (base / "ShapeNet-55" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    table = {
        "catalogue": {str(i): int(s) for i, s in enumerate(SYNSETS)},
        "describe": {str(i): d for i, d in enumerate(SYNSETS.values())},
    }
    (base / "shapenet55.json").write_text(json.dumps(table))
    return root


def _compose(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.fixture
def no_weight_caches(tmp_path, monkeypatch):
    """Point every teacher cache at empty folders so nothing from this machine is found."""
    empty = tmp_path / "empty_cache"
    for var in ("HF_HUB_CACHE", "HF_HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(empty / var.lower()))
    monkeypatch.setenv("HOME", str(empty / "home"))


def test_pretrain_base_recipe_fast_dev_run_on_shapenet_layout(tmp_path):
    data_dir = write_shapenet55(tmp_path / "datasets")
    cfg = _compose(
        [
            "experiment=pretrain_base",
            f"paths.data_dir={data_dir}",
            f"paths.output_dir={tmp_path / 'out'}",
            "teachers=random",
            "++trainer.fast_dev_run=true",
            *TINY,
        ]
    )
    assert cfg.trainer.max_epochs == 301 and cfg.data.whole
    metrics = run(cfg)
    assert np.isfinite(metrics["train/loss"])
    assert {"train/chamfer", "train/img", "train/text"} <= set(metrics)


def test_real_teachers_without_weights_say_how_to_get_them(tmp_path, no_weight_caches):
    from recon_lightning.cli.train import build
    from recon_lightning.teachers.weight_files import WeightsNotFoundError

    data_dir = write_shapenet55(tmp_path / "datasets")
    cfg = _compose(
        ["experiment=pretrain_base", f"paths.data_dir={data_dir}", f"paths.output_dir={tmp_path}"]
    )
    with pytest.raises(WeightsNotFoundError) as err:
        build(cfg)
    message = str(err.value)
    assert "google/vit-base-patch16-224-in21k" in message
    assert "teachers.image.checkpoint" in message


def test_cache_teachers_then_train_from_cache(tmp_path):
    cache = tmp_path / "cache"
    data = [
        "data=synthetic",
        "data.train_size=8",
        "data.val_size=4",
        "data.test_size=4",
        "data.num_workers=0",
        "teachers=random",
    ]
    data_cli.main(
        [
            "cache-teachers",
            "--views",
            "2",
            "--out",
            str(cache),
            "--num-workers",
            "0",
            "--batch-size",
            "4",
            "--device",
            "cpu",
            *data,
        ]
    )
    meta = json.loads(next(cache.glob("*.json")).read_text())
    assert meta
    cfg = _compose(
        [
            *data,
            "teachers=cached",
            f"teachers.cache_dir={cache}",
            f"paths.output_dir={tmp_path / 'out'}",
            "++trainer.fast_dev_run=true",
            "trainer.accelerator=cpu",
            *[o for o in TINY if not o.startswith("data.num_workers")],
        ]
    )
    metrics = run(cfg)
    assert np.isfinite(metrics["train/img"]) and np.isfinite(metrics["train/text"])


def test_console_entry_point_runs(tmp_path):
    """The module behind `recon-train` runs as a process with command-line overrides."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [
        sys.executable,
        "-m",
        "recon_lightning.cli.train",
        "experiment=demo",
        "data.train_size=8",
        f"hydra.run.dir={tmp_path}",
        "++trainer.fast_dev_run=true",
        *TINY,
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train/loss" in proc.stdout + proc.stderr


@pytest.mark.parametrize("experiment", ["finetune_scan_objbg", "fewshot"])
def test_downstream_recipe_runs_on_synthetic_shapes(experiment, tmp_path):
    """`data=synthetic` serves classification recipes too: the task asks for its item format."""
    overrides = [
        f"experiment={experiment}",
        "data=synthetic",
        "data.train_size=8",
        "data.val_size=4",
        "data.test_size=4",
        "task.model.cls_dim=12",
        f"paths.output_dir={tmp_path}",
        "++trainer.fast_dev_run=true",
        "task.vote.times=2",
        *[o for o in TINY if "decoder" not in o],
    ]
    if experiment == "fewshot":
        overrides += ["way=5", "shot=10", "fold=0"]
    metrics = run(_compose(overrides))
    assert np.isfinite(metrics["train/loss"])
