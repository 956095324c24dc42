"""ReConEncoder: shapes per size variant, masking, stop-gradient, dtypes, devices, input errors."""

from __future__ import annotations

import pytest
import torch

from conftest import cuda
from recon_lightning.models import (
    MiniPointNet,
    ReConEncoder,
    Tokens,
    create_model,
    select_visible,
)

SMALL = {"trans_dim": 24, "depth": 2, "num_heads": 3, "num_group": 8, "group_size": 6}


def encoder(stop_grad: bool = False, dtype: torch.dtype = torch.float64) -> ReConEncoder:
    torch.manual_seed(0)
    return ReConEncoder(**SMALL, drop_path_rate=0.0, stop_grad=stop_grad).to(dtype).eval()


def cloud(b: int = 2, n: int = 40, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(2)
    return torch.randn(b, n, 3, generator=g, dtype=torch.float64).to(dtype)


@pytest.mark.parametrize(
    ("variant", "dim", "heads"),
    [("recon_tiny", 192, 3), ("recon_small", 256, 4), ("recon_base", 384, 6)],
)
def test_shapes_of_every_module(variant, dim, heads):
    with torch.device("meta"):
        full = create_model(variant, "encoder")
    assert (full.trans_dim, full.num_heads, len(full.blocks)) == (dim, heads, 12)
    # Width and heads make the variant; two blocks keep the forward cheap on CPU.
    enc = create_model(variant, "encoder", depth=2, num_group=8, group_size=6).eval()
    b, g, k = 2, 8, 6
    pts = cloud(b, 32, torch.float32)
    tok = enc.tokenize(pts)
    assert tok.neighborhood.shape == (b, g, k, 3) and tok.centers.shape == (b, g, 3)
    assert tok.tokens.shape == (b, g, dim)
    assert enc.pos_embed(tok.centers).shape == (b, g, dim)
    q, x = enc.blocks[0](torch.zeros(b, 3, dim), tok.tokens)
    assert q.shape == (b, 3, dim) and x.shape == (b, g, dim)
    mask = torch.zeros(b, g, dtype=torch.bool)
    mask[:, :5] = True
    out = enc.encode(tok, mask, return_hidden=True)
    assert out.cls.shape == out.img.shape == out.text.shape == (b, dim)
    assert out.local.shape == (b, g - 5, dim) and out.centers.shape == (b, g, 3)
    assert out.queries.shape == (b, 3, dim)
    assert len(out.hidden_states) == len(out.hidden_queries) == 2
    assert out.hidden_states[0].shape == (b, g - 5, dim)
    assert out.hidden_queries[-1].shape == (b, 3, dim)
    assert enc(pts).hidden_states is None


def test_masked_forward_equals_unmasked_forward_of_the_visible_patches():
    enc = encoder()
    tok = enc.tokenize(cloud())
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, [1, 4, 6]] = True
    mask[1, [0, 2, 7]] = True
    masked = enc.encode(tok, mask, return_hidden=True)
    visible = Tokens(
        select_visible(tok.tokens, mask), tok.neighborhood, select_visible(tok.centers, mask)
    )
    plain = enc.encode(visible, None, return_hidden=True)
    torch.testing.assert_close(masked.local, plain.local, rtol=0, atol=1e-14)
    for a, b in zip(masked.hidden_states, plain.hidden_states, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-14)
    torch.testing.assert_close(masked.queries, plain.queries, rtol=0, atol=1e-14)


def test_all_visible_mask_equals_no_mask():
    enc = encoder()
    pts = cloud()
    a = enc(pts, mask=torch.zeros(2, 8, dtype=torch.bool))
    b = enc(pts)
    torch.testing.assert_close(a.local, b.local, rtol=0, atol=0)
    torch.testing.assert_close(a.queries, b.queries, rtol=0, atol=0)


def test_visible_tokens_keep_fps_order():
    enc = encoder()
    out = enc(cloud(), mask=torch.tensor([[True, False] * 4, [False, True] * 4]))
    assert out.local.shape[1] == 4
    direct = enc(cloud())
    # With every patch visible the local outputs differ (more context), but order is FPS order:
    # the visible centres are the even / odd FPS centres.
    assert torch.equal(select_visible(direct.centers, out.mask)[0], direct.centers[0, 1::2])


LOCAL_PREFIXES = ("patch_embed.", "pos_embed.")


def _local_stream(name: str) -> bool:
    return name.startswith(LOCAL_PREFIXES) or ".local." in name


