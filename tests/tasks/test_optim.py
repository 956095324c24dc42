"""The optimiser recipe against the reference's recorded schedule (fixture e_optim)."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from recon_lightning.tasks.optim import (
    ReferenceCosineLR,
    build_param_groups,
    cosine_lr_at,
    lr_during_epoch,
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
