"""PatchMasker: exact counts, uniform random subsets, contiguous blocks, torch-RNG seeding."""

from __future__ import annotations

import pytest
import torch

from recon_lightning.models import PatchMasker


def centers(b: int = 4, g: int = 64) -> torch.Tensor:
    return torch.randn(b, g, 3, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("mask_type", ["rand", "block"])
@pytest.mark.parametrize(("ratio", "g"), [(0.6, 64), (0.6, 16), (0.25, 10), (0.0, 8)])
def test_exactly_int_ratio_times_g_masked_per_row(mask_type, ratio, g):
    mask = PatchMasker(ratio, mask_type)(centers(5, g))
    assert mask.dtype == torch.bool and mask.shape == (5, g)
    assert (mask.sum(1) == int(ratio * g)).all()


def test_rand_masks_every_position_equally_often():
    torch.manual_seed(0)
    masker = PatchMasker(0.6, "rand")
    freq = masker(centers(4000, 16)).double().mean(0)
    # 9 of 16 masked: each position with probability 9/16; 4000 draws -> std ~0.008.
    torch.testing.assert_close(freq, torch.full_like(freq, 9 / 16), rtol=0, atol=0.04)


def test_rand_rows_differ_and_torch_seed_reproduces():
    masker = PatchMasker(0.6, "rand")
    torch.manual_seed(5)
    a = masker(centers(8))
    torch.manual_seed(5)
    b = masker(centers(8))
    assert torch.equal(a, b)
    assert len({tuple(r.tolist()) for r in a}) > 1
    gen = torch.Generator().manual_seed(9)
    assert torch.equal(
        masker(centers(8), gen), masker(centers(8), torch.Generator().manual_seed(9))
    )


def test_block_masks_the_patches_nearest_one_centre():
    torch.manual_seed(1)
    c = centers(6, 32)
    mask = PatchMasker(0.5, "block")(c)
    dist = torch.cdist(c, c)  # (B, anchor, G)
    m = int(0.5 * 32)
    nearest = dist.argsort(dim=-1)[..., :m]  # every anchor's m nearest
    candidates = torch.zeros(6, 32, 32, dtype=torch.bool).scatter_(2, nearest, True)
    # Some anchor's m-nearest set is exactly the mask, in every row.
    assert (candidates == mask.unsqueeze(1)).all(-1).any(-1).all()


@pytest.mark.parametrize(("ratio", "mask_type"), [(1.0, "rand"), (-0.1, "rand"), (0.5, "grid")])
def test_bad_settings_raise(ratio, mask_type):
    with pytest.raises(ValueError):
        PatchMasker(ratio, mask_type)
