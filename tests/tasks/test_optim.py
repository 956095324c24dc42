"""The optimiser recipe against the reference's recorded schedule (fixture e_optim)."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch
from torch import nn

from recon_lightning.tasks.optim import (
    ReferenceCosineLR,
    build_param_groups,
    configure_reference_optimizer,
    cosine_lr_at,
    fit_schedule,
    lr_during_epoch,
    reference_no_decay,
)


@pytest.fixture(scope="module")
def schedule(official_dir):
    return json.loads((official_dir / "e_optim" / "lr_schedule.json").read_text())


@pytest.mark.parametrize("case", ["pretrain_lr5e-4", "finetune_full_lr2e-5"])
def test_scheduler_matches_reference_every_epoch(schedule, case):
    ref = schedule[case]
    bases = ref["group_base_lr"]
    params = [nn.Parameter(torch.zeros(1)) for _ in bases]
    opt = torch.optim.AdamW(
        [{"params": [p], "lr": lr} for p, lr in zip(params, bases, strict=True)]
    )
    sched = ReferenceCosineLR(opt, epochs=300, warmup_epochs=10)
    for epoch, expected in enumerate(ref["lr_during_epoch"]):
        got = [g["lr"] for g in opt.param_groups]
        assert got == pytest.approx(expected, rel=1e-12, abs=0), f"epoch {epoch}"
        opt.step()
        sched.step()
    assert len(ref["lr_during_epoch"]) == 301


def test_formula_matches_get_lr_t(schedule):
    ref = schedule["pretrain_lr5e-4"]
    for t, row in enumerate(ref["get_lr_t"]):
        for base, expected in zip(ref["group_base_lr"], row, strict=True):
            assert cosine_lr_at(t, base) == pytest.approx(expected, rel=1e-12)
    assert lr_during_epoch(0, 5e-4) == lr_during_epoch(1, 5e-4) == 1e-6


def test_scheduler_resumes_from_state_dict():
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=5e-4)
    sched = ReferenceCosineLR(opt)
    for _ in range(37):
        opt.step()
        sched.step()
    state = sched.state_dict()
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched2 = ReferenceCosineLR(opt2)
    sched2.load_state_dict(state)
    opt2.param_groups[0]["lr"] = sched2.get_last_lr()[0]
    opt.step()
    sched.step()
    opt2.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)


def test_param_groups_follow_reference_rules():
    model = nn.Module()
    model.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
    model.cls_pos = nn.Parameter(torch.zeros(1, 1, 4))
    model.img_pos = nn.Parameter(torch.zeros(1, 1, 4))
    model.img_token = nn.Parameter(torch.zeros(1, 1, 4))
    model.lin = nn.Linear(4, 4)
    model.frozen = nn.Linear(4, 4)
    model.frozen.requires_grad_(False)
    groups = build_param_groups(
        model.named_parameters(), lr=1e-3, weight_decay=0.05, is_head=lambda n: "cls" in n
    )
    assert [g["names"] for g in groups] == [
        ["cls_token", "cls_pos"],
        ["img_token", "lin.bias"],
        ["img_pos", "lin.weight"],
    ]
    assert [g["lr"] for g in groups] == pytest.approx([1e-2, 1e-3, 1e-3])
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0, 0.05]


def test_no_warmup_trains_epoch_zero_at_base_lr():
    assert lr_during_epoch(0, 1e-3, warmup_epochs=0) == 1e-3
    assert lr_during_epoch(1, 1e-3, warmup_epochs=0, epochs=10) == pytest.approx(1e-3)
    assert lr_during_epoch(11, 1e-3, warmup_epochs=0, epochs=10) == 1e-6


# ---------------------------------------------------------------- the schedule follows the run


def test_fit_schedule_follows_max_epochs_and_keeps_the_faithful_recipe():
    recipe = {"epochs": None, "warmup_epochs": 10, "warmup_lr_init": 1e-6, "lr_min": 1e-6}
    assert fit_schedule(recipe, 301) == {**recipe, "epochs": 300}
    assert fit_schedule({**recipe, "epochs": 300}, 5)["epochs"] == 300  # explicit: kept
    with pytest.raises(ValueError, match="trainer.max_epochs"):
        fit_schedule(recipe, None)


def test_fit_schedule_shortens_a_warmup_longer_than_the_run_with_one_warning(caplog):
    recipe = {"epochs": None, "warmup_epochs": 10, "warmup_lr_init": 1e-6, "lr_min": 1e-6}
    with caplog.at_level("WARNING", logger="recon_lightning.tasks.optim"):
        fitted = fit_schedule(recipe, 3)
    assert (fitted["epochs"], fitted["warmup_epochs"]) == (2, 1)
    assert len(caplog.records) == 1 and "shortened to 1" in caplog.records[0].getMessage()
    assert fit_schedule(recipe, 2)["warmup_epochs"] == 0
    caplog.clear()
    fit_schedule(recipe, 301)
    assert not caplog.records


class _TinyTask(pl.LightningModule):
    """One linear layer trained with the reference optimiser recipe; records each epoch's lr."""

    def __init__(self, scheduler):
        super().__init__()
        self.layer = torch.nn.Linear(3, 1)
        self.scheduler = scheduler
        self.lrs: list[float] = []

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def on_train_epoch_start(self):
        self.lrs.append(self.optimizers().param_groups[0]["lr"])

    def configure_optimizers(self):
        return configure_reference_optimizer(
            self,
            self.named_parameters(),
            {"lr": 1e-3, "weight_decay": 0.05},
            self.scheduler,
            is_no_decay=reference_no_decay,
        )


def test_max_epochs_alone_gives_a_full_schedule_ending_at_lr_min(caplog):
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 3)), 4)
    task = _TinyTask({"epochs": None, "warmup_epochs": 10, "warmup_lr_init": 1e-6, "lr_min": 1e-6})
    trainer = pl.Trainer(
        max_epochs=5,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    with caplog.at_level("WARNING", logger="recon_lightning.tasks.optim"):
        trainer.fit(task, data)
    assert sum("shortened" in r.getMessage() for r in caplog.records) == 1
    # Warm-up epochs at warmup_lr_init (the reference's quirk), then a decaying cosine.
    assert task.lrs[0] == pytest.approx(1e-6) and task.lrs[1] == pytest.approx(1e-6)
    assert task.lrs[2] > task.lrs[3] > task.lrs[4] > 1e-6
    # After the last epoch's step the schedule has reached lr_min.
    assert task.optimizers().param_groups[0]["lr"] == pytest.approx(1e-6)
