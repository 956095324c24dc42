"""Inverse-distance 3-NN feature propagation against a naive dense version."""

from __future__ import annotations

import pytest
import torch

from ops.ops_cases import DEVICES, DTYPES, blobs
from recon_lightning import ops


def naive_interpolate(dst: torch.Tensor, src: torch.Tensor, feat: torch.Tensor) -> torch.Tensor:
    d = ((dst[:, :, None] - src[:, None]) ** 2).sum(-1)
    d3, idx = d.topk(3, dim=-1, largest=False)
    w = 1.0 / (d3 + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    nbr = feat[torch.arange(dst.shape[0])[:, None, None], idx]  # (B, N, 3, C)
    return (nbr * w.unsqueeze(-1)).sum(2)


@pytest.mark.parametrize("backend", ["auto", "torch", "numba", "kdtree"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_matches_naive_values_and_feature_gradients(backend, dtype):
    dst = blobs(2, 100, dtype, seed=1)
    src = blobs(2, 20, dtype, seed=2)
    feat = torch.randn(2, 20, 7, dtype=dtype, requires_grad=True)
    out = ops.three_nn_interpolate(dst, src, feat, backend=backend)
    want = naive_interpolate(dst, src, feat)
    t = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    torch.testing.assert_close(out, want, **t)
    g = torch.rand_like(out)
    (got,) = torch.autograd.grad(out, feat, g)
    (exp,) = torch.autograd.grad(want, feat, g)
    torch.testing.assert_close(got, exp, **t)


def test_source_points_get_their_own_feature():
    src = blobs(1, 30, seed=3)
    feat = torch.randn(1, 30, 4, dtype=torch.float64)
    out = ops.three_nn_interpolate(src, src, feat)
    # Own weight 1/1e-8 against 1/d² of the next two: they get at most 1e-8 / d²_min each.
    d = ((src[0, :, None] - src[0, None]) ** 2).sum(-1) + torch.eye(30, dtype=torch.float64)
    bound = 2 * 1e-8 / d.min() * feat.abs().max() * 2
    torch.testing.assert_close(out, feat, rtol=0, atol=float(bound))


def test_half_features_and_strided_input():
    dst = blobs(2, 40, torch.float32, seed=6)
    src = blobs(2, 12, torch.float32, seed=7)
    feat = torch.randn(2, 12, 8)
    want = naive_interpolate(dst, src, feat)
    strided = torch.randn(2, 8, 12).transpose(1, 2)  # (B, S, C), not contiguous
    torch.testing.assert_close(
        ops.three_nn_interpolate(dst, src, strided), naive_interpolate(dst, src, strided)
    )
    half = ops.three_nn_interpolate(dst, src, feat.half())
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.float(), want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_on_device(device):
    dst = blobs(1, 50, torch.float32, seed=4).to(device)
    src = blobs(1, 10, torch.float32, seed=5).to(device)
    feat = torch.randn(1, 10, 3, device=device)
    out = ops.three_nn_interpolate(dst, src, feat)
    assert out.shape == (1, 50, 3) and out.device.type == device
    torch.testing.assert_close(out.cpu(), naive_interpolate(dst.cpu(), src.cpu(), feat.cpu()))


@pytest.mark.parametrize(
    ("dst", "src", "feat", "err", "match"),
    [
        (torch.rand(1, 5, 3), torch.rand(1, 2, 3), torch.rand(1, 2, 4), ValueError, "k must be in"),
        (torch.rand(1, 5, 3), torch.rand(1, 6, 3), torch.rand(1, 5, 4), ValueError, "features_src"),
        (torch.rand(1, 5, 3), torch.rand(1, 6, 3), torch.rand(6, 4), ValueError, "features_src"),
        (torch.rand(1, 5, 3), torch.rand(2, 6, 3), torch.rand(2, 6, 4), ValueError, "batch sizes"),
        (torch.rand(1, 5, 3), torch.rand(1, 6, 3), torch.ones(1, 6, 4).long(), TypeError, "float"),
    ],
)
def test_errors(dst, src, feat, err, match):
    with pytest.raises(err, match=match):
        ops.three_nn_interpolate(dst, src, feat)
