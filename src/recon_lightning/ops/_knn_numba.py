"""Brute-force k-nearest-neighbour search compiled with numba (CPU).

Each query scans every point once, keeping its ``k`` best in a small sorted buffer; queries of all
clouds run in parallel. Memory is O(B·M·k): no distance matrix. Squared distances use the reference
expression ``dx² + dy² + dz²`` in the input dtype; exact ties keep the lower index first. Built for
the ReCon sizes (a few thousand candidates per query); larger clouds go to the KD-tree backend.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(cache=True, parallel=True)
def knn_brute(query: np.ndarray, points: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` nearest ``points`` (B, N, 3) to each ``query`` (B, M, 3).

    Returns (B, M, k) int64, sorted nearest first; ties go to the lower index.
    """
    b, m = query.shape[0], query.shape[1]
    n = points.shape[1]
    out = np.empty((b, m, k), np.int64)
    # Struct-of-arrays copies of the candidates: contiguous, vectorisable distance loops.
    pts = np.empty((b, 3, n), points.dtype)
    for bi in prange(b):
        for a in range(3):
            for j in range(n):
                pts[bi, a, j] = points[bi, j, a]
    for task in prange(b * m):
        bi = task // m
        qi = task - bi * m
        xs, ys, zs = pts[bi, 0], pts[bi, 1], pts[bi, 2]
        qx, qy, qz = query[bi, qi, 0], query[bi, qi, 1], query[bi, qi, 2]
        bd = np.empty(k, points.dtype)
        bi_ = np.empty(k, np.int64)
        # Seed the buffer with the first k points, insertion-sorted.
        for j in range(k):
            dx = xs[j] - qx
            dy = ys[j] - qy
            dz = zs[j] - qz
            d = dx * dx + dy * dy + dz * dz
            t = j
            while t > 0 and bd[t - 1] > d:
                bd[t] = bd[t - 1]
                bi_[t] = bi_[t - 1]
                t -= 1
            bd[t] = d
            bi_[t] = j
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
                    bi_[t] = bi_[t - 1]
                    t -= 1
                bd[t] = d
                bi_[t] = j
                worst = bd[k - 1]
        out[bi, qi, :] = bi_
    return out


@njit(cache=True, parallel=True)
def nearest_both(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest neighbour in both directions between ``x`` (B, N, 3) and ``y`` (B, M, 3).

    One pass over the N·M pairs of each cloud pair serves both directions (the Chamfer case of many
    small patch pairs). Ties go to the lower index.

    Returns:
        ``(idx1, idx2)``: (B, N) int64 indices into ``y`` and (B, M) int64 indices into ``x``.
    """
    b, n, m = x.shape[0], x.shape[1], y.shape[1]
    idx1 = np.empty((b, n), np.int64)
    idx2 = np.empty((b, m), np.int64)
    for bi in prange(b):
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
    return idx1, idx2
