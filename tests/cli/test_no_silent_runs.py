"""Runs that would do nothing fail loudly, and the console says each thing once.

Issue: a 40-shape ShapeNet-55 folder with the global batch of 128 trained zero steps and exited
0; the SVM probe handed scikit-learn zero samples; every Lightning line was printed twice.
"""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest

from hydra_helpers import TINY_PRETRAIN, compose_cfg, run_cli
from recon_lightning.cli.train import run
from recon_lightning.data.base import available_cpus, require_full_batch, resolve_num_workers
from recon_lightning.data.synthetic import SyntheticShapesDataModule

TINY = [*TINY_PRETRAIN, "callbacks=none", "logger=none"]


def _compose(overrides: list[str], name: str = "train"):
    return compose_cfg(overrides, name)


def test_require_full_batch_names_split_counts_devices_and_the_way_out():
    require_full_batch("train", 32, 16, 2)  # exactly one batch per device: fine
    with pytest.raises(ValueError) as err:
        require_full_batch("train", 40, 128, 1)
    msg = str(err.value)
    for part in ("'train'", "40 samples", "128", "1 device", "data.total_bs=40"):
        assert part in msg
    with pytest.raises(ValueError, match="2 device"):
        require_full_batch("train", 40, 32, 2)


def test_datamodule_refuses_a_split_smaller_than_one_batch():
    dm = SyntheticShapesDataModule(
        mode="pretrain", train_size=8, val_size=4, test_size=4, batch_size=16, num_workers=0
    )
    with pytest.raises(ValueError, match="8 samples"):
        dm.setup("fit")


def test_recon_train_refuses_before_training(tmp_path):
    cfg = _compose([*TINY, "data.train_size=8", "data.total_bs=16", f"paths.output_dir={tmp_path}"])
    with pytest.raises(ValueError, match="data.total_bs="):
        run(cfg)
    assert not (tmp_path / "checkpoints").exists()


def test_svm_probe_refuses_too_few_training_shapes(tmp_path):
    from recon_lightning.cli.eval import run_eval

    cfg = _compose(
        [
            "experiment=svm_modelnet40",
            "data=synthetic_cls",
            "data.train_size=80",
            "data.test_size=8",
            "data.val_size=8",
            "data.num_points=80",
            "data.npoints=64",
            "data.total_bs=128",
            *[o for o in TINY if o.startswith("encoder")],
            "logger=none",
            f"paths.output_dir={tmp_path}",
        ],
        name="eval",
    )
    assert cfg.data.total_bs == 128
    with pytest.raises(ValueError, match="80 samples"):
        run_eval(cfg)


def test_num_workers_auto_follows_the_cpus():
    assert resolve_num_workers("auto") == min(8, available_cpus())
    assert resolve_num_workers(3) == 3
    with pytest.raises(ValueError, match="data.num_workers"):
        resolve_num_workers("many")


def test_fit_logs_one_summary_line(tmp_path, caplog):
    cfg = _compose(
        [
            *TINY,
            "data.train_size=8",
            "data.val_size=4",
            "data.test_size=6",
            "data.total_bs=4",
            "trainer.max_epochs=1",
            f"paths.output_dir={tmp_path}",
        ]
    )
    with caplog.at_level(logging.INFO, logger="recon_lightning"):
        run(cfg)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("fit:")]
    assert len(lines) == 1
    line = lines[0]
    assert "8 train / 4 val / 6 test samples, 2 batches per epoch" in line
    assert "4 per device x 1 device(s), precision 32-true" in line and str(tmp_path) in line


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return run_cli("recon-train", args, tmp_path, **env)


def test_console_prints_each_line_once_with_progress_lines_in_a_pipe(tmp_path):
    result = _cli(
        [
            *[o for o in TINY if not o.startswith("callbacks")],
            "data.train_size=8",
            "data.val_size=4",
            "data.test_size=4",
            "data.total_bs=4",
            "trainer.max_epochs=2",
            "trainer.log_every_n_steps=50",
            f"paths.output_dir={tmp_path / 'out'}",
        ],
        tmp_path,
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert out.count("GPU available") == 1
    assert out.count("fit: 8 train") == 1
    assert "epoch 1/2 done" in out and "epoch 2/2 done" in out
    for noise in ("logging interval", "in eval mode at the start", "💡", "Warning", "warn("):
        assert noise not in out, noise


def test_user_error_prints_the_message_without_a_traceback(tmp_path):
    args = ["experiment=pretrain_base", f"paths.data_dir={tmp_path / 'nothing'}", "teachers=random"]
    short = _cli(args, tmp_path)
    assert short.returncode == 1
    out = short.stdout + short.stderr
    assert "DatasetNotFoundError" in out and str(tmp_path / "nothing") in out
    assert "Traceback" not in out and "HYDRA_FULL_ERROR=1" in out
    full = _cli(args, tmp_path, HYDRA_FULL_ERROR="1")
    assert full.returncode == 1 and "Traceback" in full.stderr
