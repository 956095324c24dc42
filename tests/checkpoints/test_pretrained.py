"""load_pretrained: our own and the reference's pretraining checkpoints into downstream models."""

from __future__ import annotations

import pytest
import torch

from recon_lightning.checkpoints import load_official, load_pretrained
from recon_lightning.models import ReConClassifier, ReConEncoder, ReConPretrainer, ReConZeroShot

SMALL = {"trans_dim": 24, "depth": 2, "num_heads": 3, "num_group": 8, "group_size": 6}


@pytest.fixture(scope="module")
def pretrainer() -> ReConPretrainer:
    torch.manual_seed(0)
    return ReConPretrainer(**SMALL, img_dim=16, text_dim=16)


def _same_encoder(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_our_pretrainer_state_dict_into_a_classifier(pretrainer):
    model = ReConClassifier(cls_dim=5, **SMALL)
    report = load_pretrained(model, pretrainer.state_dict())
    assert _same_encoder(model.encoder, pretrainer.encoder)
    assert report.missing == [
        n for n in model.state_dict() if n.startswith("head.") and "num_batches" not in n
    ]
    assert {k.split(".")[0] for k in report.unexpected} == {
        "decoder",
        "recon_head",
        "img_proj",
        "text_proj",
    }
    assert "randomly initialised (14)" in str(report)  # 10 parameters + 4 BN statistics


def test_lightning_checkpoint_file_with_prefix_and_teachers(tmp_path, pretrainer):
    state = {f"model.{k}": v for k, v in pretrainer.state_dict().items()}
    state["img_teacher.patch_embed.proj.weight"] = torch.zeros(8, 3, 16, 16)
    path = tmp_path / "last.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    model = ReConZeroShot("full", img_dim=16, text_dim=16, **SMALL)
    report = load_pretrained(model, path)
    assert _same_encoder(model.encoder, pretrainer.encoder)
    assert torch.equal(model.img_proj.weight, pretrainer.img_proj.weight)
    assert report.missing == []
    assert "img_teacher.patch_embed.proj.weight" in report.unexpected


def test_bare_encoder_target(pretrainer):
    enc = ReConEncoder(**SMALL)
    report = load_pretrained(enc, pretrainer.state_dict())
    assert _same_encoder(enc, pretrainer.encoder) and report.missing == []
    assert "img_proj.weight" in report.unexpected


def test_official_classifier_checkpoint_fills_the_whole_classifier(official_dir):
    path = official_dir / "b_classifier_linear" / "ckpt-best.pth"
    model = ReConClassifier(
        cls_dim=15,
        head_type="linear",
        trans_dim=72,
        depth=3,
        num_heads=3,
        num_group=16,
        group_size=8,
    )
    report = load_pretrained(model, path)
    assert report.missing == [] and report.unexpected == []
    reference = load_official(path, num_heads=3, num_group=16, group_size=8)
    assert _same_encoder(model, reference)


def test_shape_mismatch_and_missing_encoder_raise(pretrainer):
    wide = ReConClassifier(**{**SMALL, "trans_dim": 48})
    with pytest.raises(ValueError, match="shape mismatch"):
        load_pretrained(wide, pretrainer.state_dict())
    with pytest.raises(ValueError, match="exactly one ReCon encoder"):
        load_pretrained(wide, {"head.out.weight": torch.zeros(3, 3)})
