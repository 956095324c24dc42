"""Exact k-nearest-neighbour search compiled with numba (CPU), serial kernels over ranges.

* Brute force (:func:`knn_brute`, :func:`nearest_both`): each query scans every point once,
  keeping its ``k`` best in a small sorted buffer; for small sets such as 32-point patches.
* Tree (:func:`tree_prepare`, :func:`tree_query_range`, :func:`knn_tree_clouds`): an O(N)-built
  Morton kd-tree (``_tree_numba``) searched nearest child first, skipping boxes farther than the
  current k-th distance.

Results are sorted by (squared distance, index): exact ties go to the lower index, as in the
reference Chamfer kernel. Squared distances use the reference expression ``dx² + dy² + dz²`` in
the input dtype. Memory is O(B·(N + M·k)): no distance matrix. The kernels release the GIL and take
a range of work, which the caller spreads over threads (``_parallel``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._tree_numba import box_sq_dist, build_tree, morton_sort

#: A node is skipped when its box lower bound exceeds the k-th distance by this relative margin,
#: far above the few-ulp error of a computed squared distance (~3e-7 in float32).
_PRUNE_REL = 1e-6
_PRUNE_ABS = 1e-30


@njit(cache=True, nogil=True)
def knn_brute(query: np.ndarray, pts: np.ndarray, k: int, t0: int, t1: int, out: np.ndarray):
    """The ``k`` nearest points of the queries ``t0:t1`` (flat index b·M + i) by brute force.

    Args:
        query: (B, M, 3); pts: (B, 3, N) struct-of-arrays points (contiguous distance loops);
        out: (B, M, k) int64, filled sorted nearest first; ties go to the lower index.
    """
    m = query.shape[1]
    for task in range(t0, t1):
        _knn_brute_one(query, pts, task // m, task % m, k, out)


@njit(cache=True, nogil=True)
def _knn_brute_one(query, pts, bi, qi, k, out) -> None:
    """The ``k`` nearest of query ``qi`` of cloud ``bi`` into ``out[bi, qi]``, by one scan of
    the struct-of-arrays points ``pts`` (B, 3, N) with a sorted buffer of the k best."""
    n = pts.shape[2]
    xs, ys, zs = pts[bi, 0], pts[bi, 1], pts[bi, 2]
    qx, qy, qz = query[bi, qi, 0], query[bi, qi, 1], query[bi, qi, 2]
    bd = np.empty(k, pts.dtype)
    bix = np.empty(k, np.int64)
    # Seed the buffer with the first k points, insertion-sorted.
    for j in range(k):
        dx = xs[j] - qx
        dy = ys[j] - qy
        dz = zs[j] - qz
        d = dx * dx + dy * dy + dz * dz
        t = j
        while t > 0 and bd[t - 1] > d:
            bd[t] = bd[t - 1]
            bix[t] = bix[t - 1]
            t -= 1
        bd[t] = d
        bix[t] = j
    worst = bd[k - 1]
    for j in range(k, n):
        dx = xs[j] - qx
        dy = ys[j] - qy
        dz = zs[j] - qz
        d = dx * dx + dy * dy + dz * dz
        if d < worst:  # strict: an equal distance keeps the earlier (lower) index
            t = k - 1
            while t > 0 and bd[t - 1] > d:
                bd[t] = bd[t - 1]
                bix[t] = bix[t - 1]
                t -= 1
            bd[t] = d
            bix[t] = j
            worst = bd[k - 1]
    out[bi, qi, :] = bix


@njit(cache=True, nogil=True)
def nearest_both(x: np.ndarray, y: np.ndarray, b0: int, b1: int, idx1, idx2) -> None:
    """Nearest neighbour in both directions between ``x`` (B, N, 3) and ``y`` (B, M, 3), for the
    cloud pairs ``b0:b1``.

    One pass over the N·M pairs of each cloud pair serves both directions (the Chamfer case of many
    small patch pairs). Ties go to the lower index. Fills ``idx1`` (B, N) int64 (indices into
    ``y``) and ``idx2`` (B, M) int64 (indices into ``x``).
    """
    for bi in range(b0, b1):
        _nearest_both_one(x, y, bi, idx1, idx2)


@njit(cache=True, nogil=True)
def _nearest_both_one(x, y, bi, idx1, idx2) -> None:
    """Both nearest-neighbour directions for the cloud pair ``bi``, in one sweep over its pairs."""
    m = y.shape[1]
    n = x.shape[1]
    yx = np.empty(m, y.dtype)
    yy = np.empty(m, y.dtype)
    yz = np.empty(m, y.dtype)
    for j in range(m):
        yx[j], yy[j], yz[j] = y[bi, j, 0], y[bi, j, 1], y[bi, j, 2]
    d2 = np.empty(m, y.dtype)
    d2[:] = np.inf
    i2 = np.zeros(m, np.int64)
    for i in range(n):
        qx, qy, qz = x[bi, i, 0], x[bi, i, 1], x[bi, i, 2]
        best = np.inf
        besti = 0
        for j in range(m):
            dx = yx[j] - qx
            dy = yy[j] - qy
            dz = yz[j] - qz
            d = dx * dx + dy * dy + dz * dz
            if d < best:
                best = d
                besti = j
            if d < d2[j]:  # strict, and i ascends: ties keep the lower index of x
                d2[j] = d
                i2[j] = i
        idx1[bi, i] = besti
    idx2[bi, :] = i2


@njit(cache=True, nogil=True)
def _tree_search(qx, qy, qz, k, c3, orig, left, start, end, bmin, bmax, stack, stack_lb, bd, bi):
    """Exact k-NN of one query in a tree from ``_tree_numba`` (nearest child first).

    Fills ``bd``/``bi`` (k,) with squared distances and original indices sorted by (distance,
    index), i.e. exact ties go to the lower index. A node is skipped only when its box is farther
    than the current k-th distance by a relative margin far above float rounding, so no point that
    could enter the result is skipped.
    """
    xs, ys, zs = c3[0], c3[1], c3[2]
    bd[:] = np.inf
    bi[:] = np.iinfo(np.int64).max
    qx64, qy64, qz64 = np.float64(qx), np.float64(qy), np.float64(qz)
    top = 0
    stack[0] = 0
    stack_lb[0] = 0.0
    while top >= 0:
        i = stack[top]
        lb = stack_lb[top]
        top -= 1
        if lb * (1.0 - _PRUNE_REL) - _PRUNE_ABS > bd[k - 1]:
            continue
        c = left[i]
        if c >= 0:
            l0 = box_sq_dist(bmin, bmax, c, qx64, qy64, qz64)
            l1 = box_sq_dist(bmin, bmax, c + 1, qx64, qy64, qz64)
            near, far, lnear, lfar = c, c + 1, l0, l1
            if l1 < l0:
                near, far, lnear, lfar = c + 1, c, l1, l0
            stack[top + 1], stack_lb[top + 1] = far, lfar  # popped after the nearer child
            stack[top + 2], stack_lb[top + 2] = near, lnear
            top += 2
            continue
        for t in range(start[i], end[i]):
            dx = xs[t] - qx
            dy = ys[t] - qy
            dz = zs[t] - qz
            d = dx * dx + dy * dy + dz * dz
            o = orig[t]
            if d < bd[k - 1] or (d == bd[k - 1] and o < bi[k - 1]):
                r = k - 1
                while r > 0 and (bd[r - 1] > d or (bd[r - 1] == d and bi[r - 1] > o)):
                    bd[r] = bd[r - 1]
                    bi[r] = bi[r - 1]
                    r -= 1
                bd[r] = d
                bi[r] = o


@njit(cache=True, nogil=True)
def _tree_search1(qx, qy, qz, c3, orig, left, start, end, bmin, bmax, stack, stack_lb, seed):
    """Nearest point (ties: lower index) of one query; returns its tree position.

    The k=1 case of :func:`_tree_search`, primed with ``seed`` (a tree position): queries run in
    Morton order, so the previous query's answer is close and bounds the search from the start.
    """
    xs, ys, zs = c3[0], c3[1], c3[2]
    dx = xs[seed] - qx
    dy = ys[seed] - qy
    dz = zs[seed] - qz
    best = dx * dx + dy * dy + dz * dz
    bo = orig[seed]
    bt = seed
    qx64, qy64, qz64 = np.float64(qx), np.float64(qy), np.float64(qz)
    top = 0
    stack[0] = 0
    stack_lb[0] = 0.0
    while top >= 0:
        i = stack[top]
        lb = stack_lb[top]
        top -= 1
        bound = best + _PRUNE_REL * best + _PRUNE_ABS
        if lb * (1.0 - _PRUNE_REL) > bound:
            continue
        c = left[i]
        if c >= 0:
            l0 = box_sq_dist(bmin, bmax, c, qx64, qy64, qz64)
            l1 = box_sq_dist(bmin, bmax, c + 1, qx64, qy64, qz64)
            near, far, lnear, lfar = c, c + 1, l0, l1
            if l1 < l0:
                near, far, lnear, lfar = c + 1, c, l1, l0
            if lfar * (1.0 - _PRUNE_REL) <= bound:
                top += 1
                stack[top], stack_lb[top] = far, lfar
            if lnear * (1.0 - _PRUNE_REL) <= bound:
                top += 1
                stack[top], stack_lb[top] = near, lnear
            continue
        for t in range(start[i], end[i]):
            dx = xs[t] - qx
            dy = ys[t] - qy
            dz = zs[t] - qz
            d = dx * dx + dy * dy + dz * dz
            if d <= best:
                o = orig[t]
                if d < best or o < bo:
                    best, bo, bt = d, o, t
    return bt


@njit(cache=True, nogil=True)
def tree_prepare(query: np.ndarray, points: np.ndarray, leaf_size: int):
    """Tree over one cloud ``points`` (N, 3) and the Morton order of its ``query`` (M, 3).

    Returns ``(c3, perm, left, start, end, bmin, bmax, qraw, qorder)``: tree-ordered coordinates
    (3, N), tree position -> original index, the tree (``build_tree``), query coordinates (3, M)
    and the query visiting order.
    """
    n, m = points.shape[0], query.shape[0]
    raw = np.empty((3, n), points.dtype)
    for a in range(3):
        for j in range(n):
            raw[a, j] = points[j, a]
    perm, codes = morton_sort(raw)
    c3 = np.empty((3, n), points.dtype)
    for a in range(3):
        for t in range(n):
            c3[a, t] = raw[a, perm[t]]
    _, left, start, end, bmin, bmax = build_tree(c3, codes, leaf_size)
    qraw = np.empty((3, m), query.dtype)
    for a in range(3):
        for j in range(m):
            qraw[a, j] = query[j, a]
    qorder, _ = morton_sort(qraw)
    return c3, perm, left, start, end, bmin, bmax, qraw, qorder


@njit(cache=True, nogil=True)
def tree_query_range(k, c3, perm, left, start, end, bmin, bmax, qraw, qorder, t0, t1, out):
    """Answer the queries ``qorder[t0:t1]`` (a run of the Morton order: neighbouring queries share
    cache and, for k=1, each seeds the next) into ``out`` (M, k), sorted by (distance, index)."""
    stack = np.empty(64 * 3, np.int64)
    stack_lb = np.empty(64 * 3)
    bd = np.empty(k, c3.dtype)
    bi = np.empty(k, np.int64)
    seed = 0
    for t in range(t0, t1):
        qi = qorder[t]
        qx, qy, qz = qraw[0, qi], qraw[1, qi], qraw[2, qi]
        if k == 1:
            seed = _tree_search1(
                qx, qy, qz, c3, perm, left, start, end, bmin, bmax, stack, stack_lb, seed
            )
            out[qi, 0] = perm[seed]
        else:
            _tree_search(
                qx, qy, qz, k, c3, perm, left, start, end, bmin, bmax, stack, stack_lb, bd, bi
            )
            out[qi, :] = bi


@njit(cache=True, nogil=True)
def knn_tree_clouds(query, points, k: int, leaf_size: int, b0: int, b1: int, out) -> None:
    """Tree k-NN for the clouds ``b0:b1``: query (B, M, 3) among points (B, N, 3) into ``out``
    (B, M, k) int64, sorted by (distance, index). One tree per cloud, built in O(N)."""
    m = query.shape[1]
    for bb in range(b0, b1):
        prep = tree_prepare(query[bb], points[bb], leaf_size)
        c3, perm, left, start, end, bmin, bmax, qraw, qorder = prep
        tree_query_range(k, c3, perm, left, start, end, bmin, bmax, qraw, qorder, 0, m, out[bb])
