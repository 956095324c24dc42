"""Image pipelines for the pretraining views: the reference's train augmentation and an eval one.

Train (``utils/transforms.transform_train`` in the reference): resize to 256 x 256 (PIL bicubic, the
reference's ``ResizeImage``) -> RandomHorizontalFlip -> RandomResizedCrop(224, scale (0.64, 1.0),
bicubic) -> :class:`~recon_lightning.data.randaugment.RandAugmentMC` (n=2, m=10, 16 px cutout).

The pipelines stop at a uint8 (3, 224, 224) **RGB** tensor. The reference goes on with ToTensor +
ImageNet Normalize on an image that ``cv2.imread`` left in BGR order; that colour flip and the
normalisation belong to the image teacher (which may instead use its own native preprocessing),
so batches stay compact uint8 until they reach the device.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2

from .randaugment import RandAugmentMC

ImageTransform = Callable[[Image.Image | np.ndarray], torch.Tensor]


def to_pil_rgb(img: Image.Image | np.ndarray) -> Image.Image:
    """An RGB PIL image from a PIL image (any mode) or an (H, W), (H, W, 3|4) uint8 array."""
    if isinstance(img, np.ndarray):
        if img.dtype != np.uint8:
            raise TypeError(f"image arrays must be uint8; got {img.dtype}")
        img = Image.fromarray(img)
    # Like cv2.imread(IMREAD_COLOR) in the reference, alpha is dropped, not composited.
    return img if img.mode == "RGB" else img.convert("RGB")


class _Resize:
    """Resize to a fixed (size, size) with PIL bicubic, ignoring aspect (reference ResizeImage)."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, img: Image.Image) -> Image.Image:
        return img.resize((self.size, self.size), Image.Resampling.BICUBIC)

    def __repr__(self) -> str:
        return f"Resize(({self.size}, {self.size}), bicubic)"


class PretrainImageTransform:
    """The reference's train image augmentation, ending in a uint8 (3, crop, crop) RGB tensor.

    Args:
        resize: side of the initial square resize (256).
        crop: output side (224).
        crop_scale: RandomResizedCrop area range ((0.64, 1.0)).
        randaugment_n: RandAugmentMC ops per image (2).
        randaugment_m: RandAugmentMC magnitude bound (10).
        cutout: side of the gray cutout square (16).
    """

    def __init__(
        self,
        resize: int = 256,
        crop: int = 224,
        crop_scale: tuple[float, float] = (0.64, 1.0),
        randaugment_n: int = 2,
        randaugment_m: int = 10,
        cutout: int = 16,
    ) -> None:
        self.pipeline = v2.Compose(
            [
                _Resize(resize),
                v2.RandomHorizontalFlip(),
                v2.RandomResizedCrop(
                    crop, scale=tuple(crop_scale), interpolation=InterpolationMode.BICUBIC
                ),
                RandAugmentMC(randaugment_n, randaugment_m, cutout),
                v2.PILToTensor(),
            ]
        )

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """Augment one image -> uint8 (3, crop, crop) RGB tensor."""
        return self.pipeline(to_pil_rgb(img))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


class EvalImageTransform:
    """Deterministic variant: bicubic resize to (size, size) -> uint8 (3, size, size) RGB tensor."""

    def __init__(self, size: int = 224) -> None:
        self.pipeline = v2.Compose([_Resize(size), v2.PILToTensor()])

    def __call__(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """Resize one image -> uint8 (3, size, size) RGB tensor."""
        return self.pipeline(to_pil_rgb(img))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.pipeline})"


def get_image_transform(train: bool, size: int = 224) -> ImageTransform:
    """The reference's train augmentation (``train=True``) or the deterministic eval resize."""
    return PretrainImageTransform(crop=size) if train else EvalImageTransform(size)
