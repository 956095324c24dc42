"""Chamfer L2/L1: values and gradients of every backend against the official vectors and a naive
dense formula."""

from __future__ import annotations

import pytest
import torch

from ops.ops_cases import DEVICES, DTYPES, blobs, load_ops
from recon_lightning import ops

CPU_BACKENDS = ["torch", "numba", "kdtree", "auto"]


def naive_chamfer(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(dist1, dist2) from the full differentiable distance matrix (fine at test sizes)."""
    d = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)
    return d.min(2).values, d.min(1).values


def tol(dtype: torch.dtype) -> dict[str, float]:
    # float64 fixtures: 1e-10 is the fixtures' recommended tolerance; float32 vs float64 values.
    return (
        {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    )


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_official_chamfer_vectors(official_dir, backend, dtype, kind):
    data = load_ops(official_dir)["chamfer"]
    x = data["xyz1"].to(dtype).requires_grad_()
    y = data["xyz2"].to(dtype).requires_grad_()
    fn = ops.chamfer_l2 if kind == "l2" else ops.chamfer_l1
    value = fn(x, y, backend=backend)
    gx, gy = torch.autograd.grad(value, (x, y))
    want = data[kind]
    torch.testing.assert_close(value.double(), want["value"], **tol(dtype))
    torch.testing.assert_close(gx.double(), want["grad_xyz1"], **tol(dtype))
    torch.testing.assert_close(gy.double(), want["grad_xyz2"], **tol(dtype))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_official_split_means(official_dir, backend):
    data = load_ops(official_dir)["chamfer"]
    d1, d2 = ops.nearest_sq_dists(data["xyz1"], data["xyz2"], backend)
    torch.testing.assert_close(d1.mean(), data["l2_split"]["dist1_mean"], rtol=1e-12, atol=0)
    torch.testing.assert_close(d2.mean(), data["l2_split"]["dist2_mean"], rtol=1e-12, atol=0)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "n", "m"), [(64, 32, 32), (2, 300, 170), (1, 1, 9)])
def test_values_and_gradients_match_naive(backend, dtype, b, n, m):
    x = blobs(b, n, dtype, seed=n).requires_grad_()
    y = (blobs(b, m, dtype, seed=m + 3) * 0.8).requires_grad_()
    for fn, naive in [
        (ops.chamfer_l2, lambda d1, d2: d1.mean() + d2.mean()),
        (ops.chamfer_l1, lambda d1, d2: (d1.sqrt().mean() + d2.sqrt().mean()) / 2),
    ]:
        got = fn(x, y, backend=backend)
        g = torch.autograd.grad(got, (x, y))
        want = naive(*naive_chamfer(x, y))
        w = torch.autograd.grad(want, (x, y))
        t = (
            {"rtol": 1e-12, "atol": 1e-12}
            if dtype == torch.float64
            else {"rtol": 1e-5, "atol": 1e-6}
        )
        torch.testing.assert_close(got, want, **t)
        torch.testing.assert_close(g[0], w[0], **t)
        torch.testing.assert_close(g[1], w[1], **t)


@pytest.mark.parametrize("backend", ["torch", "numba", "kdtree"])
def test_gradcheck(backend):
    x = blobs(2, 6, seed=1).requires_grad_()
    y = blobs(2, 5, seed=2).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, c: ops.chamfer_l2(a, c, backend), (x, y))
    assert torch.autograd.gradcheck(lambda a, c: ops.chamfer_l1(a, c, backend), (x, y))


def test_identical_sets_give_zero():
    x = blobs(3, 50, seed=4)
    assert ops.chamfer_l2(x, x.flip(1)).item() == 0.0


@pytest.mark.parametrize("device", DEVICES)
def test_auto_on_device(device):
    x = blobs(4, 64, torch.float32, seed=5).to(device).requires_grad_()
    y = blobs(4, 48, torch.float32, seed=6).to(device)
    loss = ops.chamfer_l2(x, y)
    loss.backward()
    assert loss.device.type == device and x.grad.device.type == device
    want = ops.chamfer_l2(x.detach().cpu().double(), y.cpu().double(), backend="torch")
    torch.testing.assert_close(loss.detach().cpu().double(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("x", "y", "err", "match"),
    [
        (torch.rand(2, 4, 3), torch.rand(3, 4, 3), ValueError, "different batch sizes"),
        (torch.rand(4, 3), torch.rand(4, 3), ValueError, r"pred must have shape"),
        (torch.rand(2, 4, 3), torch.rand(2, 4, 2), ValueError, "target must have 3"),
        (torch.rand(0, 4, 3), torch.rand(0, 4, 3), ValueError, "empty batch"),
        (torch.rand(1, 4, 3), torch.full((1, 4, 3), float("inf")), ValueError, "non-finite"),
        (torch.rand(1, 0, 3), torch.rand(1, 4, 3), ValueError, r"no points \(N = 0\)"),
    ],
)
def test_errors(x, y, err, match):
    with pytest.raises(err, match=match):
        ops.chamfer_l2(x, y)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown chamfer backend 'cdist'"):
        ops.chamfer_l1(torch.rand(1, 2, 3), torch.rand(1, 5, 3), backend="cdist")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "kdtree", "auto"])
def test_mid_size_cloud_against_torch(backend):
    x = torch.randn(2, 3000, 3, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 2500, 3, dtype=torch.float64)
    got = ops.chamfer_l2(x, y, backend)
    (g,) = torch.autograd.grad(got, x)
    want = ops.chamfer_l2(x, y, "torch")
    (w,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)
    torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("backend", ["torch", "numba"])
@pytest.mark.parametrize("side", [5, 9])  # 125 points: fused sweep; 729: tree search
def test_exact_ties_take_the_lowest_index(backend, side):
    """Grid points half-way between two others: the gradient goes to the lower-index neighbour,
    as in the reference kernel (both numba paths and torch's argmin)."""
    g = torch.arange(side, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g, g)
    grid = grid[torch.randperm(len(grid), generator=torch.Generator().manual_seed(1))][None]
    x = (grid[:, ::3] + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)).requires_grad_()
    y = grid.clone().requires_grad_()
    got = torch.autograd.grad(ops.chamfer_l2(x, y, backend), (x, y))
    d = ((x[:, :, None] - y[:, None]) ** 2).sum(-1)
    i1 = torch.sort(d, dim=2, stable=True).indices[..., 0]
    i2 = torch.sort(d, dim=1, stable=True).indices[:, 0]
    want_loss = ((x - y[:, i1[0]]) ** 2).sum(-1).mean() + ((y - x[:, i2[0]]) ** 2).sum(-1).mean()
    want = torch.autograd.grad(want_loss, (x, y))
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-15)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=1e-15)
