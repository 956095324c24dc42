"""Build models from reference-style hyper-parameters; the timm-style size variants."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from .classifier import ReConClassifier
from .encoder import ReConEncoder
from .pretrainer import ReConPretrainer
from .segmentation import ReConPartSegmentation
from .zeroshot import ReConZeroShot

#: Sizes of the reference's variants (cfgs/pretrain/{tiny,small,base}.yaml); all have depth 12.
VARIANTS: dict[str, dict[str, int]] = {
    "recon_tiny": {"trans_dim": 192, "num_heads": 3, "depth": 12},
    "recon_small": {"trans_dim": 256, "num_heads": 4, "depth": 12},
    "recon_base": {"trans_dim": 384, "num_heads": 6, "depth": 12},
}

#: Feature sizes of the teachers the reference configs name (``img_encoder`` / ``text_encoder``).
TEACHER_DIMS: dict[str, int] = {
    "vit_base_patch16_224_in21k": 768,
    "ViT-B/32": 512,
    "ViT-B/16": 512,
    "ViT-L/14": 768,
}

KINDS = ("encoder", "pretrainer", "classifier", "zeroshot", "partseg")
_BUILDERS: dict[str, type[nn.Module]] = {
    "encoder": ReConEncoder,
    "pretrainer": ReConPretrainer,
    "classifier": ReConClassifier,
    "zeroshot": ReConZeroShot,
    "partseg": ReConPartSegmentation,
}


def _teacher_dim(name: str | None) -> int | None:
    if not name:
        return None
    if name not in TEACHER_DIMS:
        raise ValueError(f"unknown teacher {name!r}; pass its feature size as img_dim / text_dim")
    return TEACHER_DIMS[name]


def normalize_config(kind: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Turn a reference-style model config into constructor kwargs of ``kind``.

    Accepts the reference YAML's ``model:`` section as is: a nested ``transformer_config``,
    ``NAME`` (ignored), ``encoder_dims`` (must equal ``trans_dim``), ``type`` (head type of a
    classifier, feature type of a zero-shot model), teacher names ``img_encoder`` /
    ``text_encoder`` (turned into ``img_dim`` / ``text_dim``) and, for ``partseg``, ``cls_dim``
    (the reference's name of ``num_parts``).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    out = {k: v for k, v in cfg.items() if k not in ("transformer_config", "NAME")}
    out.update(cfg.get("transformer_config") or {})
    if "encoder_dims" in out:
        dims = out.pop("encoder_dims")
        if out.setdefault("trans_dim", dims) != dims:
            raise ValueError(f"encoder_dims={dims} must equal trans_dim={out['trans_dim']}")
    if kind == "partseg" and "cls_dim" in out:
        if out.setdefault("num_parts", out["cls_dim"]) != out["cls_dim"]:
            raise ValueError(f"cls_dim={out['cls_dim']} contradicts num_parts={out['num_parts']}")
        del out["cls_dim"]
    if "type" in out:
        out["head_type" if kind == "classifier" else "feature_type"] = out.pop("type")
    for name, dim in (("img_encoder", "img_dim"), ("text_encoder", "text_dim")):
        if name in out:
            teacher = out.pop(name)
            if kind in ("pretrainer", "zeroshot"):
                out.setdefault(dim, _teacher_dim(teacher))
    return out


def _build(kind: str, cfg: Mapping[str, Any]) -> nn.Module:
    kwargs = normalize_config(kind, cfg)
    try:
        return _BUILDERS[kind](**kwargs)
    except TypeError as err:
        raise TypeError(f"cannot build a {kind} from {sorted(kwargs)}: {err}") from err


def build_encoder(**cfg: Any) -> ReConEncoder:
    """A :class:`ReConEncoder` from reference-style hyper-parameters."""
    return _build("encoder", cfg)  # type: ignore[return-value]


def build_pretrainer(**cfg: Any) -> ReConPretrainer:
    """A :class:`ReConPretrainer` from reference-style hyper-parameters (Hydra target)."""
    return _build("pretrainer", cfg)  # type: ignore[return-value]


def build_classifier(**cfg: Any) -> ReConClassifier:
    """A :class:`ReConClassifier` from reference-style hyper-parameters (Hydra target)."""
    return _build("classifier", cfg)  # type: ignore[return-value]


def build_zeroshot(**cfg: Any) -> ReConZeroShot:
    """A :class:`ReConZeroShot` from reference-style hyper-parameters (Hydra target)."""
    return _build("zeroshot", cfg)  # type: ignore[return-value]


def build_partseg(**cfg: Any) -> ReConPartSegmentation:
    """A :class:`ReConPartSegmentation` from reference-style hyper-parameters (Hydra target)."""
    return _build("partseg", cfg)  # type: ignore[return-value]


def create_model(variant: str, kind: str = "classifier", **overrides: Any) -> nn.Module:
    """One factory for every size variant and model kind.

    Args:
        variant: ``recon_tiny`` | ``recon_small`` | ``recon_base``.
        kind: ``encoder`` | ``pretrainer`` | ``classifier`` | ``zeroshot`` | ``partseg``.
        overrides: any other hyper-parameter (reference names), e.g. ``cls_dim=15``.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}; got {variant!r}")
    size = dict(VARIANTS[variant])
    if "encoder_dims" in overrides and "trans_dim" not in overrides:
        overrides["trans_dim"] = overrides["encoder_dims"]
    return _build(kind, {**size, **overrides})


def recon_tiny(kind: str = "classifier", **overrides: Any) -> nn.Module:
    """ReCon-tiny (192 wide, 3 heads, 12 blocks)."""
    return create_model("recon_tiny", kind, **overrides)


def recon_small(kind: str = "classifier", **overrides: Any) -> nn.Module:
    """ReCon-small (256 wide, 4 heads, 12 blocks)."""
    return create_model("recon_small", kind, **overrides)


def recon_base(kind: str = "classifier", **overrides: Any) -> nn.Module:
    """ReCon-base (384 wide, 6 heads, 12 blocks)."""
    return create_model("recon_base", kind, **overrides)


def recon_partseg(size: str = "base", **overrides: Any) -> ReConPartSegmentation:
    """The part-segmentation model at a size variant: ``tiny`` | ``small`` | ``base``.

    The reference's segmentation model is the base size (with its 128 patches of 32 points);
    ``overrides`` as in :func:`create_model`, e.g. ``num_parts=50``.
    """
    name = size if size.startswith("recon_") else f"recon_{size}"
    return create_model(name, "partseg", **overrides)  # type: ignore[return-value]
