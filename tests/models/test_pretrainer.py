"""ReConPretrainer: loss terms, drawn masks, SMC option, reconstruction output, stop-gradient."""

from __future__ import annotations

import pytest
import torch

from conftest import cuda
from recon_lightning.models import ReConPretrainer, build_pretrainer

SMALL = {
    "trans_dim": 24,
    "depth": 2,
    "num_heads": 3,
    "num_group": 8,
    "group_size": 6,
    "decoder_depth": 1,
    "drop_path_rate": 0.0,
    "img_dim": 20,
    "text_dim": 12,
}


def model(**kw) -> ReConPretrainer:
    torch.manual_seed(0)
    return ReConPretrainer(**{**SMALL, **kw})


def batch(b: int = 4):
    g = torch.Generator().manual_seed(1)
    pts = torch.randn(b, 48, 3, generator=g)
    return pts, torch.randn(b, 20, generator=g), torch.randn(b, 12, generator=g)


def test_losses_returns_the_four_terms_and_their_sum():
    pts, img, text = batch()
    losses = model().losses(pts, img, text)
    assert set(losses) == {"chamfer", "img", "text", "total"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    total = losses["chamfer"] + losses["img"] + losses["text"]
    torch.testing.assert_close(losses["total"], total)


def test_mask_none_draws_int_ratio_g_per_row_from_torch_rng():
    m = model(mask_ratio=0.6)
    pts, img, text = batch()
    torch.manual_seed(3)
    a = m(pts, img, text)
    torch.manual_seed(3)
    b = m(pts, img, text)
    assert torch.equal(a.reconstruction.mask, b.reconstruction.mask)
    assert (a.reconstruction.mask.sum(1) == int(0.6 * 8)).all()
    assert a.encoder.local.shape == (4, 8 - 4, 24)


def test_given_mask_is_used():
    m = model()
    pts, img, text = batch()
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[:, 1:5] = True
    out = m(pts, img, text, mask=mask)
    assert torch.equal(out.reconstruction.mask, mask)
    assert torch.equal(out.reconstruction.masked_centers(), out.encoder.centers[:, 1:5])


def test_reconstruction_shapes_and_placement():
    pts, _, _ = batch()
    rec = model().reconstruct(pts)
    m = int(0.6 * 8)
    assert rec.pred.shape == rec.target.shape == (4, m, 6, 3)
    assert not rec.pred.requires_grad
    assert rec.predicted_points().shape == (4, m * 6, 3)
    assert rec.visible_points().shape == (4, (8 - m) * 6, 3)
    # Visible + masked true patches are exactly the grouped points.
    true_masked = (rec.target + rec.masked_centers().unsqueeze(2)).flatten(1, 2)
    grouped = (rec.neighborhood + rec.centers.unsqueeze(2)).flatten(1, 2)
    together = torch.cat([rec.visible_points(), true_masked], 1)
    assert torch.equal(together.sort(1).values, grouped.sort(1).values)


def test_distillation_only_trains_the_global_stream():
    m = model().train()
    pts, img, text = batch()
    out = m(pts, img, text)
    (out.losses["img"] + out.losses["text"]).backward()
    for name, p in m.named_parameters():
        local = name.startswith(("encoder.patch_embed", "encoder.pos_embed", "decoder", "recon"))
        local = local or ".local." in name or name in ("encoder.cls_token", "encoder.cls_pos")
        if local:
            assert p.grad is None or not p.grad.any(), name
    assert m.img_proj.weight.grad.any() and m.encoder.text_token.grad.any()


def test_self_contrastive_adds_smc_and_needs_labels():
    m = model(self_contrastive=True)
    pts, img, text = batch()
    with pytest.raises(ValueError, match="labels"):
        m.losses(pts, img, text)
    losses = m.losses(pts, img, text, labels=torch.tensor([0, 1, 0, 2]))
    assert set(losses) == {"chamfer", "img", "text", "smc", "total"}
    total = losses["chamfer"] + losses["img"] + losses["text"] + losses["smc"]
    torch.testing.assert_close(losses["total"], total)
    assert m.cls_proj(torch.randn(4, 24)).shape == (4, 128)


def test_targets_are_required_for_enabled_heads_and_checked():
    m = model()
    pts, img, text = batch()
    with pytest.raises(ValueError, match="img_target"):
        m.losses(pts, None, text)
    with pytest.raises(ValueError, match="img_dim"):
        m.losses(pts, torch.zeros(4, 768), text)
    no_img = model(img_dim=None)
    assert no_img.img_proj is None
    assert set(no_img.losses(pts, None, text)) == {"chamfer", "text", "total"}


def test_cdl1_option():
    pts, img, text = batch()
    a = model(loss="cdl1").losses(pts, img, text, mask=None)
    assert torch.isfinite(a["chamfer"])
    with pytest.raises(ValueError, match="loss"):
        model(loss="emd")


@pytest.mark.parametrize("ratio", [0.0, 0.1])
def test_mask_ratio_must_leave_masked_and_visible_patches(ratio):
    with pytest.raises(ValueError, match="masked and one visible"):
        model(mask_ratio=ratio)


def test_block_masking_runs():
    pts, img, text = batch()
    out = model(mask_type="block")(pts, img, text)
    assert (out.reconstruction.mask.sum(1) == 4).all()


def test_no_weight_decay_and_reference_yaml_config():
    m = build_pretrainer(
        NAME="ReCon",
        group_size=6,
        num_group=8,
        loss="cdl2",
        transformer_config={
            "mask_ratio": 0.6,
            "mask_type": "rand",
            "trans_dim": 24,
            "encoder_dims": 24,
            "depth": 2,
            "drop_path_rate": 0.1,
            "num_heads": 3,
            "decoder_depth": 1,
            "decoder_num_heads": 3,
        },
        img_encoder="ViT-B/32",
        text_encoder="ViT-B/32",
        self_contrastive=False,
    )
    assert m.img_proj.out_features == 512 and m.text_proj.out_features == 512
    names = dict(m.named_parameters())
    assert m.no_weight_decay() <= set(names)
    assert "decoder.mask_token" in m.no_weight_decay()


@cuda
def test_pretrainer_on_cuda_matches_cpu():
    m = model().eval()
    pts, img, text = batch()
    mask = torch.zeros(4, 8, dtype=torch.bool)
    mask[:, ::2] = True
    cpu = m.losses(pts, img, text, mask=mask)
    gpu = m.cuda().losses(pts.cuda(), img.cuda(), text.cuda(), mask=mask.cuda())
    for key, value in cpu.items():
        torch.testing.assert_close(gpu[key].cpu(), value, rtol=1e-4, atol=1e-5)
