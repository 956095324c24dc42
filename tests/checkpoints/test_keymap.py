"""Key renaming between the reference's checkpoints and our models, both ways."""

from __future__ import annotations

import json

import pytest
import torch

from recon_lightning.checkpoints import official_names, rules_for, to_official, to_ours
from recon_lightning.models import (
    ReConClassifier,
    ReConEncoder,
    ReConPretrainer,
    ReConZeroShot,
)

SMALL = {"trans_dim": 24, "depth": 2, "num_heads": 3, "num_group": 8, "group_size": 6}


@pytest.fixture(scope="module")
def base_keys(official_dir):
    return json.loads((official_dir / "g_base_keys" / "checkpoint_keys.json").read_text())


@pytest.mark.parametrize(
    ("name", "kind", "head_type"),
    [
        ("pretrain_in21k_ckpt-epoch", "pretrain", None),
        ("pretrain_clip_ckpt-epoch", "pretrain", None),
        ("classifier_full_40", "classification", "full"),
        ("classifier_linear_15", "classification", "linear"),
        ("zeroshot_model_state_dict", "downstream", None),
    ],
)
def test_every_reference_key_round_trips(base_keys, name, kind, head_type):
    for key, _, _ in base_keys[name]["base_model"]:
        key = key.removeprefix("module.")
        ours = to_ours(key, kind, head_type)
        assert ours is not None, key
        assert to_official(ours, kind, head_type) == key


def _our_models():
    with torch.device("meta"):
        return [
            (ReConPretrainer(**SMALL, self_contrastive=True), "pretrain", None),
            (ReConClassifier(cls_dim=5, head_type="full", **SMALL), "classification", "full"),
            (ReConClassifier(cls_dim=5, head_type="linear", **SMALL), "classification", "linear"),
            (ReConZeroShot("full", **SMALL), "downstream", None),
            (ReConEncoder(**SMALL), "encoder", None),
        ]


def test_every_key_of_our_models_has_a_reference_name():
    for model, kind, head_type in _our_models():
        for key in model.state_dict():
            ref = to_official(key, kind, head_type)
            assert ref is not None, (type(model).__name__, key)
            assert to_ours(ref, kind, head_type) == key


def test_renaming_examples():
    assert to_ours("MAE_encoder.blocks.blocks.11.attn_contrast.kv.weight", "pretrain") == (
        "encoder.blocks.11.queries.attn.kv.weight"
    )
    assert to_ours("MAE_encoder.blocks.blocks.3.attn.qkv.weight", "pretrain") == (
        "encoder.blocks.3.local.attn.qkv.weight"
    )
    assert to_ours("encoder.first_conv.1.running_var", "classification") == (
        "encoder.patch_embed.bn1.running_var"
    )
    assert to_ours("cls_head_finetune.8.bias", "classification", "full") == "head.out.bias"
    assert to_ours("cls_head_finetune.0.bias", "classification", "linear") == "head.out.bias"
    assert to_ours("mask_token", "pretrain") == "decoder.mask_token"
    assert to_ours("increase_dim.0.weight", "pretrain") == "recon_head.proj.weight"


def test_unplaceable_keys():
    # A leaf under a known module passes the renaming; check_fits then finds no place for it.
    assert to_ours("MAE_encoder.norm.extra", "pretrain") == "encoder.norm.extra"
    assert to_ours("cls_token_extra", "classification") is None
    assert to_ours("img_encoder.cls_token", "pretrain") is None
    with pytest.raises(KeyError, match="no reference name"):
        official_names(["head.nonexistent.weight"], "pretrain")
    with pytest.raises(ValueError, match="kind"):
        rules_for("segmentation")


def test_official_names_can_strip_the_encoder_root():
    keys = ["encoder.cls_token", "decoder.mask_token"]
    assert official_names(keys, "pretrain") == ["MAE_encoder.cls_token", "mask_token"]
    assert official_names(keys, "pretrain", strip_encoder_root=True) == ["cls_token", "mask_token"]
