"""SVMTask: the reference SVM feature from an official checkpoint, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import load_fixture
from recon_lightning.tasks.svm import SVMTask
from tasks.test_classification import FIXTURE, TINY, cpu_trainer, tiny_data


def test_official_pretrain_gives_reference_svm_feature(official_dir):
    data = load_fixture(official_dir / "f_svm_zeroshot" / "data.pt")
    ckpt = official_dir / "a_pretrain" / "ckpt-epoch-300.pth"
    task = SVMTask(model={"encoder": {**FIXTURE, "drop_path_rate": 0.1}}, ckpt_path=str(ckpt))
    assert task.init_report.missing == []
    task = task.double().eval()
    with torch.no_grad():
        feature = task(data["inputs"]["points"])
    torch.testing.assert_close(feature, data["svm"]["eval"]["feature"], rtol=1e-10, atol=1e-10)


def test_svm_evaluate_and_results(tmp_path):
    torch.manual_seed(0)
    task = SVMTask(model={"encoder": {**TINY, "decoder_depth": 1}}, ckpt_path=None)
    data = tiny_data(train_size=20, test_size=12, batch_size=8)
    metrics = task.evaluate(cpu_trainer(), data)
    # The training loader drops its last partial batch, as the reference's does: 20 -> 16.
    assert metrics["num_train"] == 16 and metrics["num_test"] == 12
    assert 0.0 <= metrics["svm_acc"] <= 100.0
    task.write_results(tmp_path / "results.json", {"config_name": "svm", "seed": 0})
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["headline"]["metric"] == "svm_acc"
    assert record["setting"]["random_init"] is True and record["setting"]["npoints"] == 64


def test_svm_task_refuses_training():
    task = SVMTask(model={"encoder": TINY})
    with pytest.raises(RuntimeError, match="recon-eval"):
        task.configure_optimizers()
    with pytest.raises(RuntimeError, match="recon-eval"):
        task.write_results("unused.json", {})
