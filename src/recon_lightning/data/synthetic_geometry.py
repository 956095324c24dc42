"""Surface samplers for the procedural shape classes of :mod:`recon_lightning.data.synthetic`.

Every shape is a union of primitive surfaces; points are spread over the primitives in
proportion to their areas so the density is roughly uniform. All functions are vectorised numpy,
take an explicit ``numpy.random.Generator`` (so a shape is a pure function of its seed) and return
(n, 3) float64 points in a y-up frame of about unit size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

Rng = np.random.Generator
#: A primitive: (area, sampler(n, rng) -> (n, 3) points).
Part = tuple[float, Callable[[int, Rng], np.ndarray]]


def _mix(parts: Sequence[Part], n: int, rng: Rng) -> np.ndarray:
    """Sample ``n`` points over the union of ``parts``, counts multinomial in their areas."""
    areas = np.array([max(a, 1e-9) for a, _ in parts])
    counts = rng.multinomial(n, areas / areas.sum())
    chunks = [sample(int(k), rng) for (_, sample), k in zip(parts, counts, strict=True) if k > 0]
    return np.concatenate(chunks, axis=0)


def _unit_vectors(n: int, rng: Rng) -> np.ndarray:
    v = rng.normal(size=(n, 3))
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


# ---------------------------------------------------------------------------- primitives


def sphere_part(
    radius: float, center: Sequence[float] = (0, 0, 0), upper: bool | None = None
) -> Part:
    """Sphere surface (or its upper/lower hemisphere for ``upper`` True/False)."""
    c = np.asarray(center, dtype=float)

    def sample(n: int, rng: Rng) -> np.ndarray:
        v = _unit_vectors(n, rng)
        if upper is not None:
            v[:, 1] = np.abs(v[:, 1]) if upper else -np.abs(v[:, 1])
        return c + radius * v

    area = 4 * math.pi * radius**2 * (1.0 if upper is None else 0.5)
    return area, sample


def box_parts(half: Sequence[float], center: Sequence[float] = (0, 0, 0)) -> list[Part]:
    """The six faces of an axis-aligned box with half extents ``half``."""
    h = np.asarray(half, dtype=float)
    c = np.asarray(center, dtype=float)
    parts: list[Part] = []
    for axis in range(3):
        u, v = [a for a in range(3) if a != axis]
        for sign in (-1.0, 1.0):

            def sample(n: int, rng: Rng, axis=axis, u=u, v=v, sign=sign) -> np.ndarray:
                p = np.empty((n, 3))
                p[:, axis] = sign * h[axis]
                p[:, u] = rng.uniform(-h[u], h[u], n)
                p[:, v] = rng.uniform(-h[v], h[v], n)
                return c + p

            parts.append((4 * h[u] * h[v], sample))
    return parts


def disk_part(radius: float, y: float, inner: float = 0.0) -> Part:
    """Horizontal disk (annulus if ``inner`` > 0) at height ``y``, centred on the y axis."""

    def sample(n: int, rng: Rng) -> np.ndarray:
        r = np.sqrt(rng.uniform(inner**2, radius**2, n))
        t = rng.uniform(0, 2 * math.pi, n)
        return np.stack([r * np.cos(t), np.full(n, y), r * np.sin(t)], axis=1)

    return math.pi * (radius**2 - inner**2), sample


def cylinder_side_part(radius: float, y0: float, y1: float) -> Part:
    """Lateral surface of a y-axis cylinder between heights ``y0`` and ``y1``."""

    def sample(n: int, rng: Rng) -> np.ndarray:
        t = rng.uniform(0, 2 * math.pi, n)
        return np.stack([radius * np.cos(t), rng.uniform(y0, y1, n), radius * np.sin(t)], axis=1)

    return 2 * math.pi * radius * abs(y1 - y0), sample


def cone_side_part(radius: float, y_base: float, y_apex: float) -> Part:
    """Lateral surface of a y-axis cone (uniform in area: radius fraction ~ sqrt(U))."""
    height = abs(y_apex - y_base)

    def sample(n: int, rng: Rng) -> np.ndarray:
        f = np.sqrt(rng.uniform(0, 1, n))  # 0 at the apex, 1 at the base
        t = rng.uniform(0, 2 * math.pi, n)
        y = y_apex + f * (y_base - y_apex)
        return np.stack([f * radius * np.cos(t), y, f * radius * np.sin(t)], axis=1)

    return math.pi * radius * math.hypot(radius, height), sample


def torus_part(major: float, minor: float) -> Part:
    """Torus around the y axis; the tube angle is drawn by rejection so density is uniform."""

    def sample(n: int, rng: Rng) -> np.ndarray:
        out = np.empty((0, 2))
        while len(out) < n:
            phi = rng.uniform(0, 2 * math.pi, 2 * n + 8)
            keep = rng.uniform(0, 1, phi.size) < (major + minor * np.cos(phi)) / (major + minor)
            theta = rng.uniform(0, 2 * math.pi, int(keep.sum()))
            out = np.concatenate([out, np.stack([theta, phi[keep]], axis=1)])
        theta, phi = out[:n, 0], out[:n, 1]
        ring = major + minor * np.cos(phi)
        return np.stack([ring * np.cos(theta), minor * np.sin(phi), ring * np.sin(theta)], axis=1)

    return 4 * math.pi**2 * major * minor, sample


def triangle_part(a: Sequence[float], b: Sequence[float], c: Sequence[float]) -> Part:
    """A triangle, uniform by the square-root barycentric trick."""
    pa, pb, pc = (np.asarray(x, dtype=float) for x in (a, b, c))

    def sample(n: int, rng: Rng) -> np.ndarray:
        r1 = np.sqrt(rng.uniform(0, 1, (n, 1)))
        r2 = rng.uniform(0, 1, (n, 1))
        return (1 - r1) * pa + r1 * (1 - r2) * pb + r1 * r2 * pc

    return 0.5 * float(np.linalg.norm(np.cross(pb - pa, pc - pa))), sample


def helix_tube_part(radius: float, pitch: float, turns: float, tube: float) -> Part:
    """A tube of radius ``tube`` around the helix (R cos t, pitch t, R sin t), centred on y=0."""
    t_max = 2 * math.pi * turns
    speed = math.hypot(radius, pitch)

    def sample(n: int, rng: Rng) -> np.ndarray:
        t = rng.uniform(0, t_max, n)
        a = rng.uniform(0, 2 * math.pi, n)
        centre = np.stack([radius * np.cos(t), pitch * (t - t_max / 2), radius * np.sin(t)], 1)
        tangent = np.stack([-radius * np.sin(t), np.full(n, pitch), radius * np.cos(t)], 1) / speed
        normal = np.stack([-np.cos(t), np.zeros(n), -np.sin(t)], axis=1)
        binormal = np.cross(tangent, normal)
        offset = np.cos(a)[:, None] * normal + np.sin(a)[:, None] * binormal
        return centre + tube * offset

    return 2 * math.pi * tube * t_max * speed, sample


def _inside_box(
    p: np.ndarray, half: np.ndarray, center: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    return np.all(np.abs(p - center) < half - eps, axis=1)


def box_union(
    boxes: Sequence[tuple[Sequence[float], Sequence[float]]], n: int, rng: Rng
) -> np.ndarray:
    """Surface of a union of boxes ``[(half, center), ...]``: face points inside another box are
    dropped, so no hidden internal faces are sampled. Oversamples until ``n`` points remain."""
    halves = [np.asarray(h, dtype=float) for h, _ in boxes]
    centers = [np.asarray(c, dtype=float) for _, c in boxes]
    parts: list[tuple[float, Callable[[int, Rng], np.ndarray], int]] = []
    for k, (h, c) in enumerate(zip(halves, centers, strict=True)):
        parts.extend((area, sample, k) for area, sample in box_parts(h, c))
    got: list[np.ndarray] = []
    total = 0
    while total < n:
        pts = _mix([(a, s) for a, s, _ in parts], 2 * n, rng)
        outside = np.ones(len(pts), dtype=bool)
        for h, c in zip(halves, centers, strict=True):
            outside &= ~_inside_box(pts, h, c)
        got.append(pts[outside])
        total += int(outside.sum())
    # _mix returns points grouped by part: draw the n kept ones at random, not the first n.
    kept = np.concatenate(got)
    return kept[rng.choice(len(kept), n, replace=False)]


# ---------------------------------------------------------------------------- shape classes


def sphere(n: int, rng: Rng) -> np.ndarray:
    return _mix([sphere_part(1.0)], n, rng)


def cube(n: int, rng: Rng) -> np.ndarray:
    return _mix(box_parts((1.0, 1.0, 1.0)), n, rng)


def cylinder(n: int, rng: Rng) -> np.ndarray:
    r, h = rng.uniform(0.45, 0.7), rng.uniform(0.9, 1.3)
    return _mix([cylinder_side_part(r, -h, h), disk_part(r, -h), disk_part(r, h)], n, rng)


def cone(n: int, rng: Rng) -> np.ndarray:
    r, h = rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.1)
    return _mix([cone_side_part(r, -h, h), disk_part(r, -h)], n, rng)


def torus(n: int, rng: Rng) -> np.ndarray:
    return _mix([torus_part(1.0, rng.uniform(0.2, 0.4))], n, rng)


def pyramid(n: int, rng: Rng) -> np.ndarray:
    h = rng.uniform(0.7, 1.1)
    base = [(-1.0, -h, -1.0), (1.0, -h, -1.0), (1.0, -h, 1.0), (-1.0, -h, 1.0)]
    apex = (0.0, h, 0.0)
    faces = [triangle_part(base[i], base[(i + 1) % 4], apex) for i in range(4)]
    faces += [triangle_part(base[0], base[1], base[2]), triangle_part(base[0], base[2], base[3])]
    return _mix(faces, n, rng)


def capsule(n: int, rng: Rng) -> np.ndarray:
    r, h = rng.uniform(0.3, 0.45), rng.uniform(0.6, 1.0)
    parts = [
        cylinder_side_part(r, -h, h),
        sphere_part(r, (0, h, 0), upper=True),
        sphere_part(r, (0, -h, 0), upper=False),
    ]
    return _mix(parts, n, rng)


def spring(n: int, rng: Rng) -> np.ndarray:
    turns = rng.uniform(2.5, 4.0)
    height = rng.uniform(1.6, 2.4)
    part = helix_tube_part(rng.uniform(0.6, 0.9), height / (2 * math.pi * turns), turns, 0.1)
    return _mix([part], n, rng)


def bump_plane(n: int, rng: Rng) -> np.ndarray:
    """A square sheet with one to three Gaussian bumps (a height field)."""
    k = int(rng.integers(1, 4))
    centres = rng.uniform(-0.6, 0.6, (k, 2))
    heights = rng.uniform(0.3, 0.7, k) * rng.choice([-1.0, 1.0], k)
    widths = rng.uniform(0.2, 0.4, k)
    xz = rng.uniform(-1, 1, (n, 2))
    d2 = ((xz[:, None, :] - centres[None]) ** 2).sum(-1)
    y = (heights * np.exp(-d2 / (2 * widths**2))).sum(-1)
    return np.stack([xz[:, 0], y, xz[:, 1]], axis=1)


def l_shape(n: int, rng: Rng) -> np.ndarray:
    """An extruded L: a tall and a long bar sharing a corner."""
    t, d = rng.uniform(0.25, 0.4), rng.uniform(0.3, 0.5)
    boxes = [((t, 1.0, d), (-1.0 + t, 0.0, 0.0)), ((1.0, t, d), (0.0, -1.0 + t, 0.0))]
    return box_union(boxes, n, rng)


def table(n: int, rng: Rng) -> np.ndarray:
    """A slab top on four legs."""
    w, dpt, top, leg = rng.uniform(0.9, 1.1), rng.uniform(0.5, 0.8), 0.08, rng.uniform(0.06, 0.1)
    boxes = [((w, top, dpt), (0.0, 0.6, 0.0))]
    for sx in (-1, 1):
        for sz in (-1, 1):
            centre = (sx * (w - leg), -0.1, sz * (dpt - leg))
            boxes.append(((leg, 0.62, leg), centre))
    return box_union(boxes, n, rng)


def hourglass(n: int, rng: Rng) -> np.ndarray:
    """Two cones meeting at their apexes, closed by their base disks."""
    r, h = rng.uniform(0.6, 0.9), rng.uniform(0.8, 1.1)
    parts = [
        cone_side_part(r, h, 0.0),
        cone_side_part(r, -h, 0.0),
        disk_part(r, h),
        disk_part(r, -h),
    ]
    return _mix(parts, n, rng)


#: Shape classes: (name, description, sampler), in label order.
SHAPE_CLASSES: list[tuple[str, str, Callable[[int, Rng], np.ndarray]]] = [
    ("sphere", "sphere, a round ball", sphere),
    ("cube", "cube, a box with six square faces", cube),
    ("cylinder", "cylinder, a can with flat round ends", cylinder),
    ("cone", "cone, a round base narrowing to a point", cone),
    ("torus", "torus, a ring-shaped doughnut", torus),
    ("pyramid", "pyramid, a square base with four triangular sides", pyramid),
    ("capsule", "capsule, a cylinder with rounded ends", capsule),
    ("spring", "spring, a helical coil of wire", spring),
    ("bump_plane", "bumpy plane, a flat sheet with smooth bumps", bump_plane),
    ("l_shape", "L-shaped bracket, two bars joined at a right angle", l_shape),
    ("table", "table, a flat top standing on four legs", table),
    ("hourglass", "hourglass, two cones joined at their tips", hourglass),
]


# ---------------------------------------------------------------------------- part-labelled shapes
#
# The part-segmentation family: shapes built from two or three named parts, each point labelled
# with the index of its part within the shape (0, 1, 2). ``SyntheticShapes(mode="partseg")``
# turns those into global part ids, as ShapeNetPart's 0..49.

#: A primitive with the index of the part it belongs to.
LabelledPart = tuple[Part, int]
#: A part-labelled sampler: (n, rng) -> ((n, 3) points, (n,) int64 part indices).
LabelledSampler = Callable[[int, Rng], tuple[np.ndarray, np.ndarray]]


def mix_labelled(parts: Sequence[LabelledPart], n: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_mix` that also returns each point's part index (points grouped by primitive)."""
    areas = np.array([max(area, 1e-9) for (area, _), _ in parts])
    counts = rng.multinomial(n, areas / areas.sum())
    points, labels = [], []
    for ((_, sample), part), k in zip(parts, counts, strict=True):
        if k > 0:
            points.append(sample(int(k), rng))
            labels.append(np.full(int(k), part, dtype=np.int64))
    return np.concatenate(points, axis=0), np.concatenate(labels)


