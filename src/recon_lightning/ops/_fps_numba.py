"""Exact furthest point sampling compiled with numba (CPU).

Two kernels with the same result as :func:`furthest_point_sample_torch`, index for index:

* ``brute``: the plain O(n·N) loop, for small clouds where a tree does not pay for itself.
* ``tree``: a kd-tree over the candidate points (Morton order, built in O(N) by ``_tree_numba``)
  whose nodes keep their largest running minimum distance. Each new sample only visits nodes whose
  bounding box is closer to it than their largest running minimum (elsewhere no running minimum can
  shrink), so late steps touch a few leaves. The pruning test keeps a relative margin far above
  float rounding, so a skipped point is one whose minimum would not have changed: the result is the
  exact FPS, not an approximation (as the bucket libraries' pruning is too).

Both run on the candidate set {i : |p_i|² > 1e-3} (all points when the skip rule is off) seeded with
point 0, which equals the reference kernel's skip rule. The drivers take a range of clouds, which
the caller spreads over threads (``_parallel``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from ._tree_numba import box_sq_dist, build_tree, morton_sort

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


@njit(cache=True, nogil=True, fastmath={"nnan", "nsz"})
def _update_leaf(md, xs, ys, zs, qx, qy, qz, s: int, e: int):
    """``md[t] = min(md[t], |p_t - q|²)`` for ``t`` in ``s:e``; returns the new ``max(md[s:e])``.

    The squared distance is the reference's expression, in the input dtype, in the same order:
    the fast-math flags used (no NaNs, sign of zero ignored) allow no reassociation or FMA
    contraction, so every value is bit-identical, while the branch-free min/max vectorise.
    Inputs are finite (checked by the caller), so there are no NaNs.
    """
    dx = xs[s] - qx
    dy = ys[s] - qy
    dz = zs[s] - qz
    m = min(md[s], dx * dx + dy * dy + dz * dz)
    md[s] = m
    best = m
    for t in range(s + 1, e):
        dx = xs[t] - qx
        dy = ys[t] - qy
        dz = zs[t] - qz
        m = min(md[t], dx * dx + dy * dy + dz * dz)
        md[t] = m
        best = max(best, m)
    return best


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
    out[0] = 0
    qx, qy, qz = p[0, 0], p[0, 1], p[0, 2]
    for j in range(1, n):
        if nc == 0:  # no candidate at all: the kernel returns index 0
            out[j] = 0
            continue
        best = _update_leaf(md, xs, ys, zs, qx, qy, qz, 0, nc)
        # Candidates ascend in index: the first one holding the maximum is the lowest index.
        besti = 0
        while md[besti] != best:
            besti += 1
        out[j] = cand[besti]
        qx, qy, qz = xs[besti], ys[besti], zs[besti]


@njit(cache=True, nogil=True)
def _fps_tree_one(
    p: np.ndarray, n: int, skip_origin: bool, skip_norm_sq: float, leaf_size: int, out: np.ndarray
):
    """FPS of one cloud ``p`` (N, 3) into ``out`` (n,) with the pruned tree (module docstring)."""
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
    # Tree-ordered struct-of-arrays copies keep the leaf loops contiguous.
    c3 = np.empty((3, nc), p.dtype)
    orig = np.empty(nc, np.int64)
    for t in range(nc):
        orig[t] = cand[perm[t]]
        for a in range(3):
            c3[a, t] = raw[a, perm[t]]
    n_nodes, left, start, end, bmin, bmax = build_tree(c3, codes, leaf_size)
    xs, ys, zs = c3[0], c3[1], c3[2]

    md = np.empty(nc, p.dtype)
    md[:] = 1e10  # the kernel's initial running minimum, rounded to the input dtype
    # Per node: largest running minimum below it, the lowest original index holding it, and that
    # point's tree-order position.
    nval = np.empty(n_nodes, p.dtype)
    nval[:] = 1e10
    nidx = np.zeros(n_nodes, np.int64)
    npos = np.zeros(n_nodes, np.int64)
    stack = np.empty(n_nodes + 1, np.int64)
    visited = np.empty(n_nodes, np.int64)
    big = nc + p.shape[0]
    qx, qy, qz = p[0, 0], p[0, 1], p[0, 2]
    for j in range(1, n):
        qx64, qy64, qz64 = np.float64(qx), np.float64(qy), np.float64(qz)
        top = 0
        stack[0] = 0
        nvis = 0
        while top >= 0:
            i = stack[top]
            top -= 1
            lb = box_sq_dist(bmin, bmax, i, qx64, qy64, qz64)
            if lb * (1.0 - _PRUNE_REL) - _PRUNE_ABS >= nval[i]:
                continue  # no running minimum in this box can shrink
            c = left[i]
            if c >= 0:
                visited[nvis] = i
                nvis += 1
                stack[top + 1] = c
                stack[top + 2] = c + 1
                top += 2
                continue
            s, e = start[i], end[i]
            best = _update_leaf(md, xs, ys, zs, qx, qy, qz, s, e)
            # Exact ties inside a leaf (tree order is not index order): lowest original index.
            bestp = s
            bi = big
            for t in range(s, e):
                if md[t] == best and orig[t] < bi:
                    bi = orig[t]
                    bestp = t
            nval[i] = best
            nidx[i] = bi
            npos[i] = bestp
        # Children before parents: the pre-order visit list read backwards.
        for v in range(nvis - 1, -1, -1):
            i = visited[v]
            lft = left[i]
            rgt = lft + 1
            if nval[rgt] > nval[lft] or (nval[rgt] == nval[lft] and nidx[rgt] < nidx[lft]):
                lft = rgt
            nval[i], nidx[i], npos[i] = nval[lft], nidx[lft], npos[lft]
        out[j] = nidx[0]
        t = npos[0]
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
