"""Exact furthest point sampling compiled with numba (CPU).

Two kernels with the same result as :func:`furthest_point_sample_torch`, index for index:

* ``brute``: the plain O(n·N) loop, for small clouds where a tree does not pay for itself.
* ``tree``: the candidates in the leaves (buckets of ``leaf_size`` points) of a kd-tree built in
  O(N) along a Morton curve (``_tree_numba``); each leaf keeps its largest running minimum. A new
  sample only updates leaves whose bounding box is closer to it than that maximum (elsewhere no
  running minimum can shrink), so late steps touch a few leaves. The pruning test keeps a relative
  margin far above float rounding, so a skipped point is one whose minimum would not have changed:
  the result is the exact FPS, not an approximation (as the bucket libraries' pruning is too).

Both run on the candidate set {i : |p_i|² > 1e-3} (all points when the skip rule is off) seeded with
point 0, which equals the reference kernel's skip rule. The drivers take a range of clouds, which
the caller spreads over threads (``_parallel``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from ._tree_numba import build_tree, morton_sort

#: Relative slack of the pruning test: computed squared distances err by a few ulps (~3e-7 in
#: float32), so a box is only skipped when its lower bound clears the node maximum by far more.
_PRUNE_REL = 1e-6
#: Absolute slack, for squared distances that underflow toward denormals.
_PRUNE_ABS = 1e-30


@njit(cache=True, nogil=True)
def _candidates(p: np.ndarray, skip_origin: bool, skip_norm_sq: float) -> np.ndarray:
    """Indices (ascending) of the points FPS may take after point 0."""
    n = p.shape[0]
    out = np.empty(n, np.int64)
    c = 0
    for i in range(n):
        x, y, z = p[i, 0], p[i, 1], p[i, 2]
        # Same float expression and comparison as the kernel's ``mag <= 1e-3`` skip.
        if (not skip_origin) or (x * x + y * y + z * z) > skip_norm_sq:
            out[c] = i
            c += 1
    return out[:c]


def _bits(a: np.ndarray) -> np.ndarray:
    """The float array ``a`` viewed as same-width signed integers (compiled: the overload below)."""
    return a.view(np.int32 if a.dtype == np.float32 else np.int64)


@overload(_bits)
def _bits_overload(a):
    if a.dtype == types.float32:
        return lambda a: a.view(np.int32)
    if a.dtype == types.float64:
        return lambda a: a.view(np.int64)
    return None


@njit(cache=True, nogil=True)
def _update_leaf(md, bits, xs, ys, zs, qx, qy, qz, s: int, e: int):
    """``md[t] = min(md[t], |p_t - q|²)`` for ``t`` in ``s:e``; returns ``max(md[s:e])`` as the
    bits of the float, read through ``bits = _bits(md)`` (made once by the caller: a view per
    call costs more than a leaf's work).

    The squared distance is the reference's expression, in the input dtype, in the same order,
    and the loop is branch-free, so it vectorises. The maximum is taken over the bit patterns:
    running minima are squared distances (never negative, never -0.0), whose bits order like the
    floats, and an integer max reduction vectorises where a float one does not (7x faster here).
    """
    for t in range(s, e):
        dx = xs[t] - qx
        dy = ys[t] - qy
        dz = zs[t] - qz
        md[t] = min(md[t], dx * dx + dy * dy + dz * dz)
    best = bits[s]
    for t in range(s + 1, e):
        best = max(best, bits[t])
    return best


@njit(cache=True, nogil=True)
def _find_max(bits, best_bits, s: int, e: int) -> tuple[int, int]:
    """First position in ``s:e`` where ``bits`` equals ``best_bits``, and how many do. Written as
    min/sum reductions rather than an early-exit search, so that it vectorises."""
    first = e
    count = 0
    for t in range(s, e):
        hit = bits[t] == best_bits
        first = min(first, t if hit else e)
        count += hit
    return first, count


@njit(cache=True, nogil=True)
def _fps_brute_one(p: np.ndarray, n: int, skip_origin: bool, skip_norm_sq: float, out: np.ndarray):
    """FPS of one cloud ``p`` (N, 3) into ``out`` (n,) by the plain loop over candidates."""
    cand = _candidates(p, skip_origin, skip_norm_sq)
    nc = cand.shape[0]
    xs = np.empty(nc, p.dtype)
    ys = np.empty(nc, p.dtype)
    zs = np.empty(nc, p.dtype)
    for c in range(nc):
        xs[c] = p[cand[c], 0]
        ys[c] = p[cand[c], 1]
        zs[c] = p[cand[c], 2]
    md = np.empty(nc, p.dtype)
    md[:] = 1e10  # the kernel's initial running minimum, rounded to the input dtype
    bits = _bits(md)
    out[0] = 0
    qx, qy, qz = p[0, 0], p[0, 1], p[0, 2]
    for j in range(1, n):
        if nc == 0:  # no candidate at all: the kernel returns index 0
            out[j] = 0
            continue
        best = _update_leaf(md, bits, xs, ys, zs, qx, qy, qz, 0, nc)
        # Candidates ascend in index: the first one holding the maximum is the lowest index.
        besti, _ = _find_max(bits, best, 0, nc)
        out[j] = cand[besti]
        qx, qy, qz = xs[besti], ys[besti], zs[besti]


@njit(cache=True, nogil=True)
def _leaf_boxes(left, start, end, bmin, bmax):
    """The leaves of a ``build_tree`` hierarchy as flat arrays: point ranges and float64 box
    bounds (6, L) laid out per coordinate, so that all leaves' lower bounds vectorise."""
    nl = 0
    for i in range(left.shape[0]):
        nl += left[i] < 0
    ls = np.empty(nl, np.int64)
    le = np.empty(nl, np.int64)
    box = np.empty((6, nl))
    r = 0
    for i in range(left.shape[0]):
        if left[i] < 0:
            ls[r], le[r] = start[i], end[i]
            for a in range(3):
                box[2 * a, r], box[2 * a + 1, r] = bmin[i, a], bmax[i, a]
            r += 1
    return ls, le, box


@njit(cache=True, nogil=True)
def _fps_tree_one(
    p: np.ndarray, n: int, skip_origin: bool, skip_norm_sq: float, leaf_size: int, out: np.ndarray
):
    """FPS of one cloud ``p`` (N, 3) into ``out`` (n,) with pruned leaves (module docstring)."""
    cand = _candidates(p, skip_origin, skip_norm_sq)
    nc = cand.shape[0]
    out[0] = 0
    if nc == 0:
        out[1:] = 0
        return
    raw = np.empty((3, nc), p.dtype)
    for c in range(nc):
        for a in range(3):
            raw[a, c] = p[cand[c], a]
    perm, codes = morton_sort(raw)
    # Leaf-ordered struct-of-arrays copies keep the leaf loops contiguous.
    c3 = np.empty((3, nc), p.dtype)
    orig = np.empty(nc, np.int64)
    for t in range(nc):
        orig[t] = cand[perm[t]]
        for a in range(3):
            c3[a, t] = raw[a, perm[t]]
    _, left, start, end, bmin, bmax = build_tree(c3, codes, leaf_size)
    ls, le, box = _leaf_boxes(left, start, end, bmin, bmax)
    nl = ls.shape[0]
    xs, ys, zs = c3[0], c3[1], c3[2]

    md = np.empty(nc, p.dtype)
    md[:] = 1e10  # the kernel's initial running minimum, rounded to the input dtype
    bits = _bits(md)
    # Per leaf: largest running minimum, the lowest original index holding it, its position.
    lval = np.empty(nl, p.dtype)
    lval[:] = 1e10
    lbits = _bits(lval)
    lidx = np.zeros(nl, np.int64)
    lpos = np.zeros(nl, np.int64)
    skip_below = np.empty(nl)
    qx, qy, qz = p[0, 0], p[0, 1], p[0, 2]
    for j in range(1, n):
        qx64, qy64, qz64 = np.float64(qx), np.float64(qy), np.float64(qz)
        # Lower bound of each leaf's squared distance to the new sample, minus the margin.
        for r in range(nl):
            gx = max(max(box[0, r] - qx64, qx64 - box[1, r]), 0.0)
            gy = max(max(box[2, r] - qy64, qy64 - box[3, r]), 0.0)
            gz = max(max(box[4, r] - qz64, qz64 - box[5, r]), 0.0)
            skip_below[r] = (gx * gx + gy * gy + gz * gz) * (1.0 - _PRUNE_REL) - _PRUNE_ABS
        for r in range(nl):
            if skip_below[r] >= lval[r]:
                continue  # no running minimum in this leaf can shrink
            s, e = ls[r], le[r]
            best_bits = _update_leaf(md, bits, xs, ys, zs, qx, qy, qz, s, e)
            bestp, count = _find_max(bits, best_bits, s, e)
            bi = orig[bestp]
            if count > 1:  # exact ties (leaf order is not index order): lowest original index
                for t in range(s, e):
                    if bits[t] == best_bits and orig[t] < bi:
                        bi = orig[t]
                        bestp = t
            lval[r] = md[bestp]
            lidx[r] = bi
            lpos[r] = bestp
        # The next sample: the largest leaf maximum, ties to the lowest original index.
        gb = lbits[0]
        for r in range(1, nl):
            gb = max(gb, lbits[r])
        first, count = _find_max(lbits, gb, 0, nl)
        if count > 1:
            for r in range(first + 1, nl):
                if lbits[r] == gb and lidx[r] < lidx[first]:
                    first = r
        out[j] = lidx[first]
        t = lpos[first]
        qx, qy, qz = xs[t], ys[t], zs[t]


@njit(cache=True, nogil=True)
def fps_brute(
    xyz: np.ndarray, n: int, skip_origin: bool, skip_norm_sq: float, b0: int, b1: int, out
) -> None:
    """Plain-loop FPS of clouds ``b0:b1`` of ``xyz`` (B, N, 3) into ``out`` (B, n) int64."""
    for i in range(b0, b1):
        _fps_brute_one(xyz[i], n, skip_origin, skip_norm_sq, out[i])


@njit(cache=True, nogil=True)
def fps_tree(
    xyz: np.ndarray,
    n: int,
    skip_origin: bool,
    skip_norm_sq: float,
    leaf_size: int,
    b0: int,
    b1: int,
    out: np.ndarray,
) -> None:
    """Pruned-tree FPS of clouds ``b0:b1`` of ``xyz`` (B, N, 3) into ``out`` (B, n) int64."""
    for i in range(b0, b1):
        _fps_tree_one(xyz[i], n, skip_origin, skip_norm_sq, leaf_size, out[i])
