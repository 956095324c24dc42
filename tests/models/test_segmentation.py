"""ReConPartSegmentation: sizes, outputs, gradients, the propagation/head rewrites, loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recon_lightning.checkpoints import load_pretrained, to_official
from recon_lightning.models import (
    VARIANTS,
    FeaturePropagation,
    ReConPartSegmentation,
    ReConPretrainer,
    SegmentationHead,
    build_partseg,
    default_feature_blocks,
    recon_partseg,
)

#: A small model whose blocks are all used (3 blocks, features from each).
SMALL = {"trans_dim": 24, "depth": 3, "num_heads": 3, "num_group": 8, "group_size": 6}
B, N = 2, 48


def inputs(b: int = B, n: int = N, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, 3, generator=g), torch.randint(0, 16, (b,), generator=g)


@pytest.fixture(scope="module")
def small() -> ReConPartSegmentation:
    torch.manual_seed(0)
    return ReConPartSegmentation(num_parts=7, **SMALL).eval()


def test_output_shapes_and_intermediates(small):
    pts, cat = inputs()
    feats = small.forward_features(pts, cat)
    c, lc = 24, 3 * 24
    assert small.feature_blocks == (0, 1, 2)
    assert feats.center.shape == (B, 8, 3)
    assert feats.local.shape == (B, 8, lc)
    assert feats.x_max.shape == feats.x_avg.shape == (B, lc)
    assert feats.global_tokens.shape == (B, 3, c)
    assert feats.label_feature.shape == (B, 64)
    assert feats.point_features.shape == (B, 1024, N)
    assert feats.global_feature.shape == (B, 2 * lc + c + 64)
    out = small(pts, cat)
    assert out.shape == (B, N, 7)
    torch.testing.assert_close(out, small.forward_head(feats))
    # The query outputs of the last block before the final LayerNorm, as the reference takes.
    torch.testing.assert_close(feats.global_tokens, feats.encoder.hidden_queries[-1])


def test_log_probs_are_normalised(small):
    out = small(*inputs())
    torch.testing.assert_close(out.exp().sum(-1), torch.ones(B, N))
    assert (out <= 0).all()


@pytest.mark.parametrize("variant", ["recon_tiny", "recon_small"])
def test_size_variants(variant):
    """Widths follow trans_dim: (2·3 + 1)·C + 64 global channels, 3·C + 3 propagation input."""
    c = VARIANTS[variant]["trans_dim"]
    model = recon_partseg(variant.removeprefix("recon_"), num_group=16, group_size=8).eval()
    assert model.encoder.trans_dim == c and model.feature_blocks == (3, 7, 11)
    assert model.propagation.convs[0].in_channels == 3 * c + 3
    assert model.propagation.convs[0].out_channels == 4 * c
    assert model.head.conv1.in_channels == 1024 + 7 * c + 64
    pts, cat = inputs(n=64)
    with torch.no_grad():
        assert model(pts, cat).shape == (B, 64, 50)


def test_base_config_matches_the_reference_parameter_count():
    with torch.device("meta"):
        model = recon_partseg()
    assert sum(p.numel() for p in model.parameters()) == 48_542_386
    assert model.head.conv1.in_channels == 3776
    assert model.propagation.convs[0].in_channels == 1155
    assert model.encoder.num_group == 128 and model.encoder.group_size == 32
    assert model.feature_blocks == default_feature_blocks(12) == (3, 7, 11)


def test_build_partseg_takes_reference_names():
    with torch.device("meta"):
        model = build_partseg(cls_dim=12, encoder_dims=24, **SMALL)
    assert model.num_parts == 12 and model.head.out.out_channels == 12
    with pytest.raises(ValueError, match="contradicts"):
        build_partseg(cls_dim=12, num_parts=13, **SMALL)


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    model = ReConPartSegmentation(num_parts=7, **SMALL).train()
    pts, cat = inputs()
    labels = torch.randint(0, 7, (B, N))
    loss = F.nll_loss(model(pts, cat).transpose(1, 2), labels)
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # Biases of convolutions that feed a train-mode BatchNorm get (numerically) zero gradient.
    feeds_bn = {
        "encoder.patch_embed.conv1_1.bias",
        "encoder.patch_embed.conv2_1.bias",
        "propagation.convs.0.bias",
        "propagation.convs.1.bias",
        "head.conv1.bias",
        "head.conv2.bias",
    }
    assert feeds_bn <= set(dict(model.named_parameters()))
    zero = [n for n, p in model.named_parameters() if not p.grad.any() and n not in feeds_bn]
    assert zero == []


def test_no_weight_decay_and_head_parameter_names(small):
    names = dict(small.named_parameters())
    nwd = small.no_weight_decay()
    assert nwd == {f"encoder.{q}_{k}" for q in ("cls", "img", "text") for k in ("token", "pos")}
    assert nwd <= set(names)
    # The reference's 10x-lr group: names with ``conv`` but not ``encoder`` (segmentation/main.py).
    official = {n: to_official(n, "partseg") for n in names}
    expected = [n for n in names if "conv" in official[n] and "encoder" not in official[n]]
    assert small.head_parameter_names() == expected
    assert "label_embed.bn.weight" in expected and "head.bn1.weight" not in expected


def test_category_as_labels_or_one_hot(small):
    pts, cat = inputs()
    out = small(pts, cat)
    torch.testing.assert_close(small(pts, F.one_hot(cat, 16).float()), out)
    with pytest.raises(ValueError, match="category"):
        small(pts, cat.float())
    with pytest.raises(ValueError, match="batch"):
        small(pts, cat[:1])


def test_feature_block_validation():
    assert default_feature_blocks(6) == (1, 3, 5)
    with pytest.raises(ValueError, match="feature_blocks"):
        ReConPartSegmentation(**{**SMALL, "depth": 2})
    with pytest.raises(ValueError, match="feature_blocks"):
        ReConPartSegmentation(feature_blocks=(0, 3), **SMALL)
    model = ReConPartSegmentation(feature_blocks=(1, 2), **SMALL)
    assert model.propagation.convs[0].in_channels == 2 * 24 + 3
    assert model.head.conv1.in_channels == 1024 + 5 * 24 + 64


def _reference_propagation(
    prop: FeaturePropagation, xyz: torch.Tensor, centers: torch.Tensor, feats: torch.Tensor
) -> torch.Tensor:
    """The reference's ``PointNetFeaturePropagation``: dense distances, sort, concat, then MLP."""
    d = -2 * xyz @ centers.transpose(1, 2)
    d = d + (xyz**2).sum(-1, keepdim=True) + (centers**2).sum(-1).unsqueeze(1)
    dists, idx = d.sort(dim=-1)
    dists, idx = dists[:, :, :3], idx[:, :, :3]
    w = 1.0 / (dists + 1e-8)
    w = w / w.sum(2, keepdim=True)
    gathered = torch.stack([f[i] for f, i in zip(feats, idx, strict=True)])  # (B, N, 3, F)
    interp = (gathered * w.unsqueeze(-1)).sum(2)
    x = torch.cat([xyz, interp], dim=-1).transpose(1, 2)
    for conv, bn in zip(prop.convs, prop.bns, strict=True):
        x = F.relu(bn(conv(x)))
    return x


