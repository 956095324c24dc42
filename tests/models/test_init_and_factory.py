"""Reference initialisation (spec §2.11) and the size-variant factory."""

from __future__ import annotations

import pytest
import torch

from recon_lightning.models import (
    VARIANTS,
    ReConClassifier,
    ReConPretrainer,
    create_model,
    normalize_config,
    recon_base,
    recon_small,
    recon_tiny,
)


@pytest.fixture(scope="module")
def pretrainer() -> ReConPretrainer:
    torch.manual_seed(0)
    return ReConPretrainer(trans_dim=192, depth=2, num_heads=3, decoder_depth=2)


def test_encoder_init_is_trunc_normal_002(pretrainer):
    enc = pretrainer.encoder
    w = torch.cat(
        [enc.blocks[0].local.attn.qkv.weight.flatten(), enc.patch_embed.conv2_1.weight.flatten()]
    )
    # timm truncates at an absolute ±2 (as in the reference), i.e. effectively a plain normal.
    assert w.std().item() == pytest.approx(0.02, rel=0.05) and w.mean().abs() < 0.001
    assert not enc.blocks[0].local.mlp.fc1.bias.any() and not enc.patch_embed.conv1_1.bias.any()
    assert torch.equal(enc.norm.weight, torch.ones(192)) and not enc.norm.bias.any()
    for p in (enc.cls_token, enc.img_token, enc.cls_pos, enc.text_pos):
        assert 0.005 < p.std().item() < 0.05


def test_decoder_init_is_xavier(pretrainer):
    w = pretrainer.decoder.blocks[0].mlp.fc1.weight  # (768, 192)
    bound = (6 / (192 + 768)) ** 0.5
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound
    assert not pretrainer.decoder.blocks[0].attn.proj.bias.any()
    assert 0.005 < pretrainer.decoder.mask_token.std().item() < 0.05


def test_projection_init_keeps_the_reference_mean_002(pretrainer):
    w = pretrainer.img_proj.weight
    assert w.mean().item() == pytest.approx(0.02, abs=0.001)
    assert w.std().item() == pytest.approx(0.01, rel=0.05)
    assert not pretrainer.img_proj.bias.any() and not pretrainer.text_proj.bias.any()


def test_variants_and_factory():
    assert VARIANTS["recon_base"] == {"trans_dim": 384, "num_heads": 6, "depth": 12}
    with torch.device("meta"):
        for fn, dim in ((recon_tiny, 192), (recon_small, 256), (recon_base, 384)):
            model = fn(cls_dim=15)
            assert isinstance(model, ReConClassifier) and model.encoder.trans_dim == dim
        pre = create_model("recon_small", "pretrainer", img_dim=512)
        assert isinstance(pre, ReConPretrainer) and pre.img_proj.out_features == 512
        wide = create_model("recon_tiny", "encoder", encoder_dims=96, num_heads=3)
        assert wide.trans_dim == 96
    with pytest.raises(ValueError, match="variant"):
        create_model("recon_huge")
    with pytest.raises(ValueError, match="kind"):
        create_model("recon_tiny", "segmenter")


def test_normalize_config_reads_reference_yaml_sections():
    cfg = normalize_config(
        "pretrainer",
        {
            "NAME": "ReCon",
            "group_size": 32,
            "transformer_config": {"trans_dim": 384, "encoder_dims": 384, "mask_type": "rand"},
            "img_encoder": "vit_base_patch16_224_in21k",
            "text_encoder": "ViT-B/32",
        },
    )
    assert cfg == {
        "group_size": 32,
        "trans_dim": 384,
        "mask_type": "rand",
        "img_dim": 768,
        "text_dim": 512,
    }
    assert normalize_config("classifier", {"type": "linear"}) == {"head_type": "linear"}
    assert normalize_config("zeroshot", {"type": "text"}) == {"feature_type": "text"}
    with pytest.raises(ValueError, match="unknown teacher"):
        normalize_config("pretrainer", {"img_encoder": "resnet50"})
