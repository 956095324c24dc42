"""A bounding-box hierarchy over 3-D points, built in O(N) with numba (CPU).

Points are sorted along a Morton (Z-order) curve with a radix sort, then split recursively where
the next bit of their Morton code changes: every node is a grid-aligned box (a kd-tree with midpoint
splits that cycle x, y, z), its points are a contiguous run of the sorted order, and a node with at
most ``leaf_size`` points (or one grid cell) is a leaf. Nodes carry tight float64 bounding boxes.
This costs a few passes over the points, several times less than median splits.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Bits of grid resolution per axis (1024³ cells over the bounding cube); 3 x 10 = 30-bit codes.
MORTON_BITS = 10


@njit(cache=True, nogil=True)
def _spread_bits(v: np.ndarray) -> np.ndarray:
    """Spread the low 10 bits of each value so that two zero bits separate them."""
    v = v & 0x3FF
    v = (v | (v << 16)) & 0x30000FF
    v = (v | (v << 8)) & 0x300F00F
    v = (v | (v << 4)) & 0x30C30C3
    v = (v | (v << 2)) & 0x9249249
    return v


@njit(cache=True, nogil=True)
def morton_sort(c3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort the columns of ``c3`` (3, N) along the Z-curve of the bounding cube.

    Returns:
        ``(perm, codes)``: the permutation (N,) int64, stable for equal codes, and the sorted 30-bit
        codes (N,) int64 (bit 3·l + a is bit l of the grid coordinate on axis a).
    """
    n = c3.shape[1]
    ext = 0.0
    lo = np.empty(3)
    for a in range(3):
        lo[a] = c3[a].min()
        ext = max(ext, c3[a].max() - lo[a])
    cells = (1 << MORTON_BITS) - 1
    scale = cells / ext if ext > 0 else 0.0
    codes = np.zeros(n, np.int64)
    for a in range(3):
        for i in range(n):
            q = min(np.int64((c3[a, i] - lo[a]) * scale), cells)
            codes[i] |= _spread_bits(q) << a
    # LSD radix sort, 3 passes of 10 bits, moving (code, index) pairs.
    perm = np.arange(n)
    key2 = np.empty(n, np.int64)
    perm2 = np.empty(n, np.int64)
    count = np.empty(1025, np.int64)
    for shift in range(0, 3 * MORTON_BITS, 10):
        count[:] = 0
        for i in range(n):
            count[((codes[i] >> shift) & 1023) + 1] += 1
        for r in range(1024):
            count[r + 1] += count[r]
        for i in range(n):
            r = (codes[i] >> shift) & 1023
            key2[count[r]] = codes[i]
            perm2[count[r]] = perm[i]
            count[r] += 1
        codes, key2 = key2, codes
        perm, perm2 = perm2, perm
    return perm, codes


@njit(cache=True, nogil=True)
def build_tree(c3: np.ndarray, codes: np.ndarray, leaf_size: int):
    """Hierarchy over the columns of ``c3`` (3, N), already in the order of ``codes`` (sorted).

    Returns:
        ``(n_nodes, left, start, end, bmin, bmax)``: node 0 is the root; ``left[i]`` is the first
        child (the second is ``left[i] + 1``) or -1 for a leaf; node i holds the columns
        ``start[i]:end[i]``; ``bmin``/``bmax`` (nodes, 3) float64 tight boxes. Children always
        have larger ids than their parent.
    """
    n = c3.shape[1]
    cap = 2 * max(n, 1)
    left = np.empty(cap, np.int64)
    start = np.empty(cap, np.int64)
    end = np.empty(cap, np.int64)
    stack_node = np.empty(64 * 3, np.int64)
    stack_bit = np.empty(64 * 3, np.int64)
    start[0], end[0] = 0, n
    n_nodes = 1
    top = 0
    stack_node[0], stack_bit[0] = 0, 3 * MORTON_BITS - 1
    while top >= 0:
        i, bit = stack_node[top], stack_bit[top]
        top -= 1
        s, e = start[i], end[i]
        # Skip the bits the whole run shares (codes are sorted, so compare the ends).
        while bit >= 0 and ((codes[s] >> bit) & 1) == ((codes[e - 1] >> bit) & 1):
            bit -= 1
        if e - s <= leaf_size or bit < 0:
            left[i] = -1
            continue
        lo, hi = s, e - 1  # first index whose bit is set: codes[hi] has it, codes[s] does not
        while lo < hi:
            mid = (lo + hi) // 2
            if (codes[mid] >> bit) & 1:
                hi = mid
            else:
                lo = mid + 1
        c = n_nodes
        n_nodes += 2
        left[i] = c
        start[c], end[c], start[c + 1], end[c + 1] = s, lo, lo, e
        stack_node[top + 1], stack_bit[top + 1] = c, bit - 1
        stack_node[top + 2], stack_bit[top + 2] = c + 1, bit - 1
        top += 2
    bmin = np.empty((n_nodes, 3))
    bmax = np.empty((n_nodes, 3))
    # Children have larger ids, so a backward sweep sees them before their parent.
    for i in range(n_nodes - 1, -1, -1):
        c = left[i]
        if c >= 0:
            for a in range(3):
                bmin[i, a] = min(bmin[c, a], bmin[c + 1, a])
                bmax[i, a] = max(bmax[c, a], bmax[c + 1, a])
            continue
        for a in range(3):
            lo_v, hi_v = np.inf, -np.inf
            for t in range(start[i], end[i]):
                v = np.float64(c3[a, t])
                lo_v = min(lo_v, v)
                hi_v = max(hi_v, v)
            bmin[i, a], bmax[i, a] = lo_v, hi_v
    return n_nodes, left[:n_nodes], start[:n_nodes], end[:n_nodes], bmin, bmax


@njit(cache=True, nogil=True, inline="always")
def box_sq_dist(bmin: np.ndarray, bmax: np.ndarray, i: int, qx: float, qy: float, qz: float):
    """Squared distance (float64) from (qx, qy, qz) to the box of node ``i``; 0 inside it.

    Written with max() only: compiled to branch-free selects, since which side of a box a query
    lies on is unpredictable and mispredicted branches dominated the searches.
    """
    gx = max(max(bmin[i, 0] - qx, qx - bmax[i, 0]), 0.0)
    gy = max(max(bmin[i, 1] - qy, qy - bmax[i, 1]), 0.0)
    gz = max(max(bmin[i, 2] - qz, qz - bmax[i, 2]), 0.0)
    return gx * gx + gy * gy + gz * gz
