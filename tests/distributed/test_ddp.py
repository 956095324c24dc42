"""DDP on CPU processes (gloo): the same training as one process, distinct draws per rank, and
evaluation that counts every sample once (recon_lightning.distributed).

The multi-process tests launch ``recon-train trainer=ddp_cpu`` (Lightning's own launcher starts
rank 1 from the same command) and compare it with a one-process run of the same config in this
process. For the comparison every draw must be a function of the sample, not of the rank's
stream, so the tasks below (loaded by the subprocess through ``PYTHONPATH``) key the pretraining
masks on the dataset index, resample training clouds by FPS alone, and run BatchNorm and Dropout
in eval mode (torch's SyncBatchNorm has no CPU kernel, so per-rank batch statistics would
differ from the one-process batch's). Data items are already seeded by (seed, epoch, index).

Tolerance: the two runs add the same numbers in different orders (DDP averages two half-batch
gradients, Lightning averages two half-epoch means, the processes run one BLAS thread each), so
losses agree to float32 round-off, amplified a little by a few optimiser steps: relative 1e-5
(observed: 2e-7). Accuracies are exact.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from torch import nn

from recon_lightning.data.synthetic import SyntheticShapesDataModule
from recon_lightning.data.transforms import fps_sample
from recon_lightning.distributed import (
    TRAIN_STREAM,
    EpochSeededDataset,
    ResumableShuffleSampler,
    UnpaddedDistributedSampler,
    seed_all,
    train_loader,
)
from recon_lightning.models import PatchMasker, build_pretrainer
from recon_lightning.tasks.classification import ClassificationTask
from recon_lightning.tasks.pretrain import PretrainTask

HERE = Path(__file__).resolve().parent
CONF = HERE.parents[1] / "conf"
RTOL = 1e-5

# ----------------------------------------------------------------------------------- helpers
# Importable by the recon-train subprocess as ``test_ddp.<name>`` (PYTHONPATH=tests/distributed).


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


def probe_mask() -> torch.Tensor:
    """A mask drawn from the global stream on fixed centres: what a rank's masker draws next."""
    centers = torch.linspace(-1, 1, 2 * 8 * 3).reshape(2, 8, 3)
    return PatchMasker(0.6, "rand")(centers)


def _freeze_stochastic_layers(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm | nn.Dropout):
            m.eval()


def _record(record_dir: str | None, name: str, value: Any) -> None:
    if record_dir is not None:
        Path(record_dir).mkdir(parents=True, exist_ok=True)
        torch.save(value, Path(record_dir) / name)


