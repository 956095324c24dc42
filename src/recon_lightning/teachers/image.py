"""Frozen image teachers: uint8 RGB images -> one feature vector per image.

Variants (``name``):

- ``vit_b16_in21k`` (default, the reference's teacher): Google's ViT-B/16 ImageNet-21k with its
  representation layer; feature = tanh(Linear(LN(CLS))), 768-d, values in (-1, 1). This is what
  timm 0.4.5's ``vit_base_patch16_224_in21k`` computed through its ``pre_logits``. Current timm
  keeps only the backbone, so the representation layer is held here and both are loaded from the
  original release file, Google's ``.npz``, or the Hugging Face
  ``google/vit-base-patch16-224-in21k`` checkpoint (``pooler.dense``).
- ``vit_b16_in21k_pooled`` (approximation, not the reference): timm's
  ``vit_base_patch16_224.orig_in21k`` as timm ships it today: the same backbone's LN(CLS), 768-d,
  without the representation layer. Use it only when none of the files above can be had; the
  distillation target differs from the reference's (no Linear, no tanh).
- ``clip_b32`` (the reference's zero-shot setting): OpenAI CLIP ViT-B/32 image tower, 512-d.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import timm
import torch
from torch import nn

from .clip import (
    CLIP_B32_VISION,
    CLIP_B32_WEIGHTS,
    TINY_CLIP_VISION,
    build_clip_vision,
    clip_visual_state,
)
from .frozen import FrozenModule
from .preprocess import (
    INCEPTION_MEAN,
    INCEPTION_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    check_mode,
    normalize_images,
)
from .vit_keys import REPRESENTATION, to_timm
from .weight_files import (
    CacheFile,
    HubFile,
    StateDict,
    WeightSpec,
    load_exact,
    read_state_dict,
    resolve_weights,
    torch_hub_checkpoints_dir,
)

IMAGE_TEACHERS: tuple[str, ...] = ("vit_b16_in21k", "vit_b16_in21k_pooled", "clip_b32")


@dataclass(frozen=True)
class ViTSpec:
    """Hyper-parameters of a timm ``VisionTransformer`` backbone."""

    img_size: int = 224
    patch_size: int = 16
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12


VIT_B16 = ViTSpec()
#: Tiny backbone for CPU tests and demos; the representation layer still outputs 768.
TINY_VIT_B16 = ViTSpec(embed_dim=32, depth=2, num_heads=2)
#: The pooled variant's output is the backbone width, so its tiny form keeps width 768.
TINY_VIT_B16_POOLED = ViTSpec(embed_dim=768, depth=1, num_heads=12)
REPRESENTATION_SIZE = 768

_JX_IN21K = CacheFile(
    torch_hub_checkpoints_dir,
    "jx_vit_base_patch16_224_in21k-e5005f0a.pth",
    "https://github.com/huggingface/pytorch-image-models/releases/download/v0.1-vitjx/"
    "jx_vit_base_patch16_224_in21k-e5005f0a.pth",
    "torch hub cache (timm 0.4.5, as the reference downloaded it)",
)
_HF_IN21K = HubFile("google/vit-base-patch16-224-in21k", ("model.safetensors", "pytorch_model.bin"))

IN21K_WEIGHTS = WeightSpec(
    what=(
        "image teacher 'vit_b16_in21k' (Google's ViT-B/16 ImageNet-21k with its representation "
        "layer, as timm 0.4.5's vit_base_patch16_224_in21k loaded it for the reference)"
    ),
    sources=(_JX_IN21K, _HF_IN21K),
    folder_names=("ViT-B_16.npz",),
)
POOLED_WEIGHTS = WeightSpec(
    what="image teacher 'vit_b16_in21k_pooled' (timm vit_base_patch16_224.orig_in21k backbone)",
    sources=(
        HubFile("timm/vit_base_patch16_224.orig_in21k", ("model.safetensors", "pytorch_model.bin")),
        _JX_IN21K,
        _HF_IN21K,
    ),
    folder_names=("ViT-B_16.npz",),
)


class In21kViT(nn.Module):
    """timm ViT backbone (no classifier) with an optional representation layer.

    ``forward``: normalised images (B, 3, H, W) -> (B, 768): tanh(Linear(LN(CLS))) with the
    representation layer, LN(CLS) without it.
    """

    def __init__(self, spec: ViTSpec, representation_size: int | None) -> None:
        super().__init__()
        self.vit = timm.create_model(
            "vit_base_patch16_224",
            pretrained=False,
            num_classes=0,
            img_size=spec.img_size,
            patch_size=spec.patch_size,
            embed_dim=spec.embed_dim,
            depth=spec.depth,
            num_heads=spec.num_heads,
        )
        self.pre_logits = (
            nn.Linear(spec.embed_dim, representation_size) if representation_size else None
        )
        self.out_dim = representation_size or spec.embed_dim
        self.image_size = spec.img_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, out_dim) features."""
        tokens = self.vit.forward_features(x)  # (B, 1 + N, C), after the final LayerNorm
        cls = self.vit.forward_head(tokens, pre_logits=True)  # global_pool="token": the CLS row
        if self.pre_logits is None:
            return cls
        return torch.tanh(self.pre_logits(cls))

    def load_weights(self, raw: StateDict, source: str) -> None:
        """Load any supported in21k file (see ``vit_keys``) into backbone and representation."""
        sd = to_timm(raw)
        rep_keys = [k for k in sd if k.startswith(REPRESENTATION)]
        rep = {k[len(REPRESENTATION) :]: sd.pop(k) for k in rep_keys}
        if self.pre_logits is not None:
            if not rep:
                raise ValueError(
                    f"{source} holds the ViT-B/16 in21k backbone but not the representation "
                    "layer (pre_logits) that the reference's feature needs; it is probably timm's "
                    "current vit_base_patch16_224.orig_in21k file. Use Google's original release "
                    "(jx_vit_base_patch16_224_in21k-e5005f0a.pth, ViT-B_16.npz, or the hub repo "
                    "google/vit-base-patch16-224-in21k) or accept the approximation "
                    "teachers.image.name=vit_b16_in21k_pooled."
                )
            load_exact(self.pre_logits, rep, source)
        load_exact(self.vit, sd, source)


