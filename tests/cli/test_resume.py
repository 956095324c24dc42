"""Faults: a ``recon-train`` killed mid-epoch resumes to exactly the uninterrupted run; SIGTERM
saves ``last.ckpt``, exits with status 143 and resumes exactly, on one process and on two (DDP);
checkpoints are written atomically.

The runs are tiny ReCon pretrainings on SyntheticShapes with every source of randomness on
(random masks, drop-path, y-rotations, random point subsets per item) and
``trainer.deterministic=true``; the teachers are stand-ins (fixed functions of the label, loaded
by the subprocess as ``test_resume.LabelTeachers``) so that a step takes milliseconds. The
progress bar prints a line per training step, which tells the test where to stop a run.

Tolerance: the interrupted and uninterrupted runs execute the same operations in the same order
in processes configured alike, so losses and weights are compared within 1e-6 (observed: equal
to the bit).
"""

from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from recon_lightning.callbacks.checkpointing import AtomicCheckpointIO

HERE = Path(__file__).resolve().parent
TOL = 1e-6
EPOCHS = 5
STEPS = 8  # per epoch: 32 training clouds, global batch 4


class LabelTeachers(nn.Module):
    """Stand-in teachers: targets are fixed functions of the label (no draws, no weights)."""

    img_dim = 16
    text_dim = 16

    def __init__(self, **_: Any) -> None:
        super().__init__()

    def targets(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        label = batch["label"].float().unsqueeze(1)
        k = torch.arange(1, 17, device=label.device, dtype=torch.float32)
        return torch.sin(label * k / 7), torch.cos(label * k / 5)


CONFIG = [
    "encoder.trans_dim=32",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.num_group=8",
    "encoder.group_size=8",
    "encoder.decoder_depth=1",
    "encoder.decoder_num_heads=2",
    "data.num_workers=0",
    "data.train_size=32",
    "data.val_size=4",
    "data.test_size=4",
    "data.total_bs=4",
    "data.npoints=128",
    "data.num_points=256",
    "data.image_size=32",
    "teachers=random",
    "teachers._target_=test_resume.LabelTeachers",
    f"trainer.max_epochs={EPOCHS}",
    "trainer.deterministic=true",
    "trainer.log_every_n_steps=1",
    "logger=csv",
    "callbacks.model_checkpoint.every_n_epochs=1",
    "callbacks.progress_bar.interval_s=1e-6",  # a line per step
    "~callbacks.reconstructions",
]
STEP_LINE = re.compile(r"epoch (\d+): step (\d+)/(\d+)")


def launch(
    run_dir: Path,
    *extra: str,
    trainer: str = "cpu",
    stop_at: tuple[int, int] | None = None,
    sig: int = 0,
    timeout: float = 600,
) -> tuple[int, str]:
    """Run ``recon-train`` into ``run_dir``; with ``stop_at=(epoch, step)`` send ``sig`` to it
    (rank 0) once the progress line of that step appears. Returns ``(exit status, output)``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "PYTHONWARNINGS": "ignore",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    cmd = [sys.executable, "-m", "recon_lightning.cli.train", *CONFIG, f"trainer={trainer}"]
    cmd += [*extra, f"hydra.run.dir={run_dir}"]
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # a hung run is killed with every process it started
    )
    watchdog = threading.Timer(timeout, os.killpg, (proc.pid, signal.SIGKILL))
    watchdog.start()
    lines = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            match = STEP_LINE.search(line)
            if stop_at and match and (int(match[1]), int(match[2])) == stop_at:
                proc.send_signal(sig)
                stop_at = None
        status = proc.wait()
    finally:
        watchdog.cancel()
    return status, "".join(lines)


def metrics(run_dir: Path) -> dict[tuple[str, int], float]:
    """``{(key, step or epoch): value}`` from metrics.csv; the last row wins (resumed runs)."""
    values: dict[tuple[str, int], float] = {}
    for row in csv.DictReader((run_dir / "csv" / "metrics.csv").open()):
        for key, value in row.items():
            if not value or key in ("epoch", "step"):
                continue
            per_epoch = key.endswith("_epoch") or key.startswith("val/")
            values[(key, int(row["epoch"] if per_epoch else row["step"]))] = float(value)
    return values


def assert_same(actual: Mapping, expected: Mapping, keys: list) -> None:
    assert keys, "nothing to compare"
    for key in keys:
        assert key in actual, f"{key} missing from the resumed run"
        assert actual[key] == pytest.approx(expected[key], rel=TOL, abs=TOL), key


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    status, out = launch(run_dir, "resume=null")
    assert status == 0, out[-3000:]
    return run_dir


def test_sigkill_mid_epoch_then_resume_matches_the_uninterrupted_run(uninterrupted, tmp_path):
    run_dir = tmp_path / "killed"
    status, out = launch(run_dir, "resume=null", stop_at=(2, 3), sig=signal.SIGKILL)
    assert status == -signal.SIGKILL, out[-3000:]
    ckpts = run_dir / "checkpoints"
    # Epochs 0 and 1 completed before the kill, in epoch 2: both are in last.ckpt.
    assert sorted(p.name for p in ckpts.glob("epoch_*.ckpt")) == [
        "epoch_000.ckpt",
        "epoch_001.ckpt",
    ]
    last = torch.load(ckpts / "last.ckpt", map_location="cpu", weights_only=False)
    assert (last["epoch"], last["global_step"]) == (1, 2 * STEPS)
    assert not list(ckpts.glob("*.tmp"))  # no half-written file left behind

    status, out = launch(run_dir, f"resume={ckpts / 'last.ckpt'}")
    assert status == 0, out[-3000:]
    resumed, reference = metrics(run_dir), metrics(uninterrupted)
    steps = [("train/loss", s) for s in range(2 * STEPS, EPOCHS * STEPS)]
    epochs = [(k, e) for k in ("train/loss_epoch", "val/loss") for e in range(2, EPOCHS)]
    assert_same(resumed, reference, steps + epochs)
    # Training picked up at the first step of epoch 2: no completed epoch is lost or redone.
    trained = [(int(e), int(s)) for e, s, _ in STEP_LINE.findall(out)]
    assert trained[0] == (2, 1) and len(trained) == (EPOCHS - 2) * STEPS
    final, expected = weights(ckpts / "last.ckpt"), weights(uninterrupted / "checkpoints/last.ckpt")
    for name, value in expected.items():
        torch.testing.assert_close(final[name], value, rtol=TOL, atol=TOL, msg=name)


def test_sigterm_mid_epoch_saves_last_ckpt_exits_143_and_resumes_exactly(uninterrupted, tmp_path):
    run_dir = tmp_path / "terminated"
    status, out = launch(run_dir, "resume=null", stop_at=(1, 3), sig=signal.SIGTERM)
    assert status == 143, out[-3000:]
    assert "SIGTERM: stopped in epoch 1 after" in out and "stopped by SIGTERM" in out
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    done = last["global_step"] - STEPS  # batches of epoch 1 done: the run stops after a batch
    assert last["epoch"] == 1 and 3 <= done < STEPS, last["global_step"]
    (loader,) = last["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader == {"epoch": 1, "batches": done, "epoch_done": 0}

    status, out = launch(run_dir, "resume=auto")  # the run folder's own last.ckpt
    assert status == 0, out[-3000:]
    assert "resume=auto: continuing from" in out
    trained = [(int(e), int(s)) for e, s, _ in STEP_LINE.findall(out)]
    assert trained[0] == (1, done + 1) and len(trained) == EPOCHS * STEPS - STEPS - done
    resumed, reference = metrics(run_dir), metrics(uninterrupted)
    steps = [("train/loss", s) for s in range(STEPS + done, EPOCHS * STEPS)]
    # Epoch 1's mean covers only the batches after the restart; later epochs are whole.
    epochs = [(k, e) for k in ("train/loss_epoch", "val/loss") for e in range(2, EPOCHS)]
    epochs.append(("val/loss", 1))
    assert_same(resumed, reference, steps + epochs)
    final = weights(run_dir / "checkpoints" / "last.ckpt")
    for name, value in weights(uninterrupted / "checkpoints" / "last.ckpt").items():
        torch.testing.assert_close(final[name], value, rtol=TOL, atol=TOL, msg=name)


def test_sigterm_on_two_processes_stops_both_and_resumes_exactly(tmp_path):
    """Lightning's handler broadcasts from inside the signal handler and can hang two processes;
    here rank 0 alone is signalled (``kill <pid>``), both stop at the same batch, save and exit
    143, and the resumed 2-process run equals the uninterrupted one: per-rank streams and data
    shards are restored."""
    reference, run_dir = tmp_path / "reference", tmp_path / "ddp"
    status, out = launch(reference, "resume=null", trainer="ddp_cpu", timeout=300)
    assert status == 0, out[-3000:]
    status, out = launch(
        run_dir, "resume=null", trainer="ddp_cpu", stop_at=(1, 3), sig=signal.SIGTERM, timeout=300
    )
    assert status == 143, out[-3000:]
    assert out.count("stopped by SIGTERM; exit status 143") == 2, out[-3000:]  # both ranks
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    stopped = last["global_step"]
    assert last["epoch"] == 1 and STEPS + 3 <= stopped < 2 * STEPS

    status, out = launch(run_dir, "resume=auto", trainer="ddp_cpu", timeout=300)
    assert status == 0, out[-3000:]
    steps = [("train/loss", s) for s in range(stopped, EPOCHS * STEPS)]
    epochs = [(k, e) for k in ("train/loss_epoch", "val/loss") for e in range(2, EPOCHS)]
    assert_same(metrics(run_dir), metrics(reference), steps + epochs)
    final = weights(run_dir / "checkpoints" / "last.ckpt")
    for name, value in weights(reference / "checkpoints" / "last.ckpt").items():
        torch.testing.assert_close(final[name], value, rtol=TOL, atol=TOL, msg=name)


# --------------------------------------------------------------------- atomic checkpoint IO


def test_checkpoint_write_goes_through_a_temporary_file_in_the_target_folder(tmp_path, monkeypatch):
    target = tmp_path / "checkpoints" / "last.ckpt"
    moves = []
    real_replace = os.replace
    monkeypatch.setattr(
        os, "replace", lambda src, dst: (moves.append((src, dst)), real_replace(src, dst))
    )
    AtomicCheckpointIO().save_checkpoint({"w": torch.arange(3)}, target)
    assert torch.load(target)["w"].tolist() == [0, 1, 2]
    ((src, dst),) = moves
    assert Path(src).parent == target.parent and Path(dst) == target  # same filesystem: atomic
    assert sorted(p.name for p in target.parent.iterdir()) == ["last.ckpt"]


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path):
    target = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"w": torch.zeros(4)}, target)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("killed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        io.save_checkpoint({"w": torch.ones(4), "bad": Unpicklable()}, target)
    assert torch.load(target)["w"].tolist() == [0.0] * 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
