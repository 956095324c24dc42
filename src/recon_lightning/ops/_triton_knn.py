"""Nearest neighbours in Triton: distances computed in tiles and reduced in registers.

Each program takes ``BLOCK_M`` queries of one cloud and sweeps the points in blocks of
``BLOCK_N``: a (BLOCK_M, BLOCK_N) tile of squared distances (dx² + dy² + dz² from coordinate
differences, in the numba kernels' order) exists only in registers, so memory stays
O(B·(N + M·k)). Indices only, without autograd; the callers gather and recompute distances with
autograd, as for every backend.

* k = 1 (Chamfer, ``knn(k=1)``): a running (minimum, index) per query; the first index of a
  block's minimum replaces the running one only if strictly smaller, so ties go to the lowest index.
* k > 1: the k best so far per query in a (BLOCK_M, k) register list, unsorted, with its worst
  entry tracked. A block gives up its candidates in (distance, index) order, as many rounds as
  its most improving query needs; each candidate replaces the worst entry if strictly closer (all
  earlier entries have lower indices, so a tie keeps them). The list is finally written out in
  (distance, index) order: nearest first, ties to the lowest index, as the numba path.

Block sizes are unmeasured on a GPU (none where this was written); ``benchmarks/ops.py
--device cuda`` is the place to tune them.
"""

from __future__ import annotations

import torch
import triton.language as tl

from ._triton import KNN_MAX_K, Kernel, next_pow2

#: Queries x points per distance tile, k = 1.
NEAREST_BLOCK_M, NEAREST_BLOCK_N = 64, 64
#: Points per distance tile, k > 1; queries per program shrink as k grows so that the register
#: list (queries x k, distance and index) stays within ``TOPK_TILE`` entries.
TOPK_BLOCK_N, TOPK_TILE, TOPK_MAX_BLOCK_M = 64, 1024, 32
#: Warps per program: sm_90 builds of both kernels then use <= 128 registers per thread in
#: float32 and <= 210 in float64 without spilling (ptxas resource usage, no run measured).
NUM_WARPS = 8


