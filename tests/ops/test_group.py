"""Grouping (the tokenizer's FPS + kNN patches) against the official pretraining case."""

from __future__ import annotations

import pytest
import torch

from ops.ops_cases import DEVICES, DTYPES, blobs
from recon_lightning import ops


def by_distance(nbh: torch.Tensor) -> torch.Tensor:
    """Sort each patch's points by distance to the center (order inside a patch is undefined)."""
    order = (nbh * nbh).sum(-1).argsort(-1)
    return torch.gather(nbh, -2, order.unsqueeze(-1).expand_as(nbh))


@pytest.fixture(scope="module")
def pretrain(official_dir) -> dict:
    path = official_dir / "a_pretrain" / "data.pt"
    return torch.load(path, weights_only=True, map_location="cpu")


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_official_group_divider(pretrain, backend, dtype):
    pts = pretrain["inputs"]["points"].to(dtype)
    nbh, center = ops.group(pts, 16, 8, backend=backend)
    assert nbh.shape == (3, 16, 8, 3) and center.shape == (3, 16, 3)
    t = {"rtol": 0, "atol": 0} if dtype == torch.float64 else {"rtol": 1e-6, "atol": 1e-6}
    want_center = pretrain["eval"]["center"].to(dtype)
    torch.testing.assert_close(center, want_center, **t)
    want = by_distance(pretrain["eval"]["neighborhood"].to(dtype))
    torch.testing.assert_close(by_distance(nbh), want, **t)


def test_group_matches_its_definition():
    """Centers are the FPS points; patches are the k nearest points minus their center, nearest
    first, and the center itself is the first point of its own patch."""
    pts = blobs(2, 200, seed=3)
    nbh, center = ops.group(pts, 10, 12)
    idx = ops.fps(pts, 10, backend="torch")
    assert torch.equal(center, ops.gather_points(pts, idx))
    d = ((pts[:, None, :, :] - center[:, :, None, :]) ** 2).sum(-1)
    want_d = d.sort(-1).values[..., :12]
    torch.testing.assert_close((nbh * nbh).sum(-1), want_d, rtol=1e-12, atol=1e-14)
    assert torch.equal(nbh[:, :, 0], torch.zeros_like(nbh[:, :, 0]))


@pytest.mark.parametrize("device", DEVICES)
def test_group_on_device(device):
    pts = blobs(2, 128, torch.float32, seed=4).to(device)
    nbh, center = ops.group(pts, 8, 16)
    assert nbh.device.type == device and center.device.type == device
    ref_nbh, ref_center = ops.group(pts.cpu(), 8, 16, backend="torch")
    torch.testing.assert_close(center.cpu(), ref_center)
    torch.testing.assert_close(by_distance(nbh.cpu()), by_distance(ref_nbh), rtol=1e-5, atol=1e-6)


def test_group_gradients_reach_the_points():
    pts = blobs(1, 64, seed=5).requires_grad_()
    nbh, center = ops.group(pts, 4, 8)
    (nbh.sum() + center.sum()).backward()
    assert pts.grad is not None and bool(torch.isfinite(pts.grad).all())


@pytest.mark.parametrize(
    ("num_group", "group_size", "err", "match"),
    [
        (65, 8, ValueError, r"n must be in \[1, N=64\]"),
        (4, 65, ValueError, "group_size=65 exceeds the number of points N=64"),
        (4, 0, ValueError, "k must be in"),
    ],
)
def test_errors(num_group, group_size, err, match):
    with pytest.raises(err, match=match):
        ops.group(torch.rand(2, 64, 3), num_group, group_size)
