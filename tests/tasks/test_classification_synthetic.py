"""A short ReCon pretraining, then the fine-tuning recipe from it, on SyntheticShapes (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recon_lightning.cli.train import run

CONF = Path(__file__).resolve().parents[2] / "conf"
ENCODER = [
    "encoder.trans_dim=32",
    "encoder.depth=2",
    "encoder.num_heads=2",
    "encoder.num_group=16",
    "encoder.group_size=16",
]
DATA = [
    "data.num_classes=4",
    "data.num_points=160",
    "data.npoints=128",
    "data.num_workers=0",
    "data.total_bs=16",
]
COMMON = ["trainer=cpu", "logger=none", "++trainer.enable_progress_bar=false"]
COMMON += ["~callbacks.progress_bar", "~callbacks.lr_monitor"]


def compose_cfg(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


@pytest.mark.slow
def test_finetune_from_short_pretraining_is_clearly_above_chance(tmp_path):
    pre = tmp_path / "pretrain"
    run(
        compose_cfg(
            [
                "data=synthetic",
                "teachers=random",
                f"paths.output_dir={pre}",
                "trainer.max_epochs=2",
                "++trainer.limit_val_batches=0",
                "task.scheduler.epochs=2",
                "task.scheduler.warmup_epochs=0",
                "data.train_size=64",
                "encoder.decoder_depth=1",
                "encoder.decoder_num_heads=2",
                *ENCODER,
                *DATA,
                *COMMON,
            ]
        )
    )
    ckpt = pre / "checkpoints" / "last.ckpt"
    ft = tmp_path / "finetune"
    run(
        compose_cfg(
            [
                "experiment=finetune_scan_objbg",
                "data=synthetic",
                f"ckpt_path={ckpt}",
                f"paths.output_dir={ft}",
                "trainer.max_epochs=8",
                "task.scheduler.epochs=8",
                "task.scheduler.warmup_epochs=1",
                "task.optimizer.lr=1e-3",
                "task.model.cls_dim=4",
                "data.train_size=256",
                "data.val_size=48",
                "data.test_size=64",
                *ENCODER,
                *DATA,
                *COMMON,
            ]
        )
    )
    record = json.loads((ft / "results.json").read_text())
    # The encoder came from the pretraining; only the new head started random.
    assert record["checkpoint"] == str(ckpt)
    assert all(k.startswith("head.") for k in record["setting"]["random_init_entries"])
    m = record["metrics"]
    chance = 100.0 / 4
    assert m["last_epoch_acc"] > 2 * chance, m
    assert m["test_acc"] > 2 * chance, m
    assert m["vote_acc"] > 2 * chance, m
