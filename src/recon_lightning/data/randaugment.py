"""``RandAugmentMC`` as the reference uses it (FixMatch's pool, ``utils/randaugment.py``).

Each call picks ``n`` ops from the 14-op FixMatch pool *with replacement*, gives each a random
magnitude in ``1 .. m-1`` (``np.random.randint(1, m)``), applies it with probability 0.5, and then
always pastes a gray (127, 127, 127) square cutout of side 16 (``int(32 * 0.5)``) at a random
position. The op strengths are FixMatch's ``(max_v, bias)`` table, including its quirk that
Brightness/Color/Contrast/Sharpness factors lie in [0.14, 0.86] (never brighter/sharper).

Randomness comes from torch's generator (seeded per DataLoader worker by torch) rather than
Python's ``random`` and numpy as in the reference.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

PARAMETER_MAX = 10

Gen = torch.Generator | None

Op = Callable[[Image.Image, int, float, float, torch.Generator | None], Image.Image]


def _float_parameter(v: int, max_v: float) -> float:
    return float(v) * max_v / PARAMETER_MAX


def _int_parameter(v: int, max_v: float) -> int:
    return int(v * max_v / PARAMETER_MAX)


def _coin(generator: torch.Generator | None) -> bool:
    return bool(torch.rand((), generator=generator) < 0.5)


def auto_contrast(
    img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None
) -> Image.Image:
    return ImageOps.autocontrast(img)


def brightness(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(_float_parameter(v, max_v) + bias)


def color(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return ImageEnhance.Color(img).enhance(_float_parameter(v, max_v) + bias)


def contrast(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return ImageEnhance.Contrast(img).enhance(_float_parameter(v, max_v) + bias)


def equalize(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return ImageOps.equalize(img)


def identity(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return img


def posterize(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return ImageOps.posterize(img, _int_parameter(v, max_v) + int(bias))


def rotate(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    angle = _int_parameter(v, max_v) + bias
    return img.rotate(-angle if _coin(g) else angle)


def sharpness(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return ImageEnhance.Sharpness(img).enhance(_float_parameter(v, max_v) + bias)


def shear_x(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    s = _float_parameter(v, max_v) + bias
    s = -s if _coin(g) else s
    return img.transform(img.size, Image.Transform.AFFINE, (1, s, 0, 0, 1, 0))


def shear_y(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    s = _float_parameter(v, max_v) + bias
    s = -s if _coin(g) else s
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, s, 1, 0))


def solarize(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    return ImageOps.solarize(img, 256 - (_int_parameter(v, max_v) + int(bias)))


def translate_x(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    t = _float_parameter(v, max_v) + bias
    t = -t if _coin(g) else t
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, int(t * img.size[0]), 0, 1, 0))


def translate_y(img: Image.Image, v: int, max_v: float, bias: float, g: Gen = None) -> Image.Image:
    t = _float_parameter(v, max_v) + bias
    t = -t if _coin(g) else t
    return img.transform(img.size, Image.Transform.AFFINE, (1, 0, 0, 0, 1, int(t * img.size[1])))


#: FixMatch's pool: (op, max_v, bias), in the reference's order.
FIXMATCH_POOL: list[tuple[Op, float, float]] = [
    (auto_contrast, 0, 0),
    (brightness, 0.9, 0.05),
    (color, 0.9, 0.05),
    (contrast, 0.9, 0.05),
    (equalize, 0, 0),
    (identity, 0, 0),
    (posterize, 4, 4),
    (rotate, 30, 0),
    (sharpness, 0.9, 0.05),
    (shear_x, 0.3, 0),
    (shear_y, 0.3, 0),
    (solarize, 256, 0),
    (translate_x, 0.3, 0),
    (translate_y, 0.3, 0),
]


def cutout_abs(
    img: Image.Image, size: int, generator: torch.Generator | None = None
) -> Image.Image:
    """Paint a gray (127, 127, 127) ``size``-pixel square centred at a uniform random point.

    Like the reference, the square is clipped at the image border (so it can be smaller there).
    """
    w, h = img.size
    cx, cy = (torch.rand(2, generator=generator) * torch.tensor([w, h])).tolist()
    x0, y0 = int(max(0.0, cx - size / 2.0)), int(max(0.0, cy - size / 2.0))
    x1, y1 = int(min(w, x0 + size)), int(min(h, y0 + size))
    out = img.copy()
    ImageDraw.Draw(out).rectangle((x0, y0, x1, y1), fill=(127, 127, 127))
    return out


class RandAugmentMC:
    """FixMatch RandAugment: ``n`` ops (with replacement), magnitude in 1..m-1, p=0.5, cutout.

    Args:
        n: ops per image (2 in the reference).
        m: magnitude bound (10 in the reference); magnitudes are drawn from ``1 .. m-1``.
        cutout: side of the final gray square (16 in the reference).
        generator: optional torch generator for reproducible draws.
    """

    def __init__(
        self, n: int = 2, m: int = 10, cutout: int = 16, generator: torch.Generator | None = None
    ) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1; got {n}")
        if not 2 <= m <= PARAMETER_MAX:
            raise ValueError(f"m must be in [2, {PARAMETER_MAX}]; got {m}")
        self.n, self.m, self.cutout = n, m, cutout
        self.generator = generator
        self.pool = FIXMATCH_POOL

    def __call__(self, img: Image.Image) -> Image.Image:
        """Augment an RGB PIL image; returns a new RGB PIL image of the same size."""
        g = self.generator
        picks = torch.randint(len(self.pool), (self.n,), generator=g).tolist()
        for k in picks:
            op, max_v, bias = self.pool[k]
            v = int(torch.randint(1, self.m, (), generator=g))
            if bool(torch.rand((), generator=g) < 0.5):
                img = op(img, v, max_v, bias, g)
        return cutout_abs(img, self.cutout, g)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={self.n}, m={self.m}, cutout={self.cutout})"
