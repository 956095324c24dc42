"""A small numpy z-buffer renderer: a shaded view of a point cloud as an RGB uint8 image.

Points are projected orthographically from a camera above the object (elevation ``elevation``),
each point is splatted as a disk of ``radius`` pixels, and the nearest splat wins per pixel
(a z-buffer built with ``np.minimum.at``). Pixels are shaded Lambert-style from normals estimated
on the depth map, mixed with a depth cue, and tinted with the object colour over a white
background, roughly like the ShapeNet thumbnails the reference pretrains with.
"""

from __future__ import annotations

import functools
import math

import numpy as np

_LIGHT = np.array([-0.4, 0.6, 0.7]) / np.linalg.norm([-0.4, 0.6, 0.7])


@functools.lru_cache(maxsize=8)
def _splat_offsets(radius: int) -> np.ndarray:
    r = np.arange(-radius, radius + 1)
    dy, dx = np.meshgrid(r, r, indexing="ij")
    keep = dx**2 + dy**2 <= radius**2 + radius  # a round splat, slightly fuller than a disk
    return np.stack([dy[keep], dx[keep]], axis=1)


def depth_buffer(
    points: np.ndarray,
    size: int,
    elevation_deg: float = 25.0,
    radius: int = 1,
    margin: float = 0.92,
) -> np.ndarray:
    """Z-buffer of (N, 3) points inside the unit sphere -> (size, size) depth, inf = background.

    Depth grows away from the camera, in the camera frame's units (unit sphere -> [-1, 1]).
    """
    e = math.radians(elevation_deg)
    # Rotate about x so the camera, looking down -z, sees the object from above.
    rot = np.array([[1, 0, 0], [0, math.cos(e), -math.sin(e)], [0, math.sin(e), math.cos(e)]])
    cam = points @ rot.T
    half = size / 2.0
    col = np.floor(half + cam[:, 0] * half * margin).astype(np.int64)
    row = np.floor(half - cam[:, 1] * half * margin).astype(np.int64)
    depth = -cam[:, 2]
    offsets = _splat_offsets(radius)
    rows = (row[:, None] + offsets[None, :, 0]).ravel()
    cols = (col[:, None] + offsets[None, :, 1]).ravel()
    depths = np.repeat(depth, len(offsets))
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size)
    # The z-test: an unbuffered minimum per pixel keeps the nearest splat.
    buf = np.full(size * size, np.inf)
    np.minimum.at(buf, rows[inside] * size + cols[inside], depths[inside])
    return buf.reshape(size, size)


def shade(depth: np.ndarray, color: np.ndarray, background: float = 255.0) -> np.ndarray:
    """(H, W) depth buffer + RGB colour in [0, 1] -> (H, W, 3) uint8 shaded image."""
    size = depth.shape[0]
    mask = np.isfinite(depth)
    if not mask.any():
        return np.full((*depth.shape, 3), background, dtype=np.uint8)
    near, far = depth[mask].min(), depth[mask].max()
    filled = np.where(mask, depth, far)
    # Camera frame: x = column, y = -row (up), z = -depth (towards the camera). The surface
    # z = -d(x, y) has the camera-facing normal (dd/dx, dd/dy, 1); pixel pitch is 2/size.
    dd_drow, dd_dcol = np.gradient(filled, 2.0 / size)
    normal = np.stack([dd_dcol, -dd_drow, np.ones_like(filled)], axis=-1)
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    lambert = np.clip(normal @ _LIGHT, 0.0, 1.0)
    cue = 1.0 - 0.5 * (filled - near) / max(far - near, 1e-6)
    intensity = (0.25 + 0.75 * lambert) * cue
    rgb = 255.0 * intensity[..., None] * color[None, None, :]
    out = np.where(mask[..., None], rgb, background)
    return np.clip(out, 0, 255).astype(np.uint8)


def render_points(
    points: np.ndarray,
    size: int,
    color: np.ndarray,
    elevation_deg: float = 25.0,
    radius: int | None = None,
) -> np.ndarray:
    """Render (N, 3) unit-sphere points -> (size, size, 3) uint8 RGB image.

    Args:
        points: (N, 3) coordinates, y up, inside the unit sphere.
        size: output side in pixels.
        color: (3,) object RGB in [0, 1].
        elevation_deg: camera elevation above the horizon.
        radius: splat radius in pixels; default scales with ``size`` (1 px per 64 px of image).
    """
    if radius is None:
        radius = max(1, round(size / 64))
    return shade(depth_buffer(points, size, elevation_deg, radius), np.asarray(color, dtype=float))
