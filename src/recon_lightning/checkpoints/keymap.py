"""Key names of the reference code's state dicts <-> this package's names.

Every rule maps a module prefix of the reference (``{i}`` = a block index) to ours; the leaf name
after it (``weight``, ``bias``, ``running_mean``, ``qkv.weight``, ...) is the same on both sides,
and so is every shape, so a translation is a pure renaming. Keys are given without the
``module.`` prefix of DataParallel checkpoints.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

KINDS = ("pretrain", "classification", "partseg")

#: The encoder, relative to its root (``MAE_encoder.`` in a pretraining checkpoint, the top level
#: of a classifier's); ours sits under ``encoder.``.
ENCODER_RULES: tuple[tuple[str, str], ...] = (
    ("cls_token", "cls_token"),
    ("img_token", "img_token"),
    ("text_token", "text_token"),
    ("cls_pos", "cls_pos"),
    ("img_pos", "img_pos"),
    ("text_pos", "text_pos"),
    ("encoder.first_conv.0.", "patch_embed.conv1_1."),
    ("encoder.first_conv.1.", "patch_embed.bn1."),
    ("encoder.first_conv.3.", "patch_embed.conv1_2."),
    ("encoder.second_conv.0.", "patch_embed.conv2_1."),
    ("encoder.second_conv.1.", "patch_embed.bn2."),
    ("encoder.second_conv.3.", "patch_embed.conv2_2."),
    ("pos_embed.0.", "pos_embed.fc1."),
    ("pos_embed.2.", "pos_embed.fc2."),
    ("blocks.blocks.{i}.norm1.", "blocks.{i}.local.norm1."),
    ("blocks.blocks.{i}.attn.", "blocks.{i}.local.attn."),
    ("blocks.blocks.{i}.norm2.", "blocks.{i}.local.norm2."),
    ("blocks.blocks.{i}.mlp.", "blocks.{i}.local.mlp."),
    ("blocks.blocks.{i}.norm1_contrast.", "blocks.{i}.queries.norm1."),
    ("blocks.blocks.{i}.attn_contrast.", "blocks.{i}.queries.attn."),
    ("blocks.blocks.{i}.norm2_contrast.", "blocks.{i}.queries.norm2."),
    ("blocks.blocks.{i}.mlp_contrast.", "blocks.{i}.queries.mlp."),
    ("norm.", "norm."),
)

PRETRAIN_RULES: tuple[tuple[str, str], ...] = (
    *((f"MAE_encoder.{ref}", f"encoder.{ours}") for ref, ours in ENCODER_RULES),
    ("mask_token", "decoder.mask_token"),
    ("decoder_pos_embed.0.", "decoder.pos_embed.fc1."),
    ("decoder_pos_embed.2.", "decoder.pos_embed.fc2."),
    ("MAE_decoder.blocks.{i}.", "decoder.blocks.{i}."),
    ("MAE_decoder.norm.", "decoder.norm."),
    ("increase_dim.0.", "recon_head.proj."),
    ("img_proj.", "img_proj."),
    ("text_proj.", "text_proj."),
    ("cls_proj.0.", "cls_proj.fc1."),
    ("cls_proj.1.", "cls_proj.bn1."),
    ("cls_proj.3.", "cls_proj.fc2."),
    ("cls_proj.4.", "cls_proj.bn2."),
)

_BACKBONE_RULES = tuple((ref, f"encoder.{ours}") for ref, ours in ENCODER_RULES)

#: ``full`` and ``mlp3`` heads: Linear, BN, ReLU, Dropout, Linear, BN, ReLU, Dropout, Linear.
CLASSIFIER_MLP_RULES: tuple[tuple[str, str], ...] = (
    *_BACKBONE_RULES,
    ("cls_head_finetune.0.", "head.fc1."),
    ("cls_head_finetune.1.", "head.bn1."),
    ("cls_head_finetune.4.", "head.fc2."),
    ("cls_head_finetune.5.", "head.bn2."),
    ("cls_head_finetune.8.", "head.out."),
)

CLASSIFIER_LINEAR_RULES: tuple[tuple[str, str], ...] = (
    *_BACKBONE_RULES,
    ("cls_head_finetune.0.", "head.out."),
)

#: Zero-shot and SVM models (never saved by the reference, but their names are fixed by it):
#: the backbone at top level plus the projections.
DOWNSTREAM_RULES: tuple[tuple[str, str], ...] = (
    *_BACKBONE_RULES,
    ("img_proj.", "img_proj."),
    ("text_proj.", "text_proj."),
)

#: Part segmentation (segmentation/models/pt.py ``get_model``): the backbone at top level, the
#: category embedding, the propagation MLP and the per-point head.
PARTSEG_RULES: tuple[tuple[str, str], ...] = (
    *_BACKBONE_RULES,
    ("label_conv.0.", "label_embed.conv."),
    ("label_conv.1.", "label_embed.bn."),
    ("propagation_0.mlp_convs.{i}.", "propagation.convs.{i}."),
    ("propagation_0.mlp_bns.{i}.", "propagation.bns.{i}."),
    ("convs1.", "head.conv1."),
    ("bns1.", "head.bn1."),
    ("convs2.", "head.conv2."),
    ("bns2.", "head.bn2."),
    ("convs3.", "head.out."),
)

#: Frozen teachers inside ``ckpt-last.pth`` pretraining checkpoints; they live outside our models.
TEACHER_PREFIXES = ("img_encoder.", "text_encoder.")


@cache
def _compile(pattern: str) -> re.Pattern[str]:
    exact = not pattern.endswith(".")
    body = re.escape(pattern).replace(r"\{i\}", r"(?P<i>\d+)")
    return re.compile(body + ("$" if exact else "(?P<leaf>.+)$"))


def rules_for(kind: str, head_type: str | None = None) -> tuple[tuple[str, str], ...]:
    """The renaming rules of one checkpoint kind.

    Args:
        kind: ``pretrain`` | ``classification`` | ``partseg`` (part segmentation) |
            ``downstream`` (zero-shot / SVM layout) | ``encoder`` (a bare encoder's keys).
        head_type: for ``classification``: ``full`` / ``mlp3`` (same layers) or ``linear``.
    """
    if kind == "pretrain":
        return PRETRAIN_RULES
    if kind == "classification":
        return CLASSIFIER_LINEAR_RULES if head_type == "linear" else CLASSIFIER_MLP_RULES
    if kind == "partseg":
        return PARTSEG_RULES
    if kind == "downstream":
        return DOWNSTREAM_RULES
    if kind == "encoder":
        return ENCODER_RULES
    raise ValueError(f"kind must be one of {(*KINDS, 'downstream', 'encoder')}; got {kind!r}")


def _translate(key: str, rules: Iterable[tuple[str, str]], reverse: bool) -> str | None:
    for ref, ours in rules:
        src, dst = (ours, ref) if reverse else (ref, ours)
        match = _compile(src).match(key)
        if match is None:
            continue
        out = dst.replace("{i}", match.groupdict().get("i") or "")
        return out + (match.group("leaf") if "leaf" in match.groupdict() else "")
    return None


def to_ours(key: str, kind: str, head_type: str | None = None) -> str | None:
    """Our name for a reference key (without ``module.``), or None if no rule places it."""
    return _translate(key, rules_for(kind, head_type), reverse=False)


def to_official(key: str, kind: str, head_type: str | None = None) -> str | None:
    """The reference's name for one of our keys, or None if no rule places it."""
    return _translate(key, rules_for(kind, head_type), reverse=True)


def official_names(
    keys: Iterable[str], kind: str, head_type: str | None = None, strip_encoder_root: bool = False
) -> list[str]:
    """Reference names of our ``keys``; raise naming any key without one.

    Args:
        keys: our names.
        kind, head_type: which layout (see :func:`rules_for`).
        strip_encoder_root: drop the reference's ``MAE_encoder.`` prefix, as its downstream
            loaders do before reporting missing / unexpected keys.
    """
    out = []
    for key in keys:
        name = to_official(key, kind, head_type)
        if name is None:
            raise KeyError(f"no reference name for {key!r} in a {kind} checkpoint")
        if strip_encoder_root and name.startswith("MAE_encoder."):
            name = name[len("MAE_encoder.") :]
        out.append(name)
    return out