class EquivalencePretrain(PretrainTask):
    """Pretraining with masks keyed by the dataset index; records each rank's first probe mask."""

    def __init__(self, *args: Any, record_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record_dir = record_dir

    def on_train_epoch_start(self) -> None:
        # Lightning keeps modules in the mode it finds them (and restores it after validation).
        _freeze_stochastic_layers(self)

    def _losses(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        img, text = self.teachers.targets(batch)
        groups = self.model.encoder.num_group
        masked = self.model.masker.num_masked(groups)
        noise = torch.stack(
            [
                torch.rand(groups, generator=torch.Generator().manual_seed(int(i)))
                for i in batch["index"]
            ]
        ).to(batch["points"].device)
        mask = torch.zeros_like(noise, dtype=torch.bool)
        mask.scatter_(1, noise.argsort(dim=1)[:, :masked], True)
        return self.model.losses(batch["points"], img, text, mask=mask)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        if self.global_step == 0:
            name = f"mask_rank{self.global_rank}_of{self.trainer.world_size}.pt"
            _record(self.record_dir, name, probe_mask())
        return super().training_step(batch, batch_idx)


class EquivalenceClassification(ClassificationTask):
    """Fine-tuning without stochastic layers; records how many test samples each rank counted."""

    def __init__(self, *args: Any, record_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.record_dir = record_dir
        self._test_seen = 0

    def on_train_epoch_start(self) -> None:
        # Lightning keeps modules in the mode it finds them (and restores it after validation).
        _freeze_stochastic_layers(self)

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        self._test_seen += int(batch["label"].numel())
        super().test_step(batch, batch_idx)

    def on_test_epoch_end(self) -> None:
        name = f"test_seen_rank{self.global_rank}_of{self.trainer.world_size}.pt"
        _record(self.record_dir, name, self._test_seen)
        super().on_test_epoch_end()


class EquivalenceData(SyntheticShapesDataModule):
    """Training clouds resampled by FPS alone (no random subset, no augmentation)."""

    def on_after_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        if self.mode == "classification" and self._is_training():
            batch["points"] = fps_sample(batch["points"], self.npoints)
            return batch
        return super().on_after_batch_transfer(batch, dataloader_idx)


# ------------------------------------------------------------------------------------ runs

ENCODER = [
    "encoder.trans_dim=32",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.num_group=8",
    "encoder.group_size=8",
    "encoder.decoder_depth=1",
    "encoder.decoder_num_heads=2",
    "encoder.drop_path_rate=0.0",
]
DATA = [
    "data.num_workers=0",
    "data.train_size=16",
    "data.val_size=5",
    "data.test_size=13",  # odd: a padding sampler would count a sample twice on 2 processes
    "data.total_bs=8",
    "data.npoints=128",
    "data.num_points=256",
    "data.num_classes=4",
    "data.train_transform=none",
]
RUN = [
    "logger=csv",
    "callbacks=none",
    "trainer.max_epochs=3",
    "trainer.log_every_n_steps=1",
    "resume=null",
    "++trainer.enable_progress_bar=false",
    "++trainer.enable_model_summary=false",
]
PRETRAIN = [
    *ENCODER,
    *DATA,
    *RUN,
    "data=synthetic",
    "data.image_size=32",
    "teachers=random",
    "teachers._target_=test_ddp.LabelTeachers",
    "task._target_=test_ddp.EquivalencePretrain",
]
FINETUNE = [
    *[o for o in ENCODER if "decoder" not in o],
    *DATA,
    *RUN,
    "data=synthetic_cls",
    "data._target_=test_ddp.EquivalenceData",
    "task=classification",
    "task._target_=test_ddp.EquivalenceClassification",
    "task.vote.times=2",
    "test=true",
]


def _run_one_process(overrides: list[str], out: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from recon_lightning.cli.train import run

    # Hydra locates ``test_ddp.X`` as the subprocess does.
    monkeypatch.setitem(sys.modules, "test_ddp", sys.modules[__name__])
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*overrides, "trainer=cpu", f"paths.output_dir={out}"],
        )
    run(cfg)


def _run_two_processes(overrides: list[str], out: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "PYTHONWARNINGS": "ignore",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable,
        "-m",
        "recon_lightning.cli.train",
        *overrides,
        "trainer=ddp_cpu",
        "trainer.devices=2",
        f"hydra.run.dir={out}",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=out.parent)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]


def _epoch_metrics(out: Path, keys: list[str]) -> dict[str, list[float]]:
    rows = list(csv.DictReader((out / "csv" / "metrics.csv").open()))
    return {k: [float(r[k]) for r in rows if r.get(k)] for k in keys}


def test_two_process_pretraining_equals_one_process_and_ranks_draw_different_masks(
    tmp_path, monkeypatch
):
    one, two = tmp_path / "one", tmp_path / "two"
    _run_one_process([*PRETRAIN, f"+task.record_dir={one}"], one, monkeypatch)
    _run_two_processes([*PRETRAIN, f"+task.record_dir={two}"], two)

    keys = ["train/loss_epoch", "train/chamfer_epoch", "train/img_epoch", "val/loss"]
    single, ddp = _epoch_metrics(one, keys), _epoch_metrics(two, keys)
    for key in keys:
        assert len(single[key]) == 3, key
        torch.testing.assert_close(
            torch.tensor(ddp[key]), torch.tensor(single[key]), rtol=RTOL, atol=0, msg=key
        )

    # The ranks draw from different streams, each a function of (seed, rank, batches done).
    masks = {r: torch.load(two / f"mask_rank{r}_of2.pt") for r in (0, 1)}
    assert not torch.equal(masks[0], masks[1])
    assert torch.equal(torch.load(one / "mask_rank0_of1.pt"), masks[0])
    for rank, mask in masks.items():
        seed_all(0, TRAIN_STREAM, rank, 0)
        assert torch.equal(probe_mask(), mask)


def test_two_process_finetuning_equals_one_process_and_counts_each_test_sample_once(
    tmp_path, monkeypatch
):
    one, two = tmp_path / "one", tmp_path / "two"
    _run_one_process([*FINETUNE, f"+task.record_dir={one}"], one, monkeypatch)
    _run_two_processes([*FINETUNE, f"+task.record_dir={two}"], two)

    single = _epoch_metrics(one, ["train/loss_epoch", "val/acc", "test/acc", "test/vote_acc"])
    ddp = _epoch_metrics(two, ["train/loss_epoch", "val/acc", "test/acc", "test/vote_acc"])
    torch.testing.assert_close(
        torch.tensor(ddp["train/loss_epoch"]),
        torch.tensor(single["train/loss_epoch"]),
        rtol=RTOL,
        atol=0,
    )
    assert len(single["val/acc"]) == 3 and ddp["val/acc"] == single["val/acc"]
    assert ddp["test/acc"] == single["test/acc"]
    # 13 test clouds over 2 processes: 7 + 6, none padded or repeated.
    seen = [torch.load(two / f"test_seen_rank{r}_of2.pt") for r in (0, 1)]
    assert seen == [7, 6]
    assert torch.load(one / "test_seen_rank0_of1.pt") == 13
    # Voting views are drawn per rank; still a fraction of the 13 samples, counted once each.
    for acc in (*ddp["test/acc"], *ddp["test/vote_acc"]):
        assert acc * 13 / 100 == pytest.approx(round(acc * 13 / 100), abs=1e-4)


# ------------------------------------------------------------------------------- in-process


class _Toy(torch.utils.data.Dataset):
    """Item ``i`` is ``(i, a draw from the global generators)``."""

    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> tuple[int, float]:
        return i, float(torch.rand(()))


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_unpadded_sampler_gives_every_sample_to_exactly_one_rank(world):
    for n in range(world, 12):
        parts = [list(UnpaddedDistributedSampler(range(n), world, r)) for r in range(world)]
        assert sorted(i for p in parts for i in p) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1
        assert [len(UnpaddedDistributedSampler(range(n), world, r)) for r in range(world)] == [
            len(p) for p in parts
        ]
    if world > 1:
        with pytest.raises(ValueError, match="cannot give each"):
            UnpaddedDistributedSampler(range(world - 1), world, 0)


def test_two_ranks_share_one_global_batch_per_step():
    """Rank r's k-th batch of B/2 and the other rank's make up one process's k-th batch of B."""
    data = range(20)
    single = [k for k, _ in ResumableShuffleSampler(data, 1, 0, seed=3, epoch=2)]
    ranks = [[k for k, _ in ResumableShuffleSampler(data, 2, r, seed=3, epoch=2)] for r in (0, 1)]
    for step in range(len(single) // 4):
        global_batch = ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]
        assert sorted(global_batch) == sorted(single[4 * step : 4 * step + 4])
    assert {e for _, e in ResumableShuffleSampler(data, 2, 1, seed=3, epoch=2)} == {2}


def test_items_draw_from_seed_epoch_and_index_and_leave_the_caller_stream_alone():
    items = EpochSeededDataset(_Toy(), seed=5)
    torch.manual_seed(0)
    before = torch.random.get_rng_state()
    a, b = items[(3, 0)], items[(3, 0)]
    assert a == b and items[(3, 1)] != a and items[(4, 0)] != a
    assert items[3] == a  # a plain index (evaluation) reads epoch 0
    assert torch.equal(torch.random.get_rng_state(), before)


def test_training_loader_resumes_after_the_batches_it_served():
    def batches(loader, count=None):
        out = []
        for index, _ in loader:  # one batch at a time, as Lightning's fetcher takes them
            out.append(index.tolist())
            if len(out) == count:
                break
        return out

    loader = train_loader(_Toy(), batch_size=2, trainer=None, seed=1)
    full = batches(loader)
    assert len(full) == 5 and sorted(sum(full, [])) == list(range(10))
    assert batches(train_loader(_Toy(), batch_size=2, trainer=None, seed=1)) == full

    stopped = train_loader(_Toy(), batch_size=2, trainer=None, seed=1)
    assert batches(stopped, count=2) == full[:2]
    state = stopped.state_dict()
    assert state["epoch"] == 0 and state["batches"] == 2 and not state["epoch_done"]
    resumed = train_loader(_Toy(), batch_size=2, trainer=None, seed=1)
    resumed.load_state_dict(state)
    assert batches(resumed) == full[2:]
    assert resumed.state_dict() == {"epoch": 0, "batches": 5, "epoch_done": 1}

    # An epoch's end resumes at the next epoch's order.
    nxt = train_loader(_Toy(), batch_size=2, trainer=None, seed=1)
    nxt.load_state_dict(resumed.state_dict())
    reference = train_loader(_Toy(), batch_size=2, trainer=None, seed=1)
    reference.sampler.set_epoch(1)
    assert batches(nxt) == batches(reference) != full


@pytest.mark.parametrize("persistent", [False, True])
def test_training_items_do_not_depend_on_the_worker_processes(persistent):
    """Item draws come from (seed, epoch, index): 0 or 2 workers, persistent or not, agree."""

    def epochs(num_workers):
        loader = train_loader(
            _Toy(),
            batch_size=2,
            trainer=None,
            seed=4,
            num_workers=num_workers,
            persistent_workers=persistent and num_workers > 0,
        )
        out = []
        for epoch in range(2):
            loader.sampler.set_epoch(epoch)
            out.append([(i.tolist(), v.tolist()) for i, v in loader])
        return out

    assert epochs(2) == epochs(0)


def test_rank_streams_differ_and_reproduce():
    draws = {}
    for rank in (0, 1, 0):
        seed_all(7, TRAIN_STREAM, rank, 12)
        draws.setdefault(rank, []).append(torch.rand(4))
    assert torch.equal(draws[0][0], draws[0][1])
    assert not torch.equal(draws[0][0], draws[1][0])


@pytest.mark.parametrize("self_contrastive", [False, True])
def test_every_trainable_parameter_gets_a_gradient(self_contrastive):
    """Why DDP needs no find_unused_parameters: without SMC the cls query's gradient is zero,
    not None (the three queries travel as one tensor), so every parameter is in the graph."""
    torch.manual_seed(0)
    model = build_pretrainer(
        trans_dim=32,
        depth=1,
        num_heads=2,
        num_group=8,
        group_size=8,
        decoder_depth=1,
        decoder_num_heads=2,
        img_dim=16,
        text_dim=16,
        self_contrastive=self_contrastive,
    )
    labels = torch.tensor([0, 0, 1, 1]) if self_contrastive else None
    loss = model.losses(
        torch.randn(4, 128, 3), torch.randn(4, 16), torch.randn(4, 16), labels=labels
    )
    loss["total"].backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []
    cls_grad = model.encoder.cls_token.grad
    assert (cls_grad.abs().max() == 0) != self_contrastive


def test_sync_batchnorm_is_refused_on_cpu_processes():
    from recon_lightning.cli.train import check_sync_batchnorm

    cpu = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    with pytest.raises(ValueError, match="sync_batchnorm"):
        check_sync_batchnorm(cpu, True)
    check_sync_batchnorm(cpu, False)
    gpu = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("cuda")))
    check_sync_batchnorm(gpu, True)


def test_ddp_configs_compose(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from recon_lightning.cli._hydra import instantiate

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        gpu = compose(config_name="train", overrides=["trainer=ddp", "trainer.num_nodes=2"])
        cpu = compose(
            config_name="train", overrides=["trainer=ddp_cpu", f"paths.output_dir={tmp_path}"]
        )
    assert (gpu.trainer.strategy, gpu.trainer.accelerator, gpu.trainer.num_nodes) == (
        "ddp",
        "gpu",
        2,
    )
    assert gpu.trainer.devices == -1 and not gpu.trainer.sync_batchnorm
    trainer = instantiate(cpu.trainer, logger=False)
    assert trainer.world_size == 2 and trainer.strategy.root_device.type == "cpu"
