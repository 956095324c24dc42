"""Loss terms: SMC (vectorised) against the reference's double loop; SmoothL1; Chamfer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recon_lightning.models import distillation_loss, reconstruction_loss, smc_loss


def smc_reference(features: torch.Tensor, text: list[str], temperature: float = 0.1):
    """The reference's ContrastiveHead + select loop (models/ReCon.py), restated naively."""
    z = F.normalize(features, dim=1)
    sim = z @ z.T
    b = len(text)
    select = torch.zeros(b, b, dtype=torch.uint8)
    for i in range(b):
        for j in range(b):
            if text[i] == text[j]:
                select[i, j] = 1
    losses = torch.zeros(b, dtype=features.dtype)
    for i in range(b):
        pos = torch.masked_select(sim[i], select[i] == 1).mean(0, keepdim=True)
        neg = torch.masked_select(sim[i], select[i] == 0)
        logits = torch.cat((pos, neg)).reshape(1, -1)
        losses[i] = F.cross_entropy(logits / temperature, torch.zeros(1, dtype=torch.long))
    return losses.mean()


@pytest.mark.parametrize(
    "text",
    [
        ["chair", "table", "chair", "lamp", "table", "chair"],
        ["a", "b", "c", "d"],  # no positive but self
        ["a", "a", "a"],  # no negatives
    ],
)
def test_smc_matches_naive_double_loop(text):
    torch.manual_seed(0)
    feats = torch.randn(len(text), 16, dtype=torch.float64, requires_grad=True)
    names = sorted(set(text))
    labels = torch.tensor([names.index(t) for t in text])
    ours = smc_loss(feats, labels)
    ref = smc_reference(feats, text)
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    g_ours = torch.autograd.grad(ours, feats)[0]
    g_ref = torch.autograd.grad(smc_reference(feats, text), feats)[0]
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-10, atol=1e-12)


def test_smc_rejects_misshaped_labels():
    with pytest.raises(ValueError, match="labels"):
        smc_loss(torch.randn(4, 8), torch.zeros(3, dtype=torch.long))


def test_distillation_is_smooth_l1_beta_one():
    pred = torch.tensor([[0.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    target = torch.tensor([[0.5, -0.5, 2.0, -3.0]], dtype=torch.float64)
    # 0.5 r² below 1, |r| - 0.5 above; mean over B x D.
    expected = (0.125 + 0.125 + 1.5 + 2.5) / 4
    assert distillation_loss(pred, target).item() == pytest.approx(expected, rel=1e-15)
    with pytest.raises(ValueError, match="img_dim/text_dim"):
        distillation_loss(torch.zeros(2, 768), torch.zeros(2, 512))


def test_reconstruction_losses_follow_the_chamfer_formulas():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(5, 8, 3, generator=g, dtype=torch.float64)
    target = torch.randn(5, 8, 3, generator=g, dtype=torch.float64)
    d = torch.cdist(pred, target).square()
    d1, d2 = d.min(2).values, d.min(1).values
    l2 = d1.mean() + d2.mean()
    l1 = (d1.sqrt().mean() + d2.sqrt().mean()) / 2
    torch.testing.assert_close(reconstruction_loss(pred, target, "cdl2"), l2, rtol=1e-12, atol=0)
    torch.testing.assert_close(reconstruction_loss(pred, target, "cdl1"), l1, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="cdl2"):
        reconstruction_loss(pred, target, "emd")
