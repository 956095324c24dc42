"""task.compile=true and trainer.precision=bf16-mixed train, for pretraining and fine-tuning."""

from __future__ import annotations

import math

import pytest

from hydra_helpers import TINY_MODEL, TINY_PRETRAIN, compose_cfg
from recon_lightning.cli.train import run

DATA = ["data.train_size=8", "data.val_size=4", "data.test_size=4", "data.total_bs=4"]
COMMON = [*DATA, "trainer=cpu", "trainer.max_epochs=1", "logger=none", "callbacks=none"]
FINETUNE = [
    *TINY_MODEL,
    "experiment=finetune_scan_objbg",
    "data=synthetic_cls",
    "data.num_classes=4",
    "data.num_points=80",
    "data.npoints=64",
    "ckpt_path=null",
    "task.vote.times=0",
    "test=false",
]


@pytest.mark.parametrize("recipe", ["pretrain", "finetune"])
@pytest.mark.parametrize(
    "options",
    [["trainer.precision=bf16-mixed"], ["task.compile=true"]],
    ids=["bf16", "compile"],
)
def test_compiled_and_bf16_training_run(recipe, options, tmp_path):
    overrides = TINY_PRETRAIN if recipe == "pretrain" else FINETUNE
    cfg = compose_cfg([*overrides, *COMMON, *options, f"paths.output_dir={tmp_path}"])
    metrics = run(cfg)
    assert math.isfinite(metrics["train/loss"])


def test_compile_wraps_only_the_blocks():
    from recon_lightning.tasks.pretrain import PretrainTask
    from recon_lightning.teachers import build_teachers

    model = {
        "encoder": {
            "trans_dim": 32,
            "depth": 2,
            "num_heads": 2,
            "num_group": 8,
            "group_size": 8,
            "decoder_depth": 1,
            "decoder_num_heads": 2,
        }
    }
    task = PretrainTask(model, teachers=build_teachers(mode="random", tiny=True), compile=True)
    plain = PretrainTask(model, teachers=build_teachers(mode="random", tiny=True))
    assert list(task.state_dict()) == list(plain.state_dict())  # checkpoints load either way
    compiled = [n for n, m in task.model.named_modules() if getattr(m, "_compiled_call_impl", None)]
    assert compiled == ["encoder.blocks.0", "encoder.blocks.1", "decoder.blocks.0"]
