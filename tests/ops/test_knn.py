"""k nearest neighbours: every backend against a naive search and the official vectors."""

from __future__ import annotations

import pytest
import torch

from ops.ops_cases import DEVICES, DTYPES, blobs, load_ops
from recon_lightning import ops
from recon_lightning.ops.knn import knn_indices_numba

CPU_BACKENDS = ["torch", "numba", "kdtree"]


def naive_knn(query: torch.Tensor, points: torch.Tensor, k: int):
    """Full distance matrix from coordinate differences and a stable sort: (dists, idx)."""
    d = ((query[:, :, None, :] - points[:, None, :, :]) ** 2).sum(-1)
    dist, idx = torch.sort(d, dim=-1, stable=True)
    return dist[..., :k], idx[..., :k]


def assert_same_neighbours(d, idx, want_d, want_idx, exact_sets: bool):
    """Distances equal (float tolerance); index sets equal when the data has no near-ties."""
    tol = 1e-12 if d.dtype == torch.float64 else 1e-5
    torch.testing.assert_close(d, want_d, rtol=tol, atol=tol)
    assert bool((d[..., 1:] >= d[..., :-1]).all()), "not sorted nearest first"
    if exact_sets:
        assert torch.equal(idx.sort(-1).values, want_idx.sort(-1).values)


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_official_knn_vectors(official_dir, backend, dtype):
    data = load_ops(official_dir)["knn"]
    _, idx = ops.knn(data["new_xyz"].to(dtype), data["xyz"].to(dtype), data["k"], backend)
    # The stored inputs have no distance ties: the sets, and here the order, are exact.
    assert torch.equal(idx.sort(-1).values, data["idx_sorted"].sort(-1).values)


@pytest.mark.parametrize("backend", [*CPU_BACKENDS, "auto"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "m", "n", "k"), [(3, 40, 300, 8), (2, 17, 33, 33), (1, 5, 7, 1)])
def test_backends_match_naive(backend, dtype, b, m, n, k):
    points = blobs(b, n, dtype, seed=n)
    query = blobs(b, m, dtype, seed=m + 1) * 1.1
    d, idx = ops.knn(query, points, k, backend)
    want_d, want_idx = naive_knn(query.double(), points.double(), k)
    assert d.shape == idx.shape == (b, m, k) and idx.dtype == torch.long
    assert_same_neighbours(d, idx, want_d.to(dtype), want_idx, exact_sets=dtype == torch.float64)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_gradients_flow_to_both_inputs(backend):
    points = blobs(2, 64, seed=7).requires_grad_()
    query = (blobs(2, 16, seed=8) * 0.9).requires_grad_()
    d, idx = ops.knn(query, points, 5, backend)
    w = torch.rand_like(d)
    gq, gp = torch.autograd.grad((d * w).sum(), (query, points))
    # Same neighbours, distances written out directly: the gradients must agree exactly.
    nbr = points[torch.arange(2)[:, None, None], idx]
    want = (((nbr - query[:, :, None]) ** 2).sum(-1) * w).sum()
    wq, wp = torch.autograd.grad(want, (query, points))
    torch.testing.assert_close(gq, wq, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gp, wp, rtol=1e-12, atol=1e-12)


def test_kdtree_batch_shift_keeps_clouds_apart():
    """One tree serves the batch: clouds far off-centre and of different scales must only ever
    find neighbours in their own cloud, with the same result as a search per cloud."""
    points = blobs(4, 200, seed=9)
    points[1] += 50.0
    points[2] *= 1e3
    points[3] = points[0] + 1e-3  # an almost identical neighbour cloud
    query = points[:, ::7] + 1e-4
    d, idx = ops.knn(query, points, 6, "kdtree")
    want_d, want_idx = naive_knn(query, points, 6)
    assert_same_neighbours(d, idx, want_d, want_idx, exact_sets=True)


