"""Pixel normalisation in front of the frozen image teachers.

The data layer hands uint8 RGB images that are already augmented (resize, flip, crop, RandAugment,
cutout). What remains is the teacher-specific part:

- ``reference`` (default): what the reference fed every image teacher. It read PNGs with
  ``cv2.imread`` and never converted BGR to RGB, then normalised with the ImageNet mean/std
  (spec §3.2), so channel 0 holds blue pixels normalised with the red statistics.
- ``native``: RGB with the statistics each teacher was trained with (Google's in21k ViT: 0.5/0.5;
  CLIP: OpenAI's mean/std).
"""

from __future__ import annotations

from typing import Literal

import torch

PreprocessMode = Literal["reference", "native"]
PREPROCESS_MODES: tuple[str, ...] = ("reference", "native")

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: Google's ViT checkpoints were trained on inputs scaled to [-1, 1].
INCEPTION_MEAN: tuple[float, float, float] = (0.5, 0.5, 0.5)
INCEPTION_STD: tuple[float, float, float] = (0.5, 0.5, 0.5)
OPENAI_CLIP_MEAN: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)


def check_mode(mode: str) -> str:
    """Return ``mode`` if it is a known preprocessing mode, else raise ``ValueError``."""
    if mode not in PREPROCESS_MODES:
        raise ValueError(f"preprocess must be one of {PREPROCESS_MODES}, got {mode!r}")
    return mode


def normalize_images(
    images: torch.Tensor,
    mode: str,
    native_mean: tuple[float, float, float],
    native_std: tuple[float, float, float],
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 RGB (B, 3, H, W) -> normalised float (B, 3, H, W) as the teacher expects.

    Args:
        images: uint8 RGB images in [0, 255].
        mode: ``"reference"`` (BGR + ImageNet statistics) or ``"native"`` (RGB + the teacher's own
            ``native_mean``/``native_std``).
        native_mean, native_std: the teacher's own statistics, used in ``native`` mode.
        dtype: floating dtype of the result.
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"teachers take uint8 RGB images, got dtype {images.dtype}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"teachers take (B, 3, H, W) images, got shape {tuple(images.shape)}")
    check_mode(mode)
    if mode == "reference":
        images = images.flip(1)  # RGB -> BGR: the reference's cv2.imread order
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        mean, std = native_mean, native_std
    x = images.to(dtype).div_(255.0)
    m = torch.tensor(mean, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=dtype, device=x.device).view(1, 3, 1, 1)
    return x.sub_(m).div_(s)
