"""The point ops inside autocast: distances stay float32 whatever autocast's dtype, so indices
equal those of a float32 run outside autocast, and returned distances are float32."""

from __future__ import annotations

import pytest
import torch

from ops.ops_cases import blobs, on_cuda
from recon_lightning import ops

CPU_BACKENDS = ["auto", "torch", "numba", "kdtree"]


def bf16(device: str = "cpu") -> torch.autocast:
    return torch.autocast(device, dtype=torch.bfloat16)


def test_bfloat16_distances_would_pick_wrong_neighbours():
    """Why the ops turn autocast off: the dense path's matmul in bfloat16 (8 significant bits)
    picks other neighbours for a sizeable share of queries at the datasets' scale."""
    points = blobs(2, 512, torch.float32, seed=1)
    query = blobs(2, 64, torch.float32, seed=2)

    def dense_topk(q: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        d = (q * q).sum(-1, keepdim=True) - 2.0 * q @ p.transpose(1, 2) + (p * p).sum(-1)[:, None]
        return d.topk(8, dim=-1, largest=False).indices.sort(-1).values

    with bf16():
        in_bf16 = dense_topk(query, points)
    assert (in_bf16 != dense_topk(query, points)).float().mean() > 0.02


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("k", [1, 8])
def test_knn_under_cpu_autocast(backend, k):
    points = blobs(2, 512, torch.float32, seed=1)
    query = blobs(2, 64, torch.float32, seed=2)
    want_d, want_idx = ops.knn(query, points, k, backend)
    with bf16():
        d, idx = ops.knn(query, points, k, backend)
    assert d.dtype == torch.float32
    assert torch.equal(idx, want_idx)
    torch.testing.assert_close(d, want_d, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["auto", "torch", "numba"])
def test_fps_under_cpu_autocast(backend):
    pts = blobs(2, 600, torch.float32, seed=3)
    want = ops.fps(pts, 32, backend=backend)
    with bf16():
        assert torch.equal(ops.fps(pts, 32, backend=backend), want)
        # A half-precision cloud made under autocast is searched in float32.
        half = pts.bfloat16()
        assert torch.equal(ops.fps(half, 32, backend=backend), ops.fps(half.float(), 32))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_chamfer_under_cpu_autocast(backend):
    x = blobs(4, 300, torch.float32, seed=4).requires_grad_()
    y = blobs(4, 280, torch.float32, seed=5)
    for fn in (ops.chamfer_l2, ops.chamfer_l1):
        want = fn(x, y, backend=backend)
        (want_g,) = torch.autograd.grad(want, x)
        with bf16():
            got = fn(x, y, backend=backend)
        (got_g,) = torch.autograd.grad(got, x)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        torch.testing.assert_close(got_g, want_g, rtol=0, atol=0)


def test_chamfer_of_a_bfloat16_prediction_under_autocast():
    """A decoder's output under autocast is bfloat16, the target float32: the loss is computed
    in float32 (as autocast's own ``cdist``) and its gradient reaches the decoder."""
    torch.manual_seed(0)
    decoder = torch.nn.Linear(16, 3 * 64)
    feat = torch.randn(4, 16)
    target = blobs(4, 64, torch.float32, seed=6)
    with bf16():
        pred = decoder(feat).view(4, 64, 3)
        assert pred.dtype == torch.bfloat16
        loss = ops.chamfer_l2(pred, target)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, ops.chamfer_l2(pred.detach().float(), target))
    loss.backward()
    assert decoder.weight.grad is not None and bool(decoder.weight.grad.abs().sum() > 0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_interpolation_and_group_under_cpu_autocast(backend):
    dst = blobs(2, 256, torch.float32, seed=7)
    src = blobs(2, 64, torch.float32, seed=8)
    feat = torch.randn(2, 64, 16)
    want = ops.three_nn_interpolate(dst, src, feat, backend=backend)
    want_nbh, want_center = ops.group(dst, 16, 8, backend=backend)
    with bf16():
        out = ops.three_nn_interpolate(dst, src, feat, backend=backend)
        nbh, center = ops.group(dst, 16, 8, backend=backend)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    assert torch.equal(center, want_center) and torch.equal(nbh, want_nbh)


@pytest.mark.usefixtures("interpret")
def test_triton_under_cpu_autocast():
    points = blobs(2, 120, torch.float32, seed=9)
    query = blobs(2, 30, torch.float32, seed=10)
    want_idx = ops.knn(query, points, 4, "triton")[1]
    want_fps = ops.fps(points, 16, backend="triton")
    want_cd = ops.chamfer_l2(query, points, backend="triton")
    with bf16():
        assert torch.equal(ops.knn(query, points, 4, "triton")[1], want_idx)
        assert torch.equal(
            ops.fps(points.bfloat16(), 16, backend="triton"),
            ops.fps(points.bfloat16().float(), 16, backend="triton"),
        )
        assert torch.equal(ops.fps(points, 16, backend="triton"), want_fps)
        got_cd = ops.chamfer_l2(query, points, backend="triton")
    assert got_cd.dtype == torch.float32
    torch.testing.assert_close(got_cd, want_cd, rtol=0, atol=0)


@on_cuda
@pytest.mark.parametrize("n", [1024, 16384])  # dense torch below the size threshold, fast above
def test_cuda_bfloat16_autocast(n):
    points = blobs(4, n, torch.float32, seed=11).cuda()
    query = blobs(4, n // 4, torch.float32, seed=12).cuda()
    want_d, want_idx = ops.knn(query, points, 8)
    want_fps = ops.fps(points, 64)
    want_cd = ops.chamfer_l2(query, points)
    with bf16("cuda"):
        d, idx = ops.knn(query, points, 8)
        fps = ops.fps(points, 64)
        cd = ops.chamfer_l2(query, points)
    assert d.dtype == cd.dtype == torch.float32
    assert torch.equal(idx, want_idx) and torch.equal(fps, want_fps)
    torch.testing.assert_close(d, want_d, rtol=0, atol=0)
    torch.testing.assert_close(cd, want_cd, rtol=0, atol=0)
