"""Pooled features of an :class:`EncoderOutput` used by the downstream protocols."""

from __future__ import annotations

import torch

from .encoder import EncoderOutput


def classification_features(out: EncoderOutput) -> torch.Tensor:
    """(B, 4C) [cls, img, text, max over local tokens], the classifier's head input."""
    return torch.cat([out.cls, out.img, out.text, out.local.amax(dim=1)], dim=-1)


def svm_features(out: EncoderOutput) -> torch.Tensor:
    """(B, 2C) [max over the 3 global outputs, max + mean over local tokens] (linear-SVM probe)."""
    local = out.local.amax(dim=1) + out.local.mean(dim=1)
    return torch.cat([out.queries.amax(dim=1), local], dim=-1)
