"""Initialise a model's encoder (and matching heads) from another model's state dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

#: A key every ReCon encoder has; it locates the encoder inside any state dict.
ENCODER_ANCHOR = "patch_embed.conv1_1.weight"


@dataclass
class LoadReport:
    """What a partial load did, in the target model's names (like ``load_state_dict``'s result).

    Attributes:
        loaded: target keys filled from the checkpoint.
        missing: target keys left at their initialisation (BatchNorm ``num_batches_tracked`` is
            never listed, as torch fills it in).
        unexpected: checkpoint keys (renamed into the target's layout where possible) that have
            no place in the target.
    """

    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"loaded {len(self.loaded)} tensors"]
        if self.missing:
            lines.append(f"randomly initialised ({len(self.missing)}): {', '.join(self.missing)}")
        if self.unexpected:
            lines.append(f"not used ({len(self.unexpected)}): {', '.join(self.unexpected)}")
        return "\n".join(lines)


def _encoder_prefix(keys: list[str], what: str) -> str:
    hits = [k[: -len(ENCODER_ANCHOR)] for k in keys if k.endswith(ENCODER_ANCHOR)]
    if len(hits) != 1:
        raise ValueError(
            f"expected exactly one ReCon encoder in the {what} (a key ending in "
            f"{ENCODER_ANCHOR!r}); found {len(hits)}: {hits}"
        )
    return hits[0]


def load_backbone(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
    """Load every entry of ``state_dict`` (in this package's names) that has a place in ``model``.

    The encoder is found in both by its keys, whatever prefixes surround it (a Lightning
    checkpoint's ``model.encoder.``, a pretrainer's ``encoder.``, a bare encoder); entries beside
    the source's encoder are matched to the target's top level (e.g. ``img_proj`` of a pretrainer
    into a zero-shot model). Shapes must agree.

    Args:
        model: a model with an ``encoder`` (classifier, zero-shot, pretrainer) or an encoder.
        state_dict: tensors in this package's naming.

    Returns:
        :class:`LoadReport` of loaded / missing / unexpected keys.

    Raises:
        ValueError: no or several encoders, or a tensor whose shape does not fit.
    """
    target = model.state_dict()
    target_prefix = _encoder_prefix(list(target), "model")
    source_prefix = _encoder_prefix(list(state_dict), "checkpoint")
    source_root = source_prefix[: -len("encoder.")] if source_prefix.endswith("encoder.") else None
    translated: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for key, value in state_dict.items():
        if key.startswith(source_prefix):
            translated[target_prefix + key[len(source_prefix) :]] = value
        elif target_prefix and source_root is not None and key.startswith(source_root):
            translated[key[len(source_root) :]] = value
        else:
            unexpected.append(key)
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in translated.items()
        if k in target and v.shape != target[k].shape
    ]
    if mismatched:
        raise ValueError("shape mismatch:\n  " + "\n  ".join(mismatched))
    loaded = [k for k in target if k in translated]
    unexpected = [k for k in translated if k not in target] + unexpected
    missing = [k for k in target if k not in translated and not k.endswith("num_batches_tracked")]
    model.load_state_dict({k: translated[k] for k in loaded}, strict=False)
    return LoadReport(loaded=loaded, missing=missing, unexpected=unexpected)
