"""load_official: size inference, overrides, and errors that name the offending key."""

from __future__ import annotations

import pickle

import pytest
import torch

from conftest import load_fixture
from recon_lightning.checkpoints import (
    infer_config,
    infer_kind,
    load_official,
    read_state_dict,
    to_official,
)
from recon_lightning.models import ReConClassifier, ReConPretrainer

SIZE = {"num_heads": 3, "num_group": 16, "group_size": 8}


@pytest.fixture(scope="module")
def pretrain_raw(official_dir):
    return load_fixture(official_dir / "a_pretrain" / "ckpt-epoch-300.pth")


@pytest.fixture(scope="module")
def linear_raw(official_dir):
    return load_fixture(official_dir / "b_classifier_linear" / "ckpt-best.pth")


def _copy(raw: dict) -> dict:
    return {**raw, "base_model": dict(raw["base_model"])}


def test_reads_with_and_without_module_prefix(pretrain_raw):
    stripped = {k.removeprefix("module."): v for k, v in pretrain_raw["base_model"].items()}
    a = load_official(pretrain_raw, num_heads=3)
    b = load_official({"base_model": stripped}, num_heads=3)
    c = load_official(stripped, num_heads=3)  # a bare state dict works too
    for x, y in ((a, b), (a, c)):
        for (ka, va), (kb, vb) in zip(x.state_dict().items(), y.state_dict().items(), strict=True):
            assert ka == kb and torch.equal(va, vb)
    assert isinstance(a, ReConPretrainer) and not a.training


def test_infers_sizes_from_the_weights(pretrain_raw, linear_raw):
    state = read_state_dict(pretrain_raw)
    assert infer_kind(state) == "pretrain"
    assert infer_config(state, "pretrain") == {
        "trans_dim": 72,
        "depth": 3,
        "mlp_ratio": 4.0,
        "decoder_depth": 2,
        "group_size": 8,
        "img_dim": 768,
        "text_dim": 512,
        "self_contrastive": False,
    }
    cls = read_state_dict(linear_raw)
    assert infer_kind(cls) == "classification"
    assert infer_config(cls, "classification") == {
        "trans_dim": 72,
        "depth": 3,
        "mlp_ratio": 4.0,
        "head_type": "linear",
        "cls_dim": 15,
    }


def test_overrides_take_reference_names(pretrain_raw, official_dir):
    model = load_official(pretrain_raw, num_heads=3, num_group=16, mask_ratio=0.5, loss="cdl1")
    assert model.encoder.num_group == 16 and model.masker.mask_ratio == 0.5
    assert model.loss == "cdl1" and model.decoder.blocks[0].attn.num_heads == 3
    mlp3 = load_official(official_dir / "b_classifier_full" / "ckpt-best.pth", **SIZE, type="mlp3")
    assert isinstance(mlp3, ReConClassifier) and mlp3.head_type == "mlp3"


def test_contradicting_override_is_refused(pretrain_raw, official_dir):
    with pytest.raises(ValueError, match="trans_dim=96 contradicts"):
        load_official(pretrain_raw, num_heads=3, trans_dim=96)
    with pytest.raises(ValueError, match="head_type='linear' contradicts"):
        load_official(official_dir / "b_classifier_full" / "ckpt-best.pth", **SIZE, type="linear")


def test_num_heads_needed_for_non_reference_widths(pretrain_raw):
    with pytest.raises(ValueError, match="num_heads"):
        load_official(pretrain_raw)


def test_unknown_key_is_named(pretrain_raw):
    raw = _copy(pretrain_raw)
    raw["base_model"]["module.MAE_encoder.extra_token"] = torch.zeros(1)
    raw["base_model"]["module.MAE_encoder.norm.scale"] = torch.zeros(72)
    with pytest.raises(ValueError, match="extra_token") as err:
        load_official(raw, num_heads=3)
    assert "norm.scale" not in str(err.value)  # renamed fine, rejected by the fit check below
    del raw["base_model"]["module.MAE_encoder.extra_token"]
    with pytest.raises(ValueError, match=r"no place for 'encoder\.norm\.scale'"):
        load_official(raw, num_heads=3)


def test_shape_mismatch_and_missing_key_are_named(linear_raw):
    raw = _copy(linear_raw)
    key = "module.blocks.blocks.1.mlp.fc2.weight"
    raw["base_model"][key] = raw["base_model"][key][:, :100]
    with pytest.raises(ValueError, match=r"encoder\.blocks\.1\.local\.mlp\.fc2\.weight"):
        load_official(raw, **SIZE)
    raw = _copy(linear_raw)
    del raw["base_model"]["module.img_pos"]
    with pytest.raises(ValueError, match=r"not in the checkpoint: 'encoder\.img_pos'"):
        load_official(raw, **SIZE)


def test_teacher_keys_of_ckpt_last_are_ignored(pretrain_raw):
    raw = _copy(pretrain_raw)
    raw["base_model"]["module.img_encoder.cls_token"] = torch.zeros(1, 1, 768)
    raw["base_model"]["module.text_encoder.ln_final.weight"] = torch.zeros(512)
    assert isinstance(load_official(raw, num_heads=3), ReConPretrainer)


def test_kind_errors(pretrain_raw):
    with pytest.raises(ValueError, match="cannot tell the checkpoint kind"):
        load_official({"norm.weight": torch.zeros(3)})
    with pytest.raises(ValueError, match="part-segmentation"):
        load_official({"model_state_dict": {"label_conv.0.weight": torch.zeros(64, 16, 1)}})
    with pytest.raises(ValueError, match="kind must be"):
        load_official(pretrain_raw, kind="svm", num_heads=3)


def test_files_are_read_with_weights_only(tmp_path, pretrain_raw):
    path = tmp_path / "evil.pth"
    torch.save({"base_model": pretrain_raw["base_model"], "extra": ReConPretrainer}, path)
    with pytest.raises(pickle.UnpicklingError):
        load_official(path, num_heads=3)


def test_our_pretrainer_exported_under_reference_names_loads_back():
    torch.manual_seed(0)
    ours = ReConPretrainer(trans_dim=24, depth=2, num_heads=3, num_group=8, group_size=6)
    exported = {
        f"module.{to_official(k, 'pretrain')}": v.clone() for k, v in ours.state_dict().items()
    }
    back = load_official({"base_model": exported}, num_heads=3, num_group=8)
    for (ka, va), (kb, vb) in zip(
        ours.state_dict().items(), back.state_dict().items(), strict=True
    ):
        assert ka == kb and torch.equal(va, vb)
    pts = torch.randn(2, 32, 3)
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, :4] = True
    a = ours.eval()(pts, mask=mask).reconstruction.pred
    b = back(pts, mask=mask).reconstruction.pred
    assert torch.equal(a, b)