def test_stop_grad_leaves_every_local_parameter_without_gradient():
    enc = encoder(stop_grad=True).train()
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[:, ::2] = True
    out = enc(cloud(), mask=mask)
    (out.cls.sum() + out.img.square().sum() + out.text.abs().sum()).backward()
    local = [(n, p) for n, p in enc.named_parameters() if _local_stream(n)]
    assert len(local) > 20
    for name, p in local:
        assert p.grad is None or not p.grad.any(), name
    # The global stream and the shared final norm do learn.
    assert enc.blocks[0].queries.attn.q.weight.grad.any()
    assert enc.norm.weight.grad.any() and enc.img_token.grad.any()


def test_without_stop_grad_the_queries_train_the_local_stream():
    enc = encoder(stop_grad=False).train()
    out = enc(cloud())
    (out.cls.sum() + out.img.square().sum() + out.text.abs().sum()).backward()
    last = f"blocks.{len(enc.blocks) - 1}.local."
    for name, p in enc.named_parameters():
        if not _local_stream(name):
            continue
        # The last block's local attn/norm2/mlp feed no later query; everything else does.
        if name.startswith(last) and not name.startswith(last + "norm1"):
            assert p.grad is None or not p.grad.any(), name
        else:
            assert p.grad is not None and p.grad.any(), name


def test_float32_and_float64_agree():
    enc64 = encoder(dtype=torch.float64)
    enc32 = encoder(dtype=torch.float32)
    out64 = enc64(cloud(dtype=torch.float64))
    out32 = enc32(cloud(dtype=torch.float32))
    assert out32.local.dtype == torch.float32 and out64.local.dtype == torch.float64
    torch.testing.assert_close(out32.local.double(), out64.local, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out32.queries.double(), out64.queries, rtol=1e-4, atol=1e-5)


@cuda
def test_cuda_matches_cpu():
    enc = encoder(dtype=torch.float32)
    pts = cloud(dtype=torch.float32)
    cpu = enc(pts)
    gpu = enc.cuda()(pts.cuda())
    assert gpu.local.is_cuda
    torch.testing.assert_close(gpu.local.cpu(), cpu.local, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gpu.queries.cpu(), cpu.queries, rtol=1e-4, atol=1e-4)


def test_mini_pointnet_ignores_point_order_within_a_patch():
    torch.manual_seed(0)
    net = MiniPointNet(16).double().eval()
    patches = torch.randn(2, 5, 7, 3, dtype=torch.float64)
    perm = torch.randperm(7)
    torch.testing.assert_close(net(patches), net(patches[:, :, perm]), rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    ("points", "error", "match"),
    [
        (torch.zeros(2, 40, 2), ValueError, r"shape \(B, N, 3\)"),
        (torch.zeros(40, 3), ValueError, r"shape \(B, N, 3\)"),
        (torch.zeros(2, 5, 3), ValueError, "num_group=8"),
        (torch.zeros(2, 40, 3, dtype=torch.int64), TypeError, "floating-point"),
        (torch.zeros(2, 40, 3, dtype=torch.float32), TypeError, "model.to"),
        ([[0.0, 0.0, 0.0]], TypeError, "torch.Tensor"),
    ],
)
def test_bad_points_raise_clear_errors(points, error, match):
    with pytest.raises(error, match=match):
        encoder()(points)


def test_non_finite_points_raise():
    pts = cloud()
    pts[1, 3, 2] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        encoder()(pts)
    pts[1, 3, 2] = float("inf")
    with pytest.raises(ValueError, match="non-finite"):
        encoder()(pts)


def test_fewer_points_than_group_size_raises():
    enc = ReConEncoder(**{**SMALL, "num_group": 4, "group_size": 16}).double()
    with pytest.raises(ValueError, match="group_size=16"):
        enc(cloud(n=10))


def test_mask_must_hide_the_same_number_per_row():
    mask = torch.zeros(2, 8, dtype=torch.bool)
    mask[0, 0] = True
    with pytest.raises(ValueError, match="same number"):
        encoder()(cloud(), mask=mask)
    with pytest.raises(ValueError, match="bool tensor"):
        encoder()(cloud(), mask=mask.long())


def test_no_weight_decay_names_the_tokens_and_position_vectors():
    enc = encoder()
    names = dict(enc.named_parameters())
    nwd = enc.no_weight_decay()
    assert nwd == {f"{q}_{k}" for q in ("cls", "img", "text") for k in ("token", "pos")}
    assert all(names[n].shape == (1, 1, SMALL["trans_dim"]) for n in nwd)
