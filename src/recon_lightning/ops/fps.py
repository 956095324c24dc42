"""Furthest point sampling with the semantics of pointnet2_ops' CUDA kernel.

The reference (``pointnet2_ops.furthest_point_sample``) always takes point 0 first, keeps a running
minimum squared distance that starts at 1e10, and then repeatedly takes the point with the largest
running minimum. Points with x²+y²+z² <= 1e-3 are never taken after index 0 (the kernel's skip of
zero padding); if no point qualifies, index 0 is returned. Exact ties go to the lowest index.

Backends (``backend=``), index-identical to each other:

* ``torch``: one vectorised-over-batch loop of n steps; any device, the reference.
* ``numba``: compiled, clouds spread over torch's threads; a vectorised plain loop for small
  jobs and, once n·N exceeds ``_TREE_MIN_WORK``, an exact FPS that skips the kd-tree leaves a new
  sample cannot change (``_fps_numba``). CPU.
* ``triton``: one Triton program per cloud loops over the samples on the GPU (``_triton_fps``);
  CUDA tensors, or any tensor under Triton's interpreter (``TRITON_INTERPRET=1``, tests).
* ``auto``: ``numba`` on CPU; ``triton`` on CUDA (``torch`` if Triton cannot import or compile,
  with one warning); ``torch`` elsewhere.

Under autocast, half-precision coordinates are searched in float32 (``_backend.full_precision``).
"""

from __future__ import annotations

import numpy as np
import torch

from . import _triton
from ._backend import (
    as_numpy,
    autocast_off,
    check_backend,
    full_precision,
    require_cpu,
    with_triton_fallback,
)
from ._checks import check_count, check_points
from ._parallel import ranges, run

#: Squared norm at or below which the reference kernel skips a point (``mag <= 1e-3``).
SKIP_NORM_SQ = 1e-3
#: The numba path takes the pruned leaves once n·N exceeds this: the vectorised plain loop costs
#: n·N updates at ~0.15 ns, the leaves a build plus the leaves each step touches. Measured
#: (single thread, float32): loop 5x faster at 32x1024 -> 64, equal at 4x8192 -> 512 (n·N = 4M),
#: leaves 1.3x faster at 8x8192 -> 1024 and 5x at 1x100k -> 4096.
_TREE_MIN_WORK = 1 << 22
#: Points per leaf: 64 below 32k points per cloud, 128 from there (1.2x faster at 100k).
_TREE_LEAF_SMALL, _TREE_LEAF_LARGE, _TREE_LEAF_SWITCH = 64, 128, 32768
FPS_BACKENDS = ("auto", "torch", "numba", "triton")


