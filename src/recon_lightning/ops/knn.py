"""k nearest neighbours of query points among a point set, batched.

Every backend only *finds* the neighbour indices, without autograd; :func:`knn` then gathers the
neighbours and recomputes their squared distances with autograd, so gradients flow to both inputs
and no differentiable (B, M, N) matrix is ever held.

Backends (``backend=``):

* ``torch``: dense distances in bounded query blocks and ``topk``; any device, the reference.
* ``numba``: compiled, O(B·(N+M·k)) memory; CPU. Brute force for tiny sets, else an exact
  search in an O(N)-built Morton kd-tree (``_knn_numba``), clouds or queries spread over torch's
  threads.
* ``kdtree``: pykdtree, one tree for the whole batch; CPU.
* ``keops``: pykeops ``argKmin`` on a symbolic distance matrix; the first GPU path.
* ``triton``: fused distance tiles and a register top-k (``_triton_knn``), k <= 512; CUDA
  tensors, or any tensor under Triton's interpreter (``TRITON_INTERPRET=1``, tests).
* ``auto``: CPU -> ``numba``, which measured fastest at every benchmarked size
  (benchmarks/ops.py, docs/benchmarks-ops.md). CUDA -> ``torch`` while the dense (B, M, N)
  distance matrix fits in ``_CUDA_DENSE_MAX_BYTES``, else ``keops``, else ``triton``, else
  ``torch`` (one warning per backend that cannot load or compile). Other devices -> ``torch``.

Under autocast, half-precision coordinates are searched in float32 and the dense path's matmul
runs with autocast off (``_backend.full_precision``): a bfloat16 distance picks wrong neighbours.
"""

from __future__ import annotations

import numpy as np
import torch

from . import _triton
from ._backend import (
    as_numpy,
    autocast_off,
    check_backend,
    dense_bytes,
    full_precision,
    require_cpu,
    with_keops_fallback,
    with_triton_fallback,
)
from ._checks import check_count, check_points, check_same_batch
from ._parallel import ranges, run, threads
from .fps import gather_points

#: Elements of one dense distance block in the torch path (bounds peak memory).
_TORCH_BLOCK_ELEMS = 1 << 24
#: numba backend: brute force while N <= _BRUTE_MAX_N or fewer than _TREE_MIN_M queries per
#: cloud (a tree does not pay for its build there); measured crossover, docs/benchmarks-ops.md.
_BRUTE_MAX_N = 256
_TREE_MIN_M = 16
#: Points per leaf of the numba tree (32-64 measured flat).
_TREE_LEAF = 32
#: ``auto`` on CUDA: dense torch while the (B, M, N) distance matrix has at most this many bytes
#: (a few kernels, nothing to compile), KeOps or Triton above. Not measured yet (no GPU here);
#: ``benchmarks/ops.py --device cuda`` is the sweep that should set it.
_CUDA_DENSE_MAX_BYTES = 64 << 20

KNN_BACKENDS = ("auto", "torch", "numba", "kdtree", "keops", "triton")


