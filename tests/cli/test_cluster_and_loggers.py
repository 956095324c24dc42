"""How runs are really launched: submitit multiruns, resume=auto in a stable folder, wandb."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from hydra_helpers import CONF, TINY_MODEL, TINY_PRETRAIN, compose_cfg, run_cli
from recon_lightning.cli import resolvers
from recon_lightning.cli.train import run

TINY = [
    *TINY_MODEL,
    "data.train_size=8",
    "data.val_size=4",
    "data.test_size=4",
    "data.total_bs=4",
]
PRETRAIN = [*TINY_PRETRAIN, *TINY[len(TINY_MODEL) :]]
FINETUNE = [
    *TINY,
    "experiment=finetune_scan_objbg",
    "data=synthetic_cls",
    "data.num_classes=4",
    "data.num_points=80",
    "data.npoints=64",
    "ckpt_path=null",
    "trainer=cpu",
    "task.vote.times=0",
]


def _compose(overrides: list[str]):
    return compose_cfg(overrides)


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return run_cli("recon-train", args, cwd, **env)


def test_run_id_follows_the_slurm_job(monkeypatch):
    for var in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(var, raising=False)
    assert not resolvers.run_id().startswith("slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    assert resolvers.run_id() == "slurm-4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert resolvers.run_id() == "slurm-77_3"
    assert resolvers.short_hash("/runs/a") == resolvers.short_hash("/runs/a")
    assert resolvers.short_hash("/runs/a") != resolvers.short_hash("/runs/b")


def test_slurm_launcher_config_takes_the_cluster_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECON_SLURM_PARTITION", "gpu-long")
    monkeypatch.setenv("RECON_SLURM_GPUS_PER_NODE", "8")
    monkeypatch.setenv("RECON_SLURM_ACCOUNT", "lab")
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.qos=high"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.partition, launcher.account, launcher.qos) == ("gpu-long", "lab", "high")
    assert launcher.gpus_per_node == 8 and launcher.tasks_per_node == 8
    assert launcher.max_num_timeout > 0  # requeued on preemption


def test_resume_auto_continues_from_the_run_folders_last_checkpoint(tmp_path, caplog):
    out = tmp_path / "run"
    first = _compose([*PRETRAIN, "trainer.max_epochs=1", f"paths.output_dir={out}"])
    run(first)
    assert (out / "checkpoints" / "last.ckpt").is_file()
    second = _compose([*PRETRAIN, "trainer.max_epochs=2", f"paths.output_dir={out}"])
    with caplog.at_level(logging.INFO, logger="recon_lightning"):
        run(second)
    assert any("resume=auto: continuing from" in r.getMessage() for r in caplog.records)
    import csv

    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    epochs = [int(r["epoch"]) for r in rows if r.get("val/loss")]
    assert epochs == [0, 1]  # epoch 0 kept from the first run, only epoch 1 trained again
    missing = _compose([*PRETRAIN, f"paths.output_dir={out}", f"resume={tmp_path / 'nope.ckpt'}"])
    with pytest.raises(FileNotFoundError, match="nope.ckpt"):
        run(missing)


def test_submitit_local_multirun_writes_one_result_per_job(tmp_path):
    result = _cli(
        [
            "-m",
            "hydra/launcher=local",
            *FINETUNE,
            "trainer.max_epochs=1",
            "callbacks=none",
            "logger=csv",
            "seed=0,1",
            f"paths.log_dir={tmp_path / 'outputs'}",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    records = sorted((tmp_path / "outputs").rglob("results.json"))
    assert len(records) == 2, result.stdout + result.stderr
    seeds = sorted(json.loads(p.read_text())["seed"] for p in records)
    assert seeds == [0, 1]
    assert records[0].parent.parent == records[1].parent.parent  # one sweep folder


def read_wandb_log(path: Path) -> list:
    """The protobuf records of an offline ``run-*.wandb`` file (a LevelDB-style log).

    wandb keeps no reader in Python any more; the format: a 7-byte file header, then 32 KiB
    blocks of records, each a 7-byte header (crc32, little-endian length, type: 1 full,
    2 first, 3 middle, 4 last) and its payload; a block tail shorter than a header is padding.
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        if block - pos % block < 7:
            pos += block - pos % block
            continue
        length = int.from_bytes(data[pos + 4 : pos + 6], "little")
        kind = data[pos + 6]
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:
            continue
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def test_wandb_offline_run_holds_config_metrics_and_point_clouds(tmp_path):
    out = tmp_path / "run"
    result = _cli(
        [
            *PRETRAIN,
            "trainer.max_epochs=2",
            "logger=wandb",
            "callbacks.reconstructions.every_n_epochs=1",
            "callbacks.reconstructions.num_shapes=2",
            "trainer.log_every_n_steps=1",
            f"paths.output_dir={out}",
        ],
        tmp_path,
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        WANDB_DISABLE_GIT="true",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = (out / "wandb").glob("offline-run-*")
    records = read_wandb_log(next(run_dir.glob("run-*.wandb")))
    config = {
        item.key: json.loads(item.value_json)
        for r in records
        if r.WhichOneof("record_type") == "config"
        for item in r.config.update
    }
    assert config["config"]["encoder"]["trans_dim"] == 32  # the whole resolved Hydra config
    assert config["config"]["trainer"]["max_epochs"] == 2
    logged = {
        item.key or "/".join(item.nested_key)
        for r in records
        if r.WhichOneof("record_type") == "history"
        for item in r.history.item
    }
    assert {"train/loss", "train/grad_norm", "lr-AdamW/pg1"} <= logged
    clouds = list((run_dir / "files" / "media" / "object3D").rglob("*.pts.json"))
    assert len(clouds) == 4  # 2 shapes after each of the 2 epochs, none twice
    cloud = json.loads(clouds[0].read_text())
    assert len(cloud[0]) == 6  # xyz + rgb
    assert list((out / "reconstructions").glob("epoch_*.png"))  # the same PNG in the run folder
