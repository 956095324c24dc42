"""Initialise downstream models from pretraining checkpoints, ours or the reference's."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models import (
    LoadReport,
    ReConClassifier,
    ReConEncoder,
    ReConPartSegmentation,
    load_backbone,
)
from .keymap import TEACHER_PREFIXES, official_names, to_ours
from .official import Source, infer_config, infer_kind, read_state_dict

#: A key only the reference's mini-PointNet naming has; it marks a reference state dict.
_OFFICIAL_MARK = "encoder.first_conv.0.weight"


def is_official(state: dict[str, torch.Tensor]) -> bool:
    """Whether a state dict uses the reference's names."""
    return any(k.endswith(_OFFICIAL_MARK) for k in state)


def _official_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    kind = infer_kind(state)
    head_type = infer_config(state, kind).get("head_type")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith(TEACHER_PREFIXES):
            continue
        # A key without a rule is kept under its own name; load_backbone reports it unexpected.
        out[to_ours(key, kind, head_type) or key] = value
    return out


def load_pretrained(model: nn.Module, source: Source) -> LoadReport:
    """Load the encoder (and any matching heads) of a checkpoint into ``model``.

    Works for this package's checkpoints (a Lightning ``.ckpt``, a ``state_dict`` of any model
    holding a ``ReConEncoder``) and the reference's (``ckpt-epoch-*.pth`` etc.). Everything whose
    name and shape match is loaded; the rest is reported, like the reference's
    ``load_model_from_ckpt`` (which loads with ``strict=False``).

    Args:
        model: e.g. a :class:`ReConClassifier`, ``ReConZeroShot``,
            :class:`ReConPartSegmentation` or bare ``ReConEncoder``.
        source: path or checkpoint dict.

    Returns:
        :class:`LoadReport` in our names: ``missing`` = what stays randomly initialised.
    """
    state = read_state_dict(source)
    if is_official(state):
        state = _official_to_ours(state)
    return load_backbone(model, state)


def official_report(
    report: LoadReport, model: nn.Module, head_type: str | None = None
) -> dict[str, list[str]]:
    """A report from a pretraining source in the reference's names (its log of missing /
    unexpected keys after ``load_model_from_ckpt``).

    Args:
        report: result of :func:`load_pretrained` from a pretraining checkpoint.
        model: the model loaded into (its layout names the missing keys).
        head_type: for a classifier whose head type differs from ``model.head_type``.
    """
    if isinstance(model, ReConClassifier):
        target: dict[str, Any] = {
            "kind": "classification",
            "head_type": head_type or model.head_type,
        }
    elif isinstance(model, ReConPartSegmentation):
        target = {"kind": "partseg"}
    elif isinstance(model, ReConEncoder):
        target = {"kind": "encoder"}
    else:
        target = {"kind": "downstream"}
    return {
        "missing": official_names(report.missing, **target),
        "unexpected": official_names(report.unexpected, "pretrain", strip_encoder_root=True),
    }
