"""Pretraining loss terms (spec §2.6-§2.9c)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..ops import chamfer_l1, chamfer_l2

RECONSTRUCTION_LOSSES = ("cdl2", "cdl1")


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, loss: str = "cdl2"
) -> torch.Tensor:
    """Chamfer distance between predicted and true patches, each patch matched within itself.

    Args:
        pred, target: (P, k, 3) patches (P = B x M masked patches).
        loss: ``cdl2`` (mean squared nearest distances, both directions summed) or ``cdl1``.

    Returns:
        Scalar.
    """
    if loss == "cdl2":
        return chamfer_l2(pred, target)
    if loss == "cdl1":
        return chamfer_l1(pred, target)
    raise ValueError(f"loss must be one of {RECONSTRUCTION_LOSSES}; got {loss!r}")


def distillation_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """SmoothL1 (beta 1, mean over B x D) of a projected student token to a teacher feature.

    Args:
        pred: (B, D) projected student tokens.
        target: (B, D) teacher features (unnormalised, as the reference).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"teacher feature shape {tuple(target.shape)} does not match the projection output "
            f"{tuple(pred.shape)}; check img_dim/text_dim against the teacher"
        )
    return F.smooth_l1_loss(pred, target.to(pred.dtype), beta=1.0)


def smc_loss(
    features: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1
) -> torch.Tensor:
    """Single-modal contrastive loss on projected cls features, vectorised.

    For anchor i with positives P(i) = {j : labels[j] == labels[i]} (i included) and negatives
    N(i): logits [mean_{j in P(i)} s_ij, s_ij for j in N(i)] / temperature, cross-entropy with
    target 0, mean over anchors; s is the cosine similarity.

    Args:
        features: (B, D) projected cls outputs (normalised here).
        labels: (B,) integer category of each sample.
        temperature: tau.
    """
    if labels.shape != features.shape[:1]:
        raise ValueError(
            f"labels must have shape ({features.shape[0]},); got {tuple(labels.shape)}"
        )
    z = F.normalize(features, dim=1)
    sim = z @ z.T  # (B, B)
    positive = labels.unsqueeze(0) == labels.unsqueeze(1)
    pos_mean = (sim * positive).sum(1) / positive.sum(1)
    # Positives become -inf among the negatives so they add exp(-inf) = 0 to the partition sum.
    negatives = sim.masked_fill(positive, float("-inf"))
    logits = torch.cat([pos_mean.unsqueeze(1), negatives], dim=1) / temperature
    return (torch.logsumexp(logits, dim=1) - logits[:, 0]).mean()
