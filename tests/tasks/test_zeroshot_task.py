"""ZeroShotTask: CLIP-teacher check, the reference feature, cosine prediction, splits."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import load_fixture
from recon_lightning.models import build_pretrainer
from recon_lightning.tasks.zeroshot import (
    NotCLIPPretrainedError,
    ZeroShotTask,
    check_clip_checkpoint,
    zero_shot_logits,
)
from tasks.test_classification import FIXTURE, TINY, cpu_trainer, tiny_data

TINY_TEXT = {"pretrained": False, "tiny": True}


def test_zero_shot_logits_are_cosine_similarities():
    feats = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, -3.0]])
    protos = torch.tensor([[10.0, 0.0], [0.0, 0.5]])
    logits = zero_shot_logits(feats, protos)
    s = 2**-0.5
    torch.testing.assert_close(logits, torch.tensor([[1.0, 0.0], [s, s], [0.0, -1.0]]))
    assert logits.argmax(-1).tolist() == [0, 0, 0]


def test_in21k_checkpoint_is_refused_with_a_clear_message(official_dir):
    ckpt = str(official_dir / "a_pretrain" / "ckpt-epoch-300.pth")  # in21k teacher: img_proj 768
    model = {"encoder": FIXTURE, "feature_type": "full"}
    with pytest.raises(NotCLIPPretrainedError, match="not pretrained with the CLIP image teacher"):
        ZeroShotTask(model=model, ckpt_path=ckpt, text_teacher=TINY_TEXT)
    with pytest.raises(NotCLIPPretrainedError, match="teachers=clip"):
        ZeroShotTask(model={**model, "feature_type": "image"}, ckpt_path=ckpt)
    with pytest.raises(NotCLIPPretrainedError, match="no img_proj"):
        check_clip_checkpoint({"encoder.cls_token": torch.zeros(1)}, "full", 512, "x.ckpt")


def test_text_feature_of_official_checkpoint_matches_reference(official_dir):
    data = load_fixture(official_dir / "f_svm_zeroshot" / "data.pt")
    ckpt = str(official_dir / "a_pretrain" / "ckpt-epoch-300.pth")
    task = ZeroShotTask(model={"encoder": FIXTURE, "feature_type": "text"}, ckpt_path=ckpt)
    task = task.double().eval()
    with torch.no_grad():
        feature = task.model(data["inputs"]["points"])
    expected = data["zeroshot_text"]["eval"]["feature"]
    torch.testing.assert_close(feature, expected, rtol=1e-10, atol=1e-10)


@pytest.fixture
def clip_checkpoint(tmp_path):
    """A Lightning-style pretraining checkpoint with a 512-d image projection (CLIP teacher)."""
    torch.manual_seed(0)
    model = build_pretrainer(**TINY, decoder_depth=1, img_dim=512, text_dim=512)
    path = tmp_path / "pretrain.ckpt"
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "hyper_parameters": {}}, path)
    return str(path)


@pytest.mark.parametrize("split", ["test", "train+test"])
def test_zero_shot_evaluate_splits_and_results(clip_checkpoint, tmp_path, split):
    torch.manual_seed(0)
    model = {"encoder": TINY, "feature_type": "full", "ratio": 0.1}
    task = ZeroShotTask(model=model, ckpt_path=clip_checkpoint, text_teacher=TINY_TEXT, split=split)
    assert task.init_report.missing == []  # encoder + both projections come from the checkpoint
    data = tiny_data(train_size=16, test_size=8)
    metrics = task.evaluate(cpu_trainer(), data)
    assert task.prototypes.shape == (4, 512)
    expected = {"zeroshot_acc", "acc_test"} | ({"acc_train"} if split == "train+test" else set())
    assert set(metrics) == expected
    if split == "train+test":
        # 16 training and 8 test shapes: the overall accuracy is their count-weighted mean.
        combined = (16 * metrics["acc_train"] + 8 * metrics["acc_test"]) / 24
        assert metrics["zeroshot_acc"] == pytest.approx(combined)
    task.write_results(tmp_path / "results.json", {"config_name": "zs", "seed": 0})
    record = json.loads((tmp_path / "results.json").read_text())
    assert record["setting"]["split"] == split
    assert record["setting"]["class_names"] == data.class_names
    assert ("'*' numbers" in record["notes"]["zeroshot_acc"]) == (split == "train+test")


def test_split_must_be_named():
    with pytest.raises(ValueError, match="split"):
        ZeroShotTask(model={"encoder": TINY}, split="all")