def _nearest_kernel(
    q_ptr, p_ptr, out_ptr, M, N, m_blocks, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr
):
    """``q_ptr`` (B, 3, M) and ``p_ptr`` (B, 3, N) coordinates by axis; ``out_ptr`` (B, M) int64.
    Program ``pid`` takes query block ``pid % m_blocks`` of cloud ``pid // m_blocks``."""
    pid = tl.program_id(0)
    b = (pid // m_blocks).to(tl.int64)
    rows = (pid % m_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    qb = q_ptr + b * 3 * M
    qx = tl.load(qb + rows, mask=rmask, other=0.0)
    qy = tl.load(qb + M + rows, mask=rmask, other=0.0)
    qz = tl.load(qb + 2 * M + rows, mask=rmask, other=0.0)
    pb = p_ptr + b * 3 * N
    cols0 = tl.arange(0, BLOCK_N)
    best_d = tl.full([BLOCK_M], float("inf"), qx.dtype)
    best_i = tl.zeros([BLOCK_M], tl.int32)
    for s in range(0, N, BLOCK_N):
        cols = s + cols0
        cmask = cols < N
        dx = tl.load(pb + cols, mask=cmask, other=0.0)[None, :] - qx[:, None]
        dy = tl.load(pb + N + cols, mask=cmask, other=0.0)[None, :] - qy[:, None]
        dz = tl.load(pb + 2 * N + cols, mask=cmask, other=0.0)[None, :] - qz[:, None]
        d = tl.where(cmask[None, :], dx * dx + dy * dy + dz * dz, float("inf"))
        m, i = tl.min(d, axis=1, return_indices=True, return_indices_tie_break_left=True)
        better = m < best_d
        best_i = tl.where(better, s + i, best_i)
        best_d = tl.where(better, m, best_d)
    tl.store(out_ptr + b * M + rows, best_i.to(tl.int64), mask=rmask)


def _knn_kernel(
    q_ptr,
    p_ptr,
    out_ptr,
    M,
    N,
    K,
    m_blocks,
    DMAX: tl.constexpr,
    K_PAD: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """As ``_nearest_kernel`` with ``out_ptr`` (B, M, K) int64, nearest first. ``DMAX`` is the
    largest finite value of the dtype: distances are clamped to it so that +inf is free to mark
    spent candidates and unfilled list entries even where a distance overflows."""
    pid = tl.program_id(0)
    b = (pid // m_blocks).to(tl.int64)
    rows = (pid % m_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < M
    qb = q_ptr + b * 3 * M
    qx = tl.load(qb + rows, mask=rmask, other=0.0)
    qy = tl.load(qb + M + rows, mask=rmask, other=0.0)
    qz = tl.load(qb + 2 * M + rows, mask=rmask, other=0.0)
    pb = p_ptr + b * 3 * N
    cols0 = tl.arange(0, BLOCK_N)
    kcols = tl.arange(0, K_PAD)
    kvalid = kcols < K
    # The list: unfilled entries are (inf, N + slot), worse than any point and unique; the pad
    # slots >= K are (-inf, -1), never the worst and never written.
    zeros = tl.zeros([BLOCK_M, K_PAD], qx.dtype)
    ld = zeros + tl.where(kvalid, float("inf"), float("-inf"))[None, :]
    li = zeros.to(tl.int32) + tl.where(kvalid, N + kcols, -1)[None, :]
    wd = tl.full([BLOCK_M], float("inf"), qx.dtype)
    wi = tl.zeros([BLOCK_M], tl.int32) + (N + K - 1)
    for s in range(0, N, BLOCK_N):
        cols = s + cols0
        cmask = cols < N
        dx = tl.load(pb + cols, mask=cmask, other=0.0)[None, :] - qx[:, None]
        dy = tl.load(pb + N + cols, mask=cmask, other=0.0)[None, :] - qy[:, None]
        dz = tl.load(pb + 2 * N + cols, mask=cmask, other=0.0)[None, :] - qz[:, None]
        d = tl.minimum(dx * dx + dy * dy + dz * dz, DMAX)
        d = tl.where(cmask[None, :], d, float("inf"))
        # Each query takes at most min(k, #points closer than its current worst) of this block.
        closer = tl.sum((d < wd[:, None]).to(tl.int32), axis=1)
        rounds = tl.minimum(tl.max(tl.where(rmask, closer, 0), axis=0), K)
        for _r in range(rounds):
            m, i = tl.min(d, axis=1, return_indices=True, return_indices_tie_break_left=True)
            take = m < wd
            slot = (ld == wd[:, None]) & (li == wi[:, None]) & take[:, None]
            ld = tl.where(slot, m[:, None], ld)
            li = tl.where(slot, (s + i)[:, None], li)
            d = tl.where(cols0[None, :] == i[:, None], float("inf"), d)
            # The new worst: largest distance, and of those the largest index.
            wd = tl.max(ld, axis=1)
            wi = tl.max(tl.where(ld == wd[:, None], li, -1), axis=1)
    # Write out in (distance, index) order; with k <= N every valid slot holds a point.
    ld = tl.where(kvalid[None, :], ld, float("inf"))
    out_row = out_ptr + (b * M + rows) * K
    for r in range(K):
        m = tl.min(ld, axis=1)
        i = tl.min(tl.where(ld == m[:, None], li, N), axis=1)
        tl.store(out_row + r, i.to(tl.int64), mask=rmask)
        ld = tl.where(li == i[:, None], float("inf"), ld)


_nearest = Kernel(_nearest_kernel)
_knn = Kernel(_knn_kernel)


def _by_axis(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, N, 3) -> detached (B, 3, N) contiguous copy in ``dtype``: each axis read contiguously."""
    return x.detach().to(dtype).transpose(1, 2).contiguous()


def knn_indices_triton(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` nearest ``points`` (B, N, 3) of each ``query`` (B, M, 3).

    float64 is searched in float64, everything else in float32. Requires ``k <= KNN_MAX_K``.

    Returns:
        (B, M, k) int64 on the device of ``query``, sorted by (distance, index).
    """
    b, m, _ = query.shape
    n = points.shape[1]
    if not 1 <= k <= KNN_MAX_K:
        raise ValueError(f"knn backend 'triton' supports k <= {KNN_MAX_K}; got k={k}")
    dtype = torch.float64 if query.dtype == torch.float64 else torch.float32
    q, p = _by_axis(query, dtype), _by_axis(points, dtype)
    if k == 1:
        out = torch.empty(b, m, dtype=torch.long, device=query.device)
        m_blocks = -(-m // NEAREST_BLOCK_M)
        _nearest.launch(
            (b * m_blocks,),
            q,
            p,
            out,
            m,
            n,
            m_blocks,
            BLOCK_M=NEAREST_BLOCK_M,
            BLOCK_N=NEAREST_BLOCK_N,
            num_warps=NUM_WARPS,
        )
        return out.unsqueeze(-1)
    k_pad = next_pow2(k)
    block_m = max(1, min(TOPK_MAX_BLOCK_M, TOPK_TILE // k_pad))
    m_blocks = -(-m // block_m)
    out = torch.empty(b, m, k, dtype=torch.long, device=query.device)
    _knn.launch(
        (b * m_blocks,),
        q,
        p,
        out,
        m,
        n,
        k,
        m_blocks,
        DMAX=torch.finfo(dtype).max,
        K_PAD=k_pad,
        BLOCK_M=block_m,
        BLOCK_N=TOPK_BLOCK_N,
        num_warps=NUM_WARPS,
    )
    return out