def _boxes(half: Sequence[float], center: Sequence[float], part: int) -> list[LabelledPart]:
    return [(p, part) for p in box_parts(half, center)]


def handle_part(major: float, minor: float, center: Sequence[float]) -> Part:
    """The outer half of a torus in the x-y plane around ``center``: a mug's handle."""
    c = np.asarray(center, dtype=float)

    def sample(n: int, rng: Rng) -> np.ndarray:
        t = rng.uniform(-math.pi / 2, math.pi / 2, n)
        phi = rng.uniform(0, 2 * math.pi, n)
        ring = major + minor * np.cos(phi)
        return c + np.stack([ring * np.cos(t), ring * np.sin(t), minor * np.sin(phi)], axis=1)

    return 2 * math.pi**2 * major * minor, sample


def part_table(n: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Table: 0 top (a slab), 1 legs (four bars)."""
    w, dpt, top, leg = rng.uniform(0.8, 1.1), rng.uniform(0.5, 0.8), 0.07, rng.uniform(0.05, 0.09)
    height = rng.uniform(0.5, 0.9)
    parts = _boxes((w, top, dpt), (0.0, height + top, 0.0), 0)
    for sx in (-1, 1):
        for sz in (-1, 1):
            centre = (sx * (w - leg), 0.0, sz * (dpt - leg))
            parts += _boxes((leg, height, leg), centre, 1)
    return mix_labelled(parts, n, rng)


def part_mug(n: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Mug: 0 body (open cylinder with a bottom), 1 handle (a half torus on its side)."""
    r, h = rng.uniform(0.45, 0.6), rng.uniform(0.6, 0.9)
    major, minor = rng.uniform(0.4, 0.55) * h, rng.uniform(0.08, 0.11)
    parts: list[LabelledPart] = [
        (cylinder_side_part(r, -h, h), 0),
        (disk_part(r, -h), 0),
        (handle_part(major, minor, (r, rng.uniform(-0.2, 0.2) * h, 0.0)), 1),
    ]
    return mix_labelled(parts, n, rng)


def part_lamp(n: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Lamp: 0 base (a flat drum), 1 pole, 2 shade (an open cone)."""
    rb, hb = rng.uniform(0.35, 0.5), rng.uniform(0.05, 0.1)
    rp, top = rng.uniform(0.03, 0.06), rng.uniform(0.3, 0.6)
    rs, hs = rng.uniform(0.4, 0.6), rng.uniform(0.35, 0.55)
    y0 = -1.0
    parts: list[LabelledPart] = [
        (cylinder_side_part(rb, y0, y0 + hb), 0),
        (disk_part(rb, y0 + hb), 0),
        (disk_part(rb, y0), 0),
        (cylinder_side_part(rp, y0 + hb, top), 1),
        (cone_side_part(rs, top, top + hs), 2),
    ]
    return mix_labelled(parts, n, rng)


def part_rocket(n: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Rocket: 0 body (a cylinder), 1 nose (a cone), 2 fins (three or four triangles)."""
    r, h = rng.uniform(0.18, 0.28), rng.uniform(0.7, 1.0)
    nose, span = rng.uniform(0.3, 0.5), rng.uniform(0.25, 0.45)
    parts: list[LabelledPart] = [
        (cylinder_side_part(r, -h, h), 0),
        (disk_part(r, -h), 0),
        (cone_side_part(r, h, h + nose), 1),
    ]
    k = int(rng.integers(3, 5))
    for j in range(k):
        a = 2 * math.pi * j / k
        d = np.array([math.cos(a), 0.0, math.sin(a)])
        root_top = r * d + np.array([0.0, -h + 0.5 * h, 0.0])
        root_low = r * d + np.array([0.0, -h, 0.0])
        tip = (r + span) * d + np.array([0.0, -h - 0.1, 0.0])
        parts.append((triangle_part(root_top, root_low, tip), 2))
    return mix_labelled(parts, n, rng)


def part_chair(n: int, rng: Rng) -> tuple[np.ndarray, np.ndarray]:
    """Chair: 0 seat, 1 back, 2 legs."""
    w, t, leg = rng.uniform(0.5, 0.7), 0.06, rng.uniform(0.04, 0.07)
    seat_y, back_h = rng.uniform(-0.2, 0.1), rng.uniform(0.5, 0.8)
    parts = _boxes((w, t, w), (0.0, seat_y, 0.0), 0)
    parts += _boxes((w, back_h / 2, t), (0.0, seat_y + t + back_h / 2, -w + t), 1)
    leg_h = (seat_y - t + 1.0) / 2
    for sx in (-1, 1):
        for sz in (-1, 1):
            parts += _boxes((leg, leg_h, leg), (sx * (w - leg), -1.0 + leg_h, sz * (w - leg)), 2)
    return mix_labelled(parts, n, rng)


#: Part-labelled classes: (name, part names, sampler), in category order. Global part ids follow
#: this order: table 0-1, mug 2-3, lamp 4-6, rocket 7-9, chair 10-12.
PART_SHAPE_CLASSES: list[tuple[str, tuple[str, ...], LabelledSampler]] = [
    ("table", ("top", "leg"), part_table),
    ("mug", ("body", "handle"), part_mug),
    ("lamp", ("base", "pole", "shade"), part_lamp),
    ("rocket", ("body", "nose", "fin"), part_rocket),
    ("chair", ("seat", "back", "leg"), part_chair),
]


def part_layout(num_categories: int | None = None) -> dict[int, tuple[int, ...]]:
    """Category -> its global part ids for the first ``num_categories`` part classes."""
    classes = PART_SHAPE_CLASSES[: num_categories or len(PART_SHAPE_CLASSES)]
    layout: dict[int, tuple[int, ...]] = {}
    start = 0
    for category, (_, names, _) in enumerate(classes):
        layout[category] = tuple(range(start, start + len(names)))
        start += len(names)
    return layout