def knn_indices_torch(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Reference path: dense squared distances in query blocks, ``topk`` smallest, sorted.

    Returns (B, M, k) int64 indices, nearest first (k=1: exact ties to the lowest index). Runs
    without autograd.
    """
    b, m, _ = query.shape
    n = points.shape[1]
    block = max(1, _TORCH_BLOCK_ELEMS // max(1, b * n))
    out = []
    with torch.no_grad(), autocast_off(query):
        p_sq = (points * points).sum(-1).unsqueeze(1)  # (B, 1, N)
        for s in range(0, m, block):
            q = query[:, s : s + block]
            d = (q * q).sum(-1, keepdim=True) - 2.0 * q @ points.transpose(1, 2) + p_sq
            if k == 1:  # argmin documents first-occurrence ties: the reference's lowest index
                out.append(d.argmin(-1, keepdim=True))
            else:
                out.append(d.topk(k, dim=-1, largest=False, sorted=True).indices)
    return torch.cat(out, dim=1)


def knn_indices_numba(
    query: torch.Tensor, points: torch.Tensor, k: int, tree: bool | None = None
) -> torch.Tensor:
    """Compiled path on CPU (see ``_knn_numba``); (B, M, k) int64, sorted by (distance, index).

    Args:
        tree: force the tree (True) or brute force (False); None picks by size.
    """
    from ._knn_numba import knn_brute, knn_tree_clouds, tree_prepare, tree_query_range

    q, p = as_numpy(query), as_numpy(points)
    b, m, n = q.shape[0], q.shape[1], p.shape[1]
    out = np.empty((b, m, k), np.int64)
    if tree is None:
        tree = n > _BRUTE_MAX_N and m >= _TREE_MIN_M
    if not tree:
        soa = np.ascontiguousarray(p.transpose(0, 2, 1))
        run(knn_brute, [(q, soa, k, t0, t1, out) for t0, t1 in ranges(b * m)])
    elif b >= threads():  # one tree per task, clouds spread over the threads
        run(knn_tree_clouds, [(q, p, k, _TREE_LEAF, b0, b1, out) for b0, b1 in ranges(b)])
    else:
        # Fewer clouds than threads (a single large cloud, typically): build each tree once and
        # spread its queries. This loop runs at most threads() - 1 times.
        for bb in range(b):
            prep = tree_prepare(q[bb], p[bb], _TREE_LEAF)
            run(tree_query_range, [(k, *prep, t0, t1, out[bb]) for t0, t1 in ranges(m)])
    return torch.from_numpy(out)


def knn_indices(query: torch.Tensor, points: torch.Tensor, k: int, backend: str) -> torch.Tensor:
    """Neighbour indices (B, M, k) int64, nearest first, by the chosen backend (no validation)."""
    if backend == "auto":
        if query.device.type == "cuda":
            return _knn_indices_cuda(query, points, k)
        backend = "numba" if query.device.type == "cpu" else "torch"
    if backend == "torch":
        return knn_indices_torch(query, points, k)
    if backend == "keops":
        from ._keops import knn_indices_keops

        return knn_indices_keops(query, points, k)
    if backend == "triton":
        _triton.require_triton("knn", query)
        from ._triton_knn import knn_indices_triton

        return knn_indices_triton(query, points, k)
    require_cpu("knn", backend, query)
    if backend == "numba":
        return knn_indices_numba(query, points, k)
    from ._kdtree import knn_indices_kdtree

    return knn_indices_kdtree(query, points, k)


def _knn_indices_cuda(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """``auto`` on CUDA: dense torch for small jobs, else KeOps, else Triton, else torch."""
    if dense_bytes(query, points) <= _CUDA_DENSE_MAX_BYTES:
        return knn_indices_torch(query, points, k)

    def triton_or_torch() -> torch.Tensor:
        if k > _triton.KNN_MAX_K:
            return knn_indices_torch(query, points, k)
        return with_triton_fallback(
            "knn",
            lambda: knn_indices(query, points, k, "triton"),
            lambda: knn_indices_torch(query, points, k),
        )

    return with_keops_fallback(
        "knn", lambda: knn_indices(query, points, k, "keops"), triton_or_torch
    )


def sq_dist_gathered(query: torch.Tensor, points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Squared distances from ``query`` (B, M, 3) to ``points`` gathered by ``idx`` (B, M, k).

    Computed from coordinate differences, with autograd, so only (B, M, k) values are held.
    """
    nbr = gather_points(points, idx)  # (B, M, k, 3)
    diff = nbr - query.unsqueeze(2)
    return (diff * diff).sum(-1)


def knn(
    query: torch.Tensor, points: torch.Tensor, k: int, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor]:
    """k nearest neighbours.

    Args:
        query: (B, M, 3) query points.
        points: (B, N, 3) points searched.
        k: neighbours per query, 1 <= k <= N.
        backend: ``"auto"``, ``"torch"``, ``"numba"``, ``"kdtree"``, ``"keops"`` or
            ``"triton"`` (module doc).

    Returns:
        ``(sq_dists, idx)``, both (B, M, k), nearest first; ``sq_dists`` is differentiable in
        ``query`` and ``points`` (float32 under autocast for half inputs). Near-ties may order
        differently across backends.
    """
    check_points("query", query)
    check_points("points", points)
    query, points = full_precision(query, points)
    check_same_batch("query", query, "points", points)
    k = check_count("k", k, points.shape[1], "N")
    check_backend("knn", backend, KNN_BACKENDS)
    with autocast_off(query):
        idx = knn_indices(query, points, k, backend)
        return sq_dist_gathered(query, points, idx), idx
