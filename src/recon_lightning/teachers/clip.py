"""OpenAI CLIP ViT-B/32 towers (open_clip modules) and where their weights live.

The reference used OpenAI's CLIP code in fp32; open_clip's ``VisionTransformer`` and
``TextTransformer`` with QuickGELU compute the same functions and keep OpenAI's parameter names, so
an OpenAI/open_clip state dict loads without renaming (after splitting off the ``visual.`` part).
"""

from __future__ import annotations

from dataclasses import dataclass

from open_clip.transformer import QuickGELU, TextTransformer, VisionTransformer

from .weight_files import (
    CacheFile,
    HubFile,
    StateDict,
    WeightSpec,
    openai_clip_cache_dir,
    select_prefix,
    strip_prefix,
)

#: Both CLIP teachers are read from the same ViT-B/32 ``openai`` file.
CLIP_B32_WEIGHTS = WeightSpec(
    what="CLIP ViT-B/32 teacher (OpenAI weights, open_clip tag 'openai')",
    sources=(
        HubFile(
            "timm/vit_base_patch32_clip_224.openai",
            ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"),
        ),
        CacheFile(
            openai_clip_cache_dir,
            "ViT-B-32.pt",
            "https://openaipublic.azureedge.net/clip/models/"
            "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
            "OpenAI CLIP cache (the reference's clip.load)",
        ),
    ),
)


@dataclass(frozen=True)
class ClipVisionSpec:
    """Hyper-parameters of a CLIP ViT image tower."""

    image_size: int = 224
    patch_size: int = 32
    width: int = 768
    layers: int = 12
    heads: int = 12
    output_dim: int = 512


@dataclass(frozen=True)
class ClipTextSpec:
    """Hyper-parameters of a CLIP text tower (BPE vocabulary and context fixed by the tokenizer)."""

    width: int = 512
    layers: int = 12
    heads: int = 8
    output_dim: int = 512
    context_length: int = 77
    vocab_size: int = 49408


CLIP_B32_VISION = ClipVisionSpec()
CLIP_B32_TEXT = ClipTextSpec()
#: Small towers with the real output sizes, for CPU tests and demos.
TINY_CLIP_VISION = ClipVisionSpec(width=64, layers=2, heads=2)
TINY_CLIP_TEXT = ClipTextSpec(width=64, layers=2, heads=2)


def build_clip_vision(spec: ClipVisionSpec) -> VisionTransformer:
    """open_clip ``VisionTransformer`` with OpenAI's QuickGELU: normalised (B,3,H,W) -> (B, D)."""
    return VisionTransformer(
        image_size=spec.image_size,
        patch_size=spec.patch_size,
        width=spec.width,
        layers=spec.layers,
        heads=spec.heads,
        mlp_ratio=4.0,
        output_dim=spec.output_dim,
        act_layer=QuickGELU,
    )


def build_clip_text(spec: ClipTextSpec) -> TextTransformer:
    """open_clip ``TextTransformer`` with QuickGELU, causal mask, EOT (argmax) pooling."""
    return TextTransformer(
        context_length=spec.context_length,
        vocab_size=spec.vocab_size,
        width=spec.width,
        heads=spec.heads,
        layers=spec.layers,
        output_dim=spec.output_dim,
        act_layer=QuickGELU,
    )


_TEXT_KEYS = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
)


def _is_text_key(k: str) -> bool:
    return any(k == p or k.startswith(p) for p in _TEXT_KEYS)


def _from_reference_visual(sd: StateDict) -> StateDict:
    """The reference's CLIP image wrapper names (``cls_token``, ``pos_embed``, ``blocks.N``)."""
    out: StateDict = {}
    for k, v in sd.items():
        if k == "cls_token":
            k = "class_embedding"
        elif k == "pos_embed":
            k = "positional_embedding"
        elif k.startswith("blocks."):
            k = "transformer.resblocks." + k[len("blocks.") :]
        out[k] = v
    return out


def clip_visual_state(sd: StateDict) -> StateDict | None:
    """The image tower's entries of a CLIP file, in open_clip ``VisionTransformer`` names.

    Accepts a full OpenAI/open_clip CLIP dict (``visual.*``), a visual-only dict, or a reference
    ``ckpt-last.pth`` of the CLIP-teacher pretraining (``module.img_encoder.*``). ``None`` when the
    file holds no CLIP image tower.
    """
    sd = strip_prefix(sd, ("module.",))
    ref = select_prefix(sd, "img_encoder.")
    if ref is not None:
        return _from_reference_visual(ref) if "conv1.weight" in ref else None
    visual = select_prefix(sd, "visual.")
    if visual is not None:
        return visual
    return sd if "class_embedding" in sd and "conv1.weight" in sd else None


def clip_text_state(sd: StateDict) -> StateDict | None:
    """The text tower's entries of a CLIP file, in open_clip ``TextTransformer`` names.

    Accepts a full OpenAI/open_clip CLIP dict (top-level text keys; ``logit_scale`` and the
    TorchScript archive's ``input_resolution``/``context_length``/``vocab_size`` are dropped), or a
    reference ``ckpt-last.pth`` (``module.text_encoder.*``). ``None`` when there is no text tower.
    """
    sd = strip_prefix(sd, ("module.",))
    sd = select_prefix(sd, "text_encoder.") or sd
    text = {k: v for k, v in sd.items() if _is_text_key(k)}
    return text if "token_embedding.weight" in text else None
