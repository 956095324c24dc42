"""Furthest point sampling: every backend against a naive loop and the official kernel vectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ops.ops_cases import DEVICES, DTYPES, blobs, load_ops
from recon_lightning import ops
from recon_lightning.ops.fps import furthest_point_sample_numba, furthest_point_sample_torch

#: The official cases whose result is defined (``ties_mod_block`` depends on the CUDA block
#: reduction order on exact ties, which the issue leaves out).
OFFICIAL_CASES = ["gaussian_64", "uniform_300", "shell_with_origin", "ties_cube"]


def naive_fps(xyz: np.ndarray, n: int, skip_origin: bool = True) -> np.ndarray:
    """The kernel's loop written out for one cloud (N, 3), in the input's float type."""
    x, y, z = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    mag = (x * x + y * y + z * z).astype(np.float64)
    eligible = mag > 1e-3 if skip_origin else np.ones(len(xyz), bool)
    temp = np.full(len(xyz), 1e10, dtype=xyz.dtype)
    out = [0]
    for _ in range(1, n):
        q = xyz[out[-1]]
        d = (x - q[0]) * (x - q[0]) + (y - q[1]) * (y - q[1]) + (z - q[2]) * (z - q[2])
        temp = np.minimum(temp, d)
        best, besti = -1.0, 0
        for k in range(len(xyz)):
            if eligible[k] and temp[k] > best:
                best, besti = temp[k], k
        out.append(besti)
    return np.array(out)


def all_backends(xyz: torch.Tensor, n: int, skip_origin: bool = True) -> dict[str, torch.Tensor]:
    """Indices from every path (the numba tree and plain loop forced) on a CPU tensor."""
    return {
        "torch": furthest_point_sample_torch(xyz, n, skip_origin),
        "numba-loop": furthest_point_sample_numba(xyz, n, skip_origin, tree=False),
        "numba-tree": furthest_point_sample_numba(xyz, n, skip_origin, tree=True),
        "auto": ops.furthest_point_sample(xyz, n, skip_origin=skip_origin),
    }


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OFFICIAL_CASES)
def test_official_fps_vectors(official_dir, case, dtype):
    data = load_ops(official_dir)["fps"][case]
    pts = data["points"].to(dtype)  # exactly representable in float32
    for name, idx in all_backends(pts, data["npoint"]).items():
        assert torch.equal(idx, data["fps_idx"]), name
    for name, idx in all_backends(pts, data["npoint"], skip_origin=False).items():
        assert torch.equal(idx, data["fps_idx_plain_argmax"]), name
    centers = ops.gather_points(pts, data["fps_idx"])
    torch.testing.assert_close(centers, data["centers"].to(dtype), rtol=0, atol=0)


def test_official_skip_rule_changes_the_result(official_dir):
    """The shell case has near-origin points that plain FPS takes: the default must not."""
    data = load_ops(official_dir)["fps"]["shell_with_origin"]
    idx = ops.fps(data["points"], data["npoint"])
    taken = data["points"][0, idx[0, 1:]]
    assert bool(((taken * taken).sum(-1) > 1e-3).all())
    assert not torch.equal(data["fps_idx"], data["fps_idx_plain_argmax"])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("skip_origin", [True, False])
def test_backends_match_naive_loop(dtype, skip_origin):
    pts = blobs(3, 300, dtype, seed=1)
    # Padding-like points at the origin and a few inside the skip radius, point 0 among them.
    pts[0, :40] = 0.0
    pts[1, 5:15] = 0.01 * pts[1, 5:15]
    pts[2, 0] = torch.tensor([0.02, 0.0, 0.0], dtype=dtype)
    for b in range(3):
        want = naive_fps(pts[b].numpy(), 64, skip_origin)
        for name, idx in all_backends(pts, 64, skip_origin).items():
            np.testing.assert_array_equal(idx[b].numpy(), want, err_msg=name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tree_equals_plain_loop_on_larger_clouds(dtype):
    """The pruned tree is exact, not approximate: index-identical on clouds of 5k points with
    many more samples than leaves, duplicated points and a flat (2-D) part."""
    pts = blobs(2, 5000, dtype, seed=2)
    pts[0, 4000:] = pts[0, :1000]  # exact duplicates
    pts[1, :2000, 2] = 0.25  # a plane
    loop = furthest_point_sample_numba(pts, 1500, tree=False)
    tree = furthest_point_sample_numba(pts, 1500, tree=True)
    assert torch.equal(loop, tree)
    assert torch.equal(loop[:, :200], furthest_point_sample_torch(pts, 200))


def test_all_points_sampled_and_exhausted_candidates():
    """n = N: every eligible point exactly once; once they run out the lowest eligible index
    repeats (all running minima are 0), as in the kernel."""
    pts = blobs(1, 50, seed=3)
    pts[0, 10:20] = 0.0  # ten skipped points (plus point 0 maybe)
    eligible = set(torch.nonzero((pts[0] ** 2).sum(-1) > 1e-3).flatten().tolist())
    for name, idx in all_backends(pts, 50).items():
        taken = idx[0, 1 : 1 + len(eligible)].tolist()
        assert set(taken) == eligible, name
        assert idx[0, 1 + len(eligible) :].tolist() == [min(eligible)] * (49 - len(eligible))


def test_no_eligible_point_returns_zeros():
    pts = torch.zeros(2, 20, 3)
    pts[1] = 1e-3 * torch.randn(20, 3)
    for name, idx in all_backends(pts, 7).items():
        assert torch.equal(idx, torch.zeros(2, 7, dtype=torch.long)), name


def test_initial_running_minimum_caps_huge_distances():
    """Distances above the kernel's 1e10 start value stay capped: with every point at least
    1e5 away from point 0, the first pick is the lowest-index eligible point (a tie at 1e10)."""
    pts = torch.tensor([[[0.0, 0.0, 0.0], [2e5, 0, 0], [3e5, 0, 0], [-4e5, 0, 0]]])
    for name, idx in all_backends(pts.double(), 2, skip_origin=False).items():
        assert idx[0].tolist() == [0, 1], name


def test_half_precision_and_noncontiguous_input():
    pts = blobs(2, 200, torch.float32, seed=4)
    want = furthest_point_sample_torch(pts, 32)
    strided = torch.cat([pts, pts], dim=-1)[..., :3]
    assert not strided.is_contiguous()
    assert torch.equal(ops.fps(strided, 32), want)
    assert ops.fps(pts.half(), 32).shape == (2, 32)


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_gather(device):
    pts = blobs(2, 256, torch.float32, seed=5).to(device)
    idx = ops.fps(pts, 16)
    assert idx.device.type == device and idx.dtype == torch.long
    assert torch.equal(idx.cpu(), ops.fps(pts.cpu(), 16, backend="torch"))
    centers = ops.gather_points(pts, idx)
    assert torch.equal(centers, pts[torch.arange(2, device=device)[:, None], idx])


@pytest.mark.parametrize(
    ("xyz", "n", "err", "match"),
    [
        (torch.rand(2, 10, 3), 11, ValueError, r"n must be in \[1, N=10\]"),
        (torch.rand(2, 10, 3), 0, ValueError, "n must be in"),
        (torch.rand(2, 10, 3), 2.0, TypeError, "n must be an integer"),
        (torch.rand(10, 3), 2, ValueError, r"xyz must have shape \(B, N, 3\)"),
        (torch.rand(2, 10, 2), 2, ValueError, "3 coordinates"),
        (torch.rand(0, 10, 3), 2, ValueError, "empty batch"),
        (torch.randint(0, 5, (2, 10, 3)), 2, TypeError, "floating-point"),
        (torch.tensor([[[0.0, 1, 2], [float("nan"), 0, 0]]]), 1, ValueError, "non-finite"),
        (torch.tensor([[[0.0, 1, 2], [float("inf"), 0, 0]]]), 1, ValueError, "non-finite"),
    ],
)
def test_errors(xyz, n, err, match):
    with pytest.raises(err, match=match):
        ops.fps(xyz, n)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown furthest_point_sample backend 'kdtree'"):
        ops.fps(torch.rand(1, 10, 3), 2, backend="kdtree")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_numba_backend_refuses_cuda_tensors():
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        ops.fps(torch.rand(1, 10, 3, device="cuda"), 2, backend="numba")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
def test_tree_matches_loop_at_100k(dtype):
    pts = torch.randn(1, 100_000, 3, dtype=dtype)
    tree = furthest_point_sample_numba(pts, 4096, tree=True)
    assert torch.equal(tree, furthest_point_sample_numba(pts, 4096, tree=False))


def test_huge_but_finite_coordinates_are_accepted():
    """The finiteness check sums first; a sum that overflows must not be taken for an inf."""
    pts = torch.full((1, 8, 3), 3e38)
    pts[0, ::2] *= -1
    pts[0, 0] = 0.0
    pts[0, 1] = 3e38  # the sum overflows to inf although every coordinate is finite
    assert not torch.isfinite(pts.sum())
    assert ops.fps(pts, 3).shape == (1, 3)
