"""Furthest point sampling in Triton: one program per cloud loops over the samples on the device.

Same result as :func:`~recon_lightning.ops.fps.furthest_point_sample_torch`, index for index: the
squared distance is the same float expression in the same order (no fused multiply-add, see
``_triton.Kernel``), the running minimum starts at 1e10, and each step takes the first index of
the largest running minimum. The skip rule is folded into the running minima before the kernel
starts: a point that may never be taken after index 0 starts at -1, which no squared distance can
lower or beat (the reference's score of -1), so if no point qualifies the argmax is index 0.

Clouds of up to ``REGISTER_MAX_N`` points (half that in float64) keep coordinates and running
minima in registers for all ``n`` steps; larger ones (100k points and beyond) sweep the cloud in
blocks of ``STREAM_BLOCK`` points per step, the running minima in a (B, N) buffer. The sizes are
not measured on a GPU yet (none where this was written); ``benchmarks/ops.py --device cuda`` is
the place to set them.
"""

from __future__ import annotations

import torch
import triton.language as tl

from ._triton import Kernel, next_pow2
from .fps import SKIP_NORM_SQ, _sq_norm

#: Largest float32 cloud kept in registers for the whole loop, half that in float64: at 32 warps
#: the sm_90 builds use 59 (float32, 8192) and 56 (float64, 4096) registers per thread without
#: spilling, where float64 at 8192 spills (ptxas resource usage; no run measured).
REGISTER_MAX_N = 8192
#: Points per block of the streaming sweep over larger clouds.
STREAM_BLOCK = 2048
#: Running-minimum start of the reference kernel, and of points the skip rule excludes.
_START, _EXCLUDED = 1e10, -1.0


def _fps_kernel(xyz_ptr, md_ptr, out_ptr, N, n_samples, BLOCK: tl.constexpr, STREAM: tl.constexpr):
    """Program ``b`` samples cloud ``b``: ``xyz_ptr`` (B, 3, N) coordinates by axis, ``md_ptr``
    (B, N) initial running minima (updated in place when streaming), ``out_ptr`` (B, n_samples)
    int64 whose column 0 the caller has set to 0."""
    b = tl.program_id(0).to(tl.int64)
    px = xyz_ptr + b * 3 * N
    py = px + N
    pz = py + N
    md_row = md_ptr + b * N
    out_row = out_ptr + b * n_samples
    offs = tl.arange(0, BLOCK)
    last = 0
    if not STREAM:
        mask = offs < N
        x = tl.load(px + offs, mask=mask, other=0.0)
        y = tl.load(py + offs, mask=mask, other=0.0)
        z = tl.load(pz + offs, mask=mask, other=0.0)
        # Padding lanes start below every real score (-1 excluded, >= 0 eligible), and stay there.
        md = tl.load(md_row + offs, mask=mask, other=-2.0)
        for j in range(1, n_samples):
            dx = x - tl.load(px + last)
            dy = y - tl.load(py + last)
            dz = z - tl.load(pz + last)
            md = tl.minimum(md, dx * dx + dy * dy + dz * dz)
            _, last = tl.max(md, axis=0, return_indices=True, return_indices_tie_break_left=True)
            tl.store(out_row + j, last.to(tl.int64))
    else:
        for j in range(1, n_samples):
            lx = tl.load(px + last)
            ly = tl.load(py + last)
            lz = tl.load(pz + last)
            best = tl.full([], -3.0, md_ptr.dtype.element_ty)
            best_i = tl.zeros([], tl.int32)
            for s in range(0, N, BLOCK):
                cols = s + offs
                mask = cols < N
                dx = tl.load(px + cols, mask=mask, other=0.0) - lx
                dy = tl.load(py + cols, mask=mask, other=0.0) - ly
                dz = tl.load(pz + cols, mask=mask, other=0.0) - lz
                md = tl.load(md_row + cols, mask=mask, other=-2.0)
                md = tl.minimum(md, dx * dx + dy * dy + dz * dz)
                tl.store(md_row + cols, md, mask=mask)
                m, i = tl.max(md, axis=0, return_indices=True, return_indices_tie_break_left=True)
                # Strictly greater: on a tie the earlier block, the lower index, stays.
                better = m > best
                best_i = tl.where(better, s + i, best_i)
                best = tl.where(better, m, best)
            tl.store(out_row + j, best_i.to(tl.int64))
            last = best_i
            # The next sweep reads minima that other threads of this program stored.
            tl.debug_barrier()


_fps = Kernel(_fps_kernel)


def _warps(block: int) -> int:
    """Warps for a block of points: 4 points per thread while that fills 4 to 32 warps."""
    return max(4, min(32, block // 128))


def furthest_point_sample_triton(
    xyz: torch.Tensor, n: int, skip_origin: bool = True, stream_block: int | None = None
) -> torch.Tensor:
    """Triton path: (B, N, 3) -> (B, n) int64 on the device of ``xyz``, identical to the
    reference path. Half precision is searched in float32 (as the numba path does).

    Args:
        stream_block: force the streaming sweep with blocks of this many points (a power of
            two); None streams only clouds larger than ``REGISTER_MAX_N`` (float64: half).
    """
    b, num, _ = xyz.shape
    dtype = torch.float64 if xyz.dtype == torch.float64 else torch.float32
    pts = xyz.detach().to(dtype)
    md = torch.full((b, num), _START, dtype=dtype, device=xyz.device)
    if skip_origin:  # the torch path's eligibility, in the dtype searched (float32 for half)
        md.masked_fill_(_sq_norm(pts).double() <= SKIP_NORM_SQ, _EXCLUDED)
    soa = pts.transpose(1, 2).contiguous()  # (B, 3, N): each coordinate read contiguously
    out = torch.zeros(b, n, dtype=torch.long, device=xyz.device)
    if n == 1:
        return out
    stream = stream_block is not None or num > REGISTER_MAX_N * 4 // pts.element_size()
    block = (stream_block or STREAM_BLOCK) if stream else next_pow2(num)
    _fps.launch((b,), soa, md, out, num, n, BLOCK=block, STREAM=stream, num_warps=_warps(block))
    return out