def _sq_norm(v: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (...) ``x*x + y*y + z*z``, summed in this order on every device (a ``sum``
    reduction may order its terms differently on a GPU), as the numba and Triton kernels do."""
    sq = v * v
    return sq[..., 0] + sq[..., 1] + sq[..., 2]


def furthest_point_sample_torch(
    xyz: torch.Tensor, n: int, skip_origin: bool = True
) -> torch.Tensor:
    """Reference path: one vectorised-over-batch torch loop of ``n`` steps.

    Args:
        xyz: (B, N, 3) coordinates.
        n: number of samples.
        skip_origin: apply the kernel's rule that points with |p|² <= 1e-3 are never taken after 0.

    Returns:
        (B, n) int64 indices into N.
    """
    b, num, _ = xyz.shape
    xyz = xyz.detach()
    idx = torch.zeros(b, n, dtype=torch.long, device=xyz.device)
    min_d = torch.full((b, num), 1e10, dtype=xyz.dtype, device=xyz.device)
    if skip_origin:
        # The kernel compares the float magnitude with the double literal 1e-3, so compare in
        # float64: a float32 threshold would round 1e-3 up and skip a point the kernel keeps.
        eligible = _sq_norm(xyz).double() > SKIP_NORM_SQ
    rows = torch.arange(b, device=xyz.device)
    last = torch.zeros(b, dtype=torch.long, device=xyz.device)
    for j in range(1, n):
        d = _sq_norm(xyz - xyz[rows, last].unsqueeze(1))
        min_d = torch.minimum(min_d, d)
        score = torch.where(eligible, min_d, -1.0) if skip_origin else min_d
        # argmax returns the first maximal index: ties go to the lowest index. When no point is
        # eligible every score is -1 and argmax gives 0, which is the kernel's fallback.
        last = score.argmax(dim=1)
        idx[:, j] = last
    return idx


def furthest_point_sample_numba(
    xyz: torch.Tensor, n: int, skip_origin: bool = True, tree: bool | None = None
) -> torch.Tensor:
    """Compiled path (CPU): (B, N, 3) -> (B, n) int64, identical to the reference path.

    Args:
        tree: force the pruned tree (True) or the plain loop (False); None picks by n·N.
    """
    from ._fps_numba import fps_brute, fps_tree

    pts = as_numpy(xyz)
    out = np.empty((pts.shape[0], n), np.int64)
    if tree is None:
        tree = n * xyz.shape[1] > _TREE_MIN_WORK
    if tree:
        leaf = _TREE_LEAF_SMALL if xyz.shape[1] < _TREE_LEAF_SWITCH else _TREE_LEAF_LARGE
        kernel, extra = fps_tree, (leaf,)
    else:
        kernel, extra = fps_brute, ()
    # Ranges of clouds spread over torch's threads (one cloud: one thread).
    run(
        kernel,
        [(pts, n, skip_origin, SKIP_NORM_SQ, *extra, a, b, out) for a, b in ranges(len(pts))],
    )
    return torch.from_numpy(out)


def furthest_point_sample(
    xyz: torch.Tensor, n: int, skip_origin: bool = True, backend: str = "auto"
) -> torch.Tensor:
    """Furthest point sampling; see the module docstring for the exact semantics.

    Args:
        xyz: (B, N, 3) coordinates.
        n: number of samples, 1 <= n <= N.
        skip_origin: the reference kernel's skip of points with |p|² <= 1e-3 (default on); off
            gives plain FPS from point 0.
        backend: ``"auto"``, ``"torch"``, ``"numba"`` or ``"triton"`` (module docstring).

    Returns:
        (B, n) int64 indices on the device of ``xyz``.
    """
    check_points("xyz", xyz)
    n = check_count("n", n, xyz.shape[1], "N")
    check_backend("furthest_point_sample", backend, FPS_BACKENDS)
    (xyz,) = full_precision(xyz)
    with autocast_off(xyz):
        return _dispatch(xyz, n, skip_origin, backend)


def _dispatch(xyz: torch.Tensor, n: int, skip_origin: bool, backend: str) -> torch.Tensor:
    """Dispatch to a backend (inputs validated)."""
    if backend == "auto":
        if xyz.device.type == "cpu":
            backend = "numba"
        elif xyz.device.type == "cuda":
            return with_triton_fallback(
                "furthest_point_sample",
                lambda: _dispatch(xyz, n, skip_origin, "triton"),
                lambda: furthest_point_sample_torch(xyz, n, skip_origin=skip_origin),
            )
        else:
            backend = "torch"
    if backend == "numba":
        require_cpu("furthest_point_sample", backend, xyz)
        # float16/bfloat16 are searched in float32 (as_numpy); float32/float64 as given.
        return furthest_point_sample_numba(xyz, n, skip_origin=skip_origin)
    if backend == "triton":
        _triton.require_triton("furthest_point_sample", xyz)
        from ._triton_fps import furthest_point_sample_triton

        return furthest_point_sample_triton(xyz, n, skip_origin=skip_origin)
    return furthest_point_sample_torch(xyz, n, skip_origin=skip_origin)


def gather_points(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather rows of ``x`` (B, N, C) by ``idx`` (B, ...) -> (B, ..., C)."""
    b = x.shape[0]
    flat = idx.reshape(b, -1)
    out = torch.gather(x, 1, flat.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return out.reshape(*idx.shape, x.shape[-1])