class ClipVisual(nn.Module):
    """OpenAI CLIP image tower: normalised (B, 3, H, W) -> (B, 512) = LN(CLS) @ proj."""

    def __init__(self, tiny: bool) -> None:
        super().__init__()
        spec = TINY_CLIP_VISION if tiny else CLIP_B32_VISION
        self.visual = build_clip_vision(spec)
        self.out_dim = spec.output_dim
        self.image_size = spec.image_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised images -> (B, 512) features."""
        return self.visual(x)

    def load_weights(self, raw: StateDict, source: str) -> None:
        """Load the ``visual`` part of an OpenAI / open_clip / reference CLIP file."""
        sd = clip_visual_state(raw)
        if sd is None:
            raise ValueError(f"{source} holds no CLIP image tower (no visual.* entries)")
        load_exact(self.visual, sd, source)


@dataclass(frozen=True)
class _Variant:
    build: Callable[[bool], In21kViT | ClipVisual]
    weights: WeightSpec
    native_mean: tuple[float, float, float]
    native_std: tuple[float, float, float]


_VARIANTS: dict[str, _Variant] = {
    "vit_b16_in21k": _Variant(
        lambda tiny: In21kViT(TINY_VIT_B16 if tiny else VIT_B16, REPRESENTATION_SIZE),
        IN21K_WEIGHTS,
        INCEPTION_MEAN,
        INCEPTION_STD,
    ),
    "vit_b16_in21k_pooled": _Variant(
        lambda tiny: In21kViT(TINY_VIT_B16_POOLED if tiny else VIT_B16, None),
        POOLED_WEIGHTS,
        INCEPTION_MEAN,
        INCEPTION_STD,
    ),
    "clip_b32": _Variant(ClipVisual, CLIP_B32_WEIGHTS, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
}


class ImageTeacher(FrozenModule):
    """A frozen image teacher: uint8 RGB (B, 3, H, W) -> (B, out_dim) float features.

    Runs in its parameters' dtype (fp32, as the reference) unless called inside an autocast
    region, which then applies as to any module.

    Attributes:
        name: the variant (one of ``IMAGE_TEACHERS``).
        out_dim: feature size (768 for the in21k ViTs, 512 for CLIP).
        preprocess: ``"reference"`` or ``"native"`` (see ``preprocess.py``).
        source: the weight file loaded, or ``"random"``.
    """

    def __init__(
        self,
        name: str,
        encoder: In21kViT | ClipVisual,
        native_mean: tuple[float, float, float],
        native_std: tuple[float, float, float],
        preprocess: str = "reference",
        source: str = "random",
    ) -> None:
        super().__init__()
        self.name = name
        self.encoder = encoder
        self.out_dim: int = encoder.out_dim
        self.image_size: int = encoder.image_size
        self.native_mean = native_mean
        self.native_std = native_std
        self.preprocess = check_mode(preprocess)
        self.source = source
        self.freeze()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 RGB (B, 3, S, S), S = ``image_size`` (224) -> (B, out_dim) features."""
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"image teacher {self.name} takes {self.image_size}x{self.image_size} images, "
                f"got {tuple(images.shape[-2:])}"
            )
        dtype = next(self.encoder.parameters()).dtype
        x = normalize_images(images, self.preprocess, self.native_mean, self.native_std, dtype)
        return self.encoder(x)

    def extra_repr(self) -> str:
        return f"name={self.name}, out_dim={self.out_dim}, preprocess={self.preprocess}"


def build_image_teacher(
    name: str = "vit_b16_in21k",
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    preprocess: str = "reference",
    tiny: bool = False,
) -> ImageTeacher:
    """Build a frozen image teacher.

    Args:
        name: ``vit_b16_in21k`` (reference), ``vit_b16_in21k_pooled`` (approximation) or
            ``clip_b32`` (zero-shot setting).
        checkpoint: weight file (or folder holding one); ``None`` searches the caches (hub cache,
            torch hub, ``~/.cache/clip``).
        pretrained: ``False`` keeps the random initialisation (no file is read).
        preprocess: ``"reference"`` (BGR + ImageNet statistics) or ``"native"``.
        tiny: build the small same-output-size architecture (tests, CPU demos); a checkpoint must
            then hold weights of that architecture.

    Raises:
        WeightsNotFoundError: ``pretrained`` and no weight file was found.
    """
    if name not in _VARIANTS:
        raise ValueError(f"unknown image teacher {name!r}; choose one of {IMAGE_TEACHERS}")
    variant = _VARIANTS[name]
    encoder = variant.build(tiny)
    source = "random"
    if pretrained:
        path = resolve_weights(variant.weights, checkpoint, "teachers.image.checkpoint")
        encoder.load_weights(read_state_dict(path), str(path))
        source = str(path)
    return ImageTeacher(name, encoder, variant.native_mean, variant.native_std, preprocess, source)
