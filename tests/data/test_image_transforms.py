"""Image pipelines: output format, RandAugmentMC's draws and cutout."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from recon_lightning.data.image_transforms import (
    EvalImageTransform,
    PretrainImageTransform,
    get_image_transform,
)
from recon_lightning.data.randaugment import FIXMATCH_POOL, RandAugmentMC


def _image(mode: str = "RGBA", size: tuple[int, int] = (40, 30)) -> Image.Image:
    rng = np.random.default_rng(0)
    channels = len(mode)
    arr = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


@pytest.mark.parametrize("source", ["rgba", "rgb_array", "gray"])
def test_train_pipeline_outputs_uint8_rgb_224(source: str) -> None:
    img = {
        "rgba": _image("RGBA"),
        "rgb_array": np.asarray(_image("RGB")),
        "gray": _image("L"),
    }[source]
    out = PretrainImageTransform()(img)
    assert out.shape == (3, 224, 224) and out.dtype == torch.uint8


def test_train_pipeline_is_random() -> None:
    t = PretrainImageTransform()
    img = _image("RGB", (64, 64))
    torch.manual_seed(0)
    a = t(img)
    b = t(img)
    assert not torch.equal(a, b)


def test_eval_pipeline_is_deterministic_bicubic_resize() -> None:
    img = _image("RGB", (50, 20))
    out = EvalImageTransform(224)(img)
    expected = np.asarray(img.resize((224, 224), Image.Resampling.BICUBIC))
    assert out.dtype == torch.uint8 and out.shape == (3, 224, 224)
    np.testing.assert_array_equal(out.permute(1, 2, 0).numpy(), expected)
    torch.testing.assert_close(EvalImageTransform(224)(img), out)
    assert isinstance(get_image_transform(train=False), EvalImageTransform)
    assert isinstance(get_image_transform(train=True), PretrainImageTransform)


def test_pool_is_fixmatch() -> None:
    names = [op.__name__ for op, _, _ in FIXMATCH_POOL]
    assert names == [
        "auto_contrast", "brightness", "color", "contrast", "equalize", "identity", "posterize",
        "rotate", "sharpness", "shear_x", "shear_y", "solarize", "translate_x", "translate_y",
    ]  # fmt: skip


def test_randaugment_magnitudes_probability_and_replacement() -> None:
    seen: list[int] = []

    def record(img, v, max_v, bias, g=None):
        seen.append(v)
        return img

    aug = RandAugmentMC(n=2, m=10, generator=torch.Generator().manual_seed(0))
    aug.pool = [(record, 0, 0)]  # a one-op pool: both picks must be it (with replacement)
    img = _image("RGB", (32, 32))
    calls = 400
    for _ in range(calls):
        aug(img)
    assert min(seen) >= 1 and max(seen) <= 9  # np.random.randint(1, m) in the reference
    assert set(seen) == set(range(1, 10))
    applied = len(seen) / (2 * calls)
    assert 0.4 < applied < 0.6  # each pick applied with p = 0.5


def test_cutout_is_gray_square_of_side_16() -> None:
    aug = RandAugmentMC(n=1, m=10, generator=torch.Generator().manual_seed(1))
    aug.pool = [(lambda img, v, max_v, bias, g=None: img, 0, 0)]
    white = Image.new("RGB", (64, 64), (255, 255, 255))
    for _ in range(20):
        arr = np.asarray(aug(white))
        gray = (arr == 127).all(axis=-1)
        assert gray.sum() > 0
        assert ((arr == 127).all(-1) | (arr == 255).all(-1)).all()  # only white and the cutout
        rows, cols = np.nonzero(gray)
        # PIL's rectangle includes both corners: at most 17 x 17, clipped at the border.
        assert rows.max() - rows.min() <= 16 and cols.max() - cols.min() <= 16


def test_every_pool_op_keeps_size_and_mode() -> None:
    img = _image("RGB", (48, 40))
    g = torch.Generator().manual_seed(2)
    for op, max_v, bias in FIXMATCH_POOL:
        out = op(img, 9, max_v, bias, g)
        assert out.size == img.size and out.mode == "RGB"


def test_randaugment_rejects_bad_settings() -> None:
    with pytest.raises(ValueError):
        RandAugmentMC(n=0)
    with pytest.raises(ValueError):
        RandAugmentMC(m=11)
