"""The pair of frozen teachers the pretraining task distils from, and the config entry point."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .image import ImageTeacher, build_image_teacher
from .preprocess import check_mode
from .text import TextTeacher, build_text_teacher

TEACHER_MODES: tuple[str, ...] = ("pretrained", "random", "cached")


class Teachers(nn.Module):
    """Frozen image + text teachers behind one ``targets(batch)`` call.

    The teachers' weights are not written into ``state_dict()`` (they are frozen and reloaded from
    their files; the reference's ``ckpt-epoch-*.pth`` drops them as well), and loading a state dict
    without them keeps the weights already in place, so task checkpoints stay small and still load
    strictly. ``persist_weights=True`` keeps them in the state dict.

    Attributes:
        image, text: the two teachers.
        img_dim, text_dim: their feature sizes (student projection sizes follow them).
    """

    def __init__(self, image: ImageTeacher, text: TextTeacher, persist_weights: bool = False):
        super().__init__()
        self.image = image
        self.text = text
        self.img_dim: int = image.out_dim
        self.text_dim: int = text.out_dim
        if not persist_weights:
            self.register_state_dict_post_hook(_drop_own_entries)
            self.register_load_state_dict_pre_hook(_fill_own_entries)

    def targets(
        self, batch: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher features of a pretraining batch.

        Args:
            batch: ``image`` uint8 RGB (B, 3, 224, 224) and ``text`` (B category descriptions).
            generator: CPU generator for the prompt draw (torch's global RNG when ``None``).

        Returns:
            ``(img_target (B, img_dim), text_target (B, text_dim))``, without gradient.
        """
        img = self.image(batch["image"])
        txt = self.text(list(batch["text"]), generator=generator)
        return img, txt

    def extra_repr(self) -> str:
        return f"img_dim={self.img_dim}, text_dim={self.text_dim}"


def _drop_own_entries(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    """State-dict post hook: remove this module's entries (the frozen teacher weights)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        del state_dict[key]


def _fill_own_entries(
    module: nn.Module,
    state_dict: dict[str, Any],
    prefix: str,
    local_metadata: Any,
    strict: bool,
    missing_keys: list[str],
    unexpected_keys: list[str],
    error_msgs: list[str],
) -> None:
    """Load pre hook: entries the incoming dict lacks keep the current teacher weights."""
    # The children's own state dicts: this module's post hook would hide them.
    for child_name, child in module.named_children():
        for name, value in child.state_dict().items():
            state_dict.setdefault(f"{prefix}{child_name}.{name}", value)


def _teacher_options(value: str | Mapping[str, Any] | None, default: str) -> dict[str, Any]:
    """``"name"`` or ``{name: ..., checkpoint: ...}`` (a Hydra DictConfig too) -> plain dict."""
    if value is None:
        return {"name": default, "checkpoint": None}
    if isinstance(value, str):
        return {"name": value, "checkpoint": None}
    opts = {str(k): v for k, v in value.items()}
    unknown = set(opts) - {"name", "checkpoint"}
    if unknown:
        raise ValueError(f"unknown teacher options {sorted(unknown)}; expected name, checkpoint")
    return {"name": opts.get("name", default), "checkpoint": opts.get("checkpoint")}


def build_teachers(
    image: str | Mapping[str, Any] | None = "vit_b16_in21k",
    text: str | Mapping[str, Any] | None = "clip_b32",
    mode: str = "pretrained",
    preprocess: str = "reference",
    tiny: bool = False,
    cache_dir: str | os.PathLike[str] | None = None,
    num_shapes: int | None = None,
    persist_weights: bool = False,
) -> nn.Module:
    """Build the teachers from config values (the ``_target_`` of ``conf/teachers/*.yaml``).

    Args:
        image: image teacher name or ``{name, checkpoint}``; names: ``vit_b16_in21k`` (reference
            default), ``vit_b16_in21k_pooled`` (approximation), ``clip_b32`` (zero-shot setting).
        text: text teacher name or ``{name, checkpoint}``; ``clip_b32``.
        mode: ``pretrained`` (weights from ``checkpoint`` or the caches), ``random`` (random
            init, no file read), or ``cached`` (features from ``build_cache``; no network loaded).
        preprocess: ``reference`` (BGR + ImageNet statistics, as the reference) or ``native``.
        tiny: small architectures with the real output sizes (CPU tests and demos).
        cache_dir: the feature cache folder (``cached`` mode).
        num_shapes: dataset length to check the cache against (``cached`` mode), if known.
        persist_weights: keep the teacher weights in ``state_dict()`` (see ``Teachers``).

    Returns:
        ``Teachers``, or ``CachedTeachers`` in ``cached`` mode; both have ``targets(batch)``,
        ``img_dim`` and ``text_dim``.
    """
    if mode not in TEACHER_MODES:
        raise ValueError(f"teachers mode must be one of {TEACHER_MODES}, got {mode!r}")
    check_mode(preprocess)
    img_opts = _teacher_options(image, "vit_b16_in21k")
    txt_opts = _teacher_options(text, "clip_b32")
    if mode == "cached":
        from .cache import CachedTeachers

        if cache_dir is None:
            raise ValueError(
                "teachers mode 'cached' needs cache_dir (see `recon-data cache-teachers`)"
            )
        return CachedTeachers(
            cache_dir,
            image=img_opts["name"],
            text=txt_opts["name"],
            preprocess=preprocess,
            num_shapes=num_shapes,
        )
    pretrained = mode == "pretrained"
    img = build_image_teacher(
        img_opts["name"], img_opts["checkpoint"], pretrained, preprocess=preprocess, tiny=tiny
    )
    txt = build_text_teacher(txt_opts["name"], txt_opts["checkpoint"], pretrained, tiny=tiny)
    return Teachers(img, txt, persist_weights=persist_weights)
