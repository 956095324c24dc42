"""ClassificationTask: protocols, optimiser groups, official checkpoints, best/last tracking."""

from __future__ import annotations

import json

import lightning.pytorch as pl
import pytest
import torch

from conftest import load_fixture
from recon_lightning.checkpoints.keymap import to_official
from recon_lightning.data.synthetic import SyntheticShapesDataModule
from recon_lightning.tasks.classification import ClassificationTask, classifier_config

TINY = {"trans_dim": 32, "depth": 2, "num_heads": 2, "num_group": 8, "group_size": 8}
#: The official fixtures' classifier size (configs.json).
FIXTURE = {"trans_dim": 72, "depth": 3, "num_heads": 3, "num_group": 16, "group_size": 8}


def tiny_task(protocol: str = "full", **kwargs) -> ClassificationTask:
    model = {"encoder": {**TINY, "drop_path_rate": 0.1, "decoder_depth": 1}, "cls_dim": 4}
    return ClassificationTask(model=model, protocol=protocol, **kwargs)


def tiny_data(**kwargs) -> SyntheticShapesDataModule:
    args = dict(
        mode="classification",
        train_size=16,
        val_size=8,
        test_size=8,
        num_points=96,
        npoints=64,
        num_classes=4,
        batch_size=8,
        num_workers=0,
    )
    return SyntheticShapesDataModule(**{**args, **kwargs})


def cpu_trainer(**kwargs) -> pl.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        gradient_clip_val=10,
    )
    return pl.Trainer(**{**args, **kwargs})


@pytest.mark.parametrize("protocol", ["full", "mlp3", "linear"])
def test_every_protocol_fits_a_batch(protocol):
    torch.manual_seed(0)
    task = tiny_task(protocol)
    before = {n: p.detach().clone() for n, p in task.model.named_parameters()}
    trainable = {n for n, p in task.model.named_parameters() if p.requires_grad}
    head = set(task.model.head_parameter_names())
    assert trainable == (set(before) if protocol == "full" else head)
    cpu_trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=1).fit(
        task, datamodule=tiny_data()
    )
    changed = {n for n, p in task.model.named_parameters() if not torch.equal(p, before[n])}
    # Every trainable parameter moved (cls_token starts at zero and still gets a gradient);
    # nothing frozen moved.
    assert changed <= trainable
    assert changed >= {n for n in trainable if "bn" not in n}
    assert task.val_history and task.val_history[0][0] == 0


def test_param_groups_match_reference(official_dir):
    groups_ref = json.loads((official_dir / "e_optim" / "param_groups.json").read_text())
    for protocol in ("full", "mlp3", "linear"):
        ref = groups_ref[f"finetune_{protocol}"]["groups"]
        model = {"encoder": {**FIXTURE, "drop_path_rate": 0.2}, "cls_dim": 15}
        task = ClassificationTask(
            model=model, protocol=protocol, optimizer={"lr": 2e-5}, scheduler={"epochs": 300}
        )
        opt = task.configure_optimizers()["optimizer"]
        head_type = task.model.head_type
        ours = [
            {to_official(n, "classification", head_type) for n in g["names"]}
            for g in opt.param_groups
        ]
        ref_nonempty = [g for g in ref if g["params"]]
        assert ours == [set(g["params"]) for g in ref_nonempty]
        for g, r in zip(opt.param_groups, ref_nonempty, strict=True):
            assert g["initial_lr"] == pytest.approx(r["lr_configured"], rel=1e-12)
            assert g["weight_decay"] == r["weight_decay"]
            # Building the scheduler sets every group to warmup_lr_init, as timm does.
            assert g["lr"] == pytest.approx(r["lr_after_scheduler_init"], rel=1e-12)


@pytest.mark.parametrize("protocol", ["full", "mlp3", "linear"])
def test_official_classifier_gives_reference_logits(official_dir, protocol):
    case = official_dir / f"b_classifier_{protocol}"
    data = load_fixture(case / "data.pt")
    model = {"encoder": {**FIXTURE, "drop_path_rate": 0.2}, "cls_dim": 15}
    task = ClassificationTask(model=model, protocol=protocol, ckpt_path=str(case / "ckpt-best.pth"))
    assert task.init_report.missing == [] and task.init_report.unexpected == []
    task = task.double().eval()
    with torch.no_grad():
        logits = task(data["inputs"]["points"])
    torch.testing.assert_close(logits, data["eval"]["logits"], rtol=1e-10, atol=1e-10)


def test_pretrained_official_checkpoint_initialises_encoder_only(official_dir):
    model = {"encoder": {**FIXTURE, "drop_path_rate": 0.2}, "cls_dim": 15}
    ckpt = official_dir / "a_pretrain" / "ckpt-epoch-300.pth"
    task = ClassificationTask(model=model, protocol="full", ckpt_path=str(ckpt))
    assert task.init_report.missing and all(k.startswith("head.") for k in task.init_report.missing)
    with pytest.raises(ValueError, match="pretraining checkpoint"):
        task.evaluate(cpu_trainer(), tiny_data())


def test_head_type_must_fit_protocol():
    assert classifier_config({"cls_dim": 3, **TINY, "head_type": "full"}, "mlp3")["head_type"] == (
        "mlp3"
    )
    with pytest.raises(ValueError, match="does not fit"):
        classifier_config({"cls_dim": 3, **TINY, "head_type": "full"}, "linear")
    with pytest.raises(ValueError, match="protocol"):
        tiny_task("svm")


def test_best_epoch_is_tracked_beside_last_and_survives_checkpoint():
    task = tiny_task()
    task.val_history = [(0, 40.0), (1, 75.0), (2, 75.0), (3, 60.0)]
    assert task.best_epoch() == (1, 75.0)
    ckpt: dict = {}
    task.on_save_checkpoint(ckpt)
    other = tiny_task()
    other.on_load_checkpoint(ckpt)
    assert other.val_history == task.val_history
    record = other.results({"config_name": "x", "seed": 0, "checkpoint": None})
    m = record["metrics"]
    assert (m["last_epoch"], m["last_epoch_acc"]) == (3, 60.0)
    assert (m["best_epoch"], m["best_epoch_acc_test_selected"]) == (1, 75.0)
    assert record["headline"] == {"metric": "last_epoch_acc", "value": 60.0}
    assert "test split" in record["notes"]["best_epoch_acc_test_selected"]


def test_frozen_backbone_mode():
    task = tiny_task("linear").train()
    assert task.model.encoder.training  # reference: the frozen backbone runs in train mode
    task = tiny_task("linear", frozen_backbone_mode="eval").train()
    assert not task.model.encoder.training and task.model.head.training


def test_results_without_any_evaluation_say_so():
    record = tiny_task().results({"config_name": "x", "seed": 0})
    assert record["headline"] == {"metric": None, "value": None}
    assert record["metrics"] == {}
