"""ReConClassifier and the zero-shot model: heads, timm-style split, head names, freezing."""

from __future__ import annotations

import pytest
import torch

from recon_lightning.models import (
    ReConClassifier,
    ReConZeroShot,
    build_classifier,
    build_zeroshot,
    classification_features,
)

SMALL = {"trans_dim": 24, "depth": 2, "num_heads": 3, "num_group": 8, "group_size": 6}


def points(b: int = 3) -> torch.Tensor:
    return torch.randn(b, 40, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("head_type", ["full", "mlp3", "linear"])
def test_logits_and_timm_style_split(head_type):
    torch.manual_seed(0)
    model = ReConClassifier(cls_dim=7, head_type=head_type, **SMALL).eval()
    pts = points()
    feats = model.forward_features(pts)
    assert feats.shape == (3, 4 * 24)
    torch.testing.assert_close(feats, classification_features(model.forward_encoder(pts)))
    logits = model(pts)
    assert logits.shape == (3, 7)
    torch.testing.assert_close(logits, model.forward_head(feats))
    assert model.forward_head(feats, pre_logits=True) is feats


def test_head_layers_per_type():
    full = ReConClassifier(cls_dim=5, head_type="full", **SMALL)
    linear = ReConClassifier(cls_dim=5, head_type="linear", **SMALL)
    assert [n for n, _ in full.head.named_parameters()] == [
        "fc1.weight", "fc1.bias", "bn1.weight", "bn1.bias",
        "fc2.weight", "fc2.bias", "bn2.weight", "bn2.bias", "out.weight", "out.bias",
    ]  # fmt: skip
    assert full.head.fc1.in_features == 96 and full.head.out.out_features == 5
    assert [n for n, _ in linear.head.named_parameters()] == ["out.weight", "out.bias"]
    with pytest.raises(ValueError, match="head_type"):
        ReConClassifier(head_type="deep", **SMALL)


def test_cls_token_starts_at_zero_other_queries_do_not():
    model = ReConClassifier(**SMALL)
    assert not model.encoder.cls_token.any()
    assert model.encoder.img_token.any() and model.encoder.cls_pos.any()


def test_head_parameter_names_and_freeze_backbone():
    model = ReConClassifier(cls_dim=5, head_type="linear", **SMALL)
    names = model.head_parameter_names()
    assert names == ["encoder.cls_token", "encoder.cls_pos", "head.out.weight", "head.out.bias"]
    model.freeze_backbone()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable == names
    nwd = model.no_weight_decay()
    assert "encoder.cls_token" in nwd and nwd <= {n for n, _ in model.named_parameters()}


def test_backbone_gets_gradient_in_finetuning():
    """No stop-gradient downstream: the classification loss reaches the mini-PointNet."""
    model = ReConClassifier(cls_dim=4, **SMALL).train()
    logits = model(points(4))
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 3])).backward()
    assert model.encoder.patch_embed.conv1_1.weight.grad.any()
    assert model.encoder.blocks[0].local.attn.qkv.weight.grad.any()


def test_reference_config_names_build_a_classifier():
    cfg = {"NAME": "PointTransformer", "encoder_dims": 24, "cls_dim": 3, "type": "mlp3"}
    model = build_classifier(**{**SMALL, **cfg})
    assert model.head_type == "mlp3" and model.cls_dim == 3
    with pytest.raises(ValueError, match="encoder_dims"):
        build_classifier(**{**SMALL, "encoder_dims": 32})
    with pytest.raises(TypeError, match="mask_ratio"):
        build_classifier(**SMALL, mask_ratio=0.6)


@pytest.mark.parametrize(("feature_type", "dim"), [("text", 12), ("image", 20), ("full", 12)])
def test_zeroshot_feature_types(feature_type, dim):
    img_dim = 20 if feature_type == "image" else 12
    torch.manual_seed(0)
    model = ReConZeroShot(feature_type, ratio=0.3, img_dim=img_dim, text_dim=12, **SMALL).eval()
    pts = points()
    feats = model(pts)
    assert feats.shape == (3, dim)
    out = model.encoder(pts)
    if feature_type == "full":
        expected = 0.3 * model.text_proj(out.text) + model.img_proj(out.img)
        torch.testing.assert_close(feats, expected)
    assert (model.img_proj is None) == (feature_type == "text")
    assert (model.text_proj is None) == (feature_type == "image")


def test_zeroshot_full_needs_matching_teacher_spaces():
    with pytest.raises(ValueError, match="CLIP image teacher"):
        ReConZeroShot("full", img_dim=768, text_dim=512, **SMALL)
    model = build_zeroshot(**SMALL, type="full", img_encoder="ViT-B/32", text_encoder="ViT-B/32")
    assert model.img_proj.out_features == model.text_proj.out_features == 512