@pytest.mark.parametrize("tree", [False, True])
@pytest.mark.parametrize("b", [1, 3])
def test_numba_paths_follow_distance_then_index_order(tree, b):
    """On an integer grid (countless exact ties) both numba paths, and both tree kernels (one
    cloud per thread for b=3, queries in parallel for b=1), return exactly the (distance, index)
    order of a stable sort."""
    g = torch.arange(6, dtype=torch.float64)
    grid = torch.cartesian_prod(g, g, g)[
        torch.randperm(216, generator=torch.Generator().manual_seed(0))
    ]
    points = grid.expand(b, -1, -1).contiguous()
    query = (points[:, ::5] + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)).contiguous()
    for k in (1, 7):
        idx = knn_indices_numba(query, points, k, tree=tree)
        assert torch.equal(idx, naive_knn(query, points, k)[1])


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_duplicate_points_tie_to_lower_index_first(backend):
    points = torch.tensor([[[1.0, 0, 0], [0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]]]).double()
    query = torch.tensor([[[1.0, 0, 0]]]).double()
    d, idx = ops.knn(query, points, 3, backend)
    assert torch.equal(d, torch.tensor([[[0.0, 0.0, 1.0]]]).double())
    assert set(idx[0, 0, :2].tolist()) == {0, 2} and idx[0, 0, 2].item() == 1


@pytest.mark.parametrize("device", DEVICES)
def test_auto_on_device(device):
    points = blobs(2, 128, torch.float32, seed=10).to(device)
    d, idx = ops.knn(points[:, :16], points, 4)
    assert d.device.type == device and idx.device.type == device
    want_d, _ = naive_knn(points[:, :16].cpu().double(), points.cpu().double(), 4)
    torch.testing.assert_close(d.cpu().double(), want_d, rtol=1e-5, atol=1e-6)


def test_half_precision_input():
    points = blobs(1, 64, torch.float32, seed=11)
    d, idx = ops.knn(points[:, :8].half(), points.half(), 3, "numba")
    assert d.dtype == torch.float16 and idx.shape == (1, 8, 3)
    assert torch.equal(idx[..., 0], torch.arange(8).view(1, 8))


@pytest.mark.parametrize(
    ("query", "points", "k", "err", "match"),
    [
        (torch.rand(2, 4, 3), torch.rand(2, 10, 3), 11, ValueError, r"k must be in \[1, N=10\]"),
        (torch.rand(2, 4, 3), torch.rand(2, 10, 3), 0, ValueError, "k must be in"),
        (torch.rand(2, 4, 3), torch.rand(3, 10, 3), 2, ValueError, "different batch sizes"),
        (torch.rand(4, 3), torch.rand(2, 10, 3), 2, ValueError, r"query must have shape"),
        (torch.rand(2, 4, 3), torch.rand(2, 10, 4), 2, ValueError, "points must have 3"),
        (torch.rand(0, 4, 3), torch.rand(0, 10, 3), 2, ValueError, "empty batch"),
        (torch.rand(2, 4, 3), torch.rand(2, 10, 3).double(), 2, TypeError, "different dtypes"),
        (torch.full((1, 2, 3), float("nan")), torch.rand(1, 10, 3), 2, ValueError, "non-finite"),
    ],
)
def test_errors(query, points, k, err, match):
    with pytest.raises(err, match=match):
        ops.knn(query, points, k)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown knn backend 'cuda'"):
        ops.knn(torch.rand(1, 2, 3), torch.rand(1, 5, 3), 2, backend="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("backend", ["numba", "kdtree"])
def test_cpu_backends_refuse_cuda_tensors(backend):
    x = torch.rand(1, 10, 3, device="cuda")
    with pytest.raises(ValueError, match="runs on CPU tensors"):
        ops.knn(x, x, 2, backend=backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numba", "kdtree", "auto"])
def test_large_cloud_against_torch(backend):
    points = torch.randn(1, 20_000, 3, dtype=torch.float64)
    query = points[:, :500] + 0.01
    d, idx = ops.knn(query, points, 16, backend)
    want_d, want_idx = ops.knn(query, points, 16, "torch")
    assert_same_neighbours(d, idx, want_d, want_idx, exact_sets=True)
