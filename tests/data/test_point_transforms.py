"""Batch point transforms: geometry, ranges, sampling sizes and membership, reproducibility."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recon_lightning.data import transforms as T
from recon_lightning.ops import furthest_point_sample


def _clouds(b: int = 4, n: int = 50, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, generator=g)


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r) for r in x.tolist()}


def test_rotate_y_matches_reference_matrix_and_preserves_norms() -> None:
    pts = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]]])
    out = T.rotate_y(pts, angle=torch.tensor([math.pi / 2]))
    # Reference: xyz @ [[c, 0, s], [0, 1, 0], [-s, 0, c]] -> x axis goes to +z, z axis to -x.
    expected = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 2.0, 0.0], [-1.0, 0.0, 0.0]]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)

    clouds = _clouds()
    rotated = T.rotate_y(clouds)
    torch.testing.assert_close(rotated.norm(dim=-1), clouds.norm(dim=-1))
    torch.testing.assert_close(rotated[..., 1], clouds[..., 1])  # y is the axis


def test_rotate_y_draws_one_angle_per_cloud() -> None:
    same = _clouds(b=1).expand(6, -1, -1).contiguous()
    out = T.rotate_y(same, generator=torch.Generator().manual_seed(3))
    # Identical inputs, different outputs: every cloud got its own angle.
    assert len({round(v, 5) for v in out[:, 0, 0].tolist()}) == 6


def test_rotate_y_leaves_extra_channels() -> None:
    pts = _clouds(c=6)
    out = T.rotate_y(pts)
    torch.testing.assert_close(out[..., 3:], pts[..., 3:])
    assert not torch.allclose(out[..., :3], pts[..., :3])


@pytest.mark.parametrize("fn", [T.scale, T.scale_and_translate])
def test_anisotropic_scale_range(fn) -> None:
    pts = _clouds(b=64, n=8) + 3.0  # keep coordinates away from zero for the ratio
    if fn is T.scale:
        out = fn(pts)
        factors = out / pts
    else:
        out = fn(pts, translate_range=0.0)
        factors = out / pts
    # One factor per cloud and axis, shared by all its points.
    torch.testing.assert_close(factors, factors[:, :1].expand_as(factors), rtol=1e-5, atol=1e-5)
    f = factors[:, 0]
    assert f.min() >= 2 / 3 - 1e-5 and f.max() <= 3 / 2 + 1e-5
    # Anisotropic: the three axes get different factors.
    assert (f[:, 0] - f[:, 1]).abs().max() > 1e-3


def test_scale_and_translate_shift_range() -> None:
    pts = torch.zeros(64, 5, 3)
    out = T.scale_and_translate(pts, translate_range=0.2)
    shift = out[:, 0]
    torch.testing.assert_close(out, shift[:, None].expand_as(out))
    assert shift.abs().max() <= 0.2 + 1e-6 and shift.abs().max() > 0.05


def test_translate_range() -> None:
    out = T.translate(torch.zeros(32, 4, 3), translate_range=0.1)
    assert out.abs().max() <= 0.1 + 1e-6


def test_generator_makes_draws_reproducible() -> None:
    pts = _clouds()
    for fn in (T.rotate_y, T.scale, T.scale_and_translate):
        a = fn(pts, generator=torch.Generator().manual_seed(7))
        b = fn(pts, generator=torch.Generator().manual_seed(7))
        torch.testing.assert_close(a, b)


def test_normalize_unit_sphere_torch_and_numpy() -> None:
    pts = _clouds() * 4 + 2
    out = T.normalize_unit_sphere(pts)
    torch.testing.assert_close(out.mean(dim=1), torch.zeros(4, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.norm(dim=-1).amax(dim=1), torch.ones(4))
    single = T.normalize_unit_sphere_np(pts[0].numpy())
    np.testing.assert_allclose(single, out[0].numpy(), atol=1e-5)
    assert single.dtype == np.float32
    # A degenerate cloud is centred, not turned into NaNs.
    flat = T.normalize_unit_sphere(torch.ones(1, 5, 3))
    assert torch.isfinite(flat).all()


@pytest.mark.parametrize(
    ("npoints", "available", "expected"),
    [(1024, 8192, 1200), (2048, 2048, 2048), (4096, 8192, 4800), (8192, 8192, 8192), (32, 64, 38)],
)
def test_point_all_for(npoints: int, available: int, expected: int) -> None:
    assert T.point_all_for(npoints, available) == expected


def test_point_all_for_rejects_too_many_points() -> None:
    with pytest.raises(ValueError, match="exceeds"):
        T.point_all_for(1024, 512)


def test_fps_sample_is_deterministic_fps_gather() -> None:
    pts = _clouds(c=6)
    out = T.fps_sample(pts, 10)
    idx = furthest_point_sample(pts[..., :3].contiguous(), 10)
    expected = torch.stack([pts[b, idx[b]] for b in range(pts.shape[0])])
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(T.fps_sample(pts, 10), out)


def test_random_subset_without_replacement_shared_and_per_cloud() -> None:
    b, n = 3, 40
    # Encode the point index in x so subsets can be read back as indices.
    pts = torch.arange(n, dtype=torch.float32).view(1, n, 1).expand(b, n, 3).contiguous()
    shared = T.random_subset(pts, 25, shared=True)
    assert shared.shape == (b, 25, 3)
    idx = shared[..., 0].long()
    assert all(len(set(row.tolist())) == 25 for row in idx)  # no repeats
    assert all(torch.equal(idx[0], row) for row in idx)  # one draw for the batch (reference)
    per_cloud = T.random_subset(pts, 25, shared=False, generator=torch.Generator().manual_seed(0))
    pidx = per_cloud[..., 0].long()
    assert all(len(set(row.tolist())) == 25 for row in pidx)
    assert not all(torch.equal(pidx[0], row) for row in pidx)


def test_fps_then_subset_sizes_and_membership() -> None:
    pts = _clouds(b=2, n=80)
    out = T.fps_then_subset(pts, 32)  # point_all = ceil(32 * 1200 / 1024) = 38
    assert out.shape == (2, 32, 3)
    pool = T.fps_sample(pts, 38)
    for b in range(2):
        assert _rows(out[b]) <= _rows(pool[b])
        assert len(_rows(out[b])) == 32


def test_vote_views_fps_once_then_subsets_and_transform() -> None:
    pts = _clouds(b=2, n=80)
    flip = lambda x, generator=None: -x  # noqa: E731 - an exact, visible test-time transform
    views = T.vote_views(pts, 32, times=4, transform=flip)
    assert len(views) == 4 and all(v.shape == (2, 32, 3) for v in views)
    pool = T.fps_sample(pts, 38)
    for v in views:
        assert _rows(-v[0]) <= _rows(pool[0])
    assert not torch.equal(views[0], views[1])  # fresh subset per view


def test_get_batch_transform() -> None:
    assert T.get_batch_transform("rotate_y") is T.rotate_y
    pts = _clouds()
    assert T.get_batch_transform("none")(pts) is pts
    with pytest.raises(ValueError, match="unknown point transform"):
        T.get_batch_transform("jitter")