def test_propagation_equals_interpolate_then_mlp():
    """Applying the first layer at the centres is the reference's order up to rounding."""
    torch.manual_seed(2)
    prop = FeaturePropagation(10, (12, 8)).double().eval()
    for bn in prop.bns:  # non-trivial statistics
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 1.5)
    xyz = torch.randn(2, 30, 3, dtype=torch.float64)
    centers = xyz[:, :6].clone()  # the centres are input points: d² = 0 for those
    feats = torch.randn(2, 6, 10, dtype=torch.float64)
    ours = prop(xyz, centers, feats)
    assert ours.shape == (2, 8, 30)
    torch.testing.assert_close(ours, _reference_propagation(prop, xyz, centers, feats))


def test_head_equals_repeat_and_concat():
    torch.manual_seed(3)
    head = SegmentationHead(6, 5, num_parts=4, hidden_dims=(8, 7)).double().eval()
    pf = torch.randn(2, 6, 11, dtype=torch.float64)
    gf = torch.randn(2, 5, dtype=torch.float64)
    x = torch.cat([pf, gf.unsqueeze(-1).expand(-1, -1, 11)], dim=1)
    x = F.relu(head.bn1(head.conv1(x)))
    x = F.relu(head.bn2(head.conv2(x)))
    expected = F.log_softmax(head.out(x), dim=1).transpose(1, 2)
    torch.testing.assert_close(head(pf, gf), expected)


def test_propagation_keeps_no_point_by_centre_matrix():
    """Autograd holds nothing of size B·N·G (the reference keeps a dense distance matrix)."""
    n, g = 300, 17
    prop = FeaturePropagation(5, (4,)).train()
    xyz, centers = torch.randn(2, n, 3), torch.randn(2, g, 3)
    feats = torch.randn(2, g, 5, requires_grad=True)
    held: list[int] = []  # elements each saved tensor stores (sparse: its nonzeros)

    def pack(t: torch.Tensor) -> torch.Tensor:
        held.append(t._nnz() if t.is_sparse else t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        prop(xyz, centers, feats).sum().backward()
    assert held and max(held) < 2 * n * g, held
    assert feats.grad is not None and feats.grad.any()


def test_dtype_mismatch_is_refused(small):
    pts, cat = inputs()
    with pytest.raises(TypeError, match="float64"):
        small(pts.double(), cat)


def test_load_pretrained_from_our_pretraining_checkpoint(tmp_path):
    torch.manual_seed(4)
    pre = ReConPretrainer(**SMALL, img_dim=16, text_dim=16)
    path = tmp_path / "last.ckpt"
    state = {f"model.{k}": v for k, v in pre.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 2}, path)
    model = ReConPartSegmentation(**SMALL)
    report = load_pretrained(model, path)
    enc, src = model.encoder.state_dict(), pre.encoder.state_dict()
    assert list(enc) == list(src) and all(torch.equal(enc[k], src[k]) for k in enc)
    heads = ("label_embed.", "propagation.", "head.")
    assert report.missing == [
        k for k in model.state_dict() if k.startswith(heads) and "num_batches" not in k
    ]
    assert {k.split(".")[0] for k in report.unexpected} == {
        "decoder",
        "recon_head",
        "img_proj",
        "text_proj",
    }
