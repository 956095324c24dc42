"""The reference's prompt templates (spec §3.2) and the prompt-index convention (spec §4.6)."""

from __future__ import annotations

import pytest
import torch

from recon_lightning.teachers.prompts import (
    NUM_PROMPTS,
    PREFIXES,
    SUFFIXES,
    all_prompts,
    build_prompts,
    prompt,
    sample_prompt_indices,
)

# Copied from the spec's list, not from the package.
SPEC_PREFIXES = [
    "",
    "A ",
    "A model of ",
    "A model of a ",
    "A image of ",
    "A image of a ",
    "A 3D model of ",
    "A 3D model of a ",
    "A rendering model of ",
    "A rendering model of a ",
    "A point cloud of ",
    "A point cloud of a ",
    "A point cloud model of ",
    "A point cloud model of a ",
    "A 3D rendering model of ",
    "A 3D rendering model of a ",
    "A rendering image of ",
    "A rendering image of a ",
    "A 3D rendering image of ",
    "A 3D rendering image of a ",
]
SPEC_SUFFIXES = [".", " with white background.", " with black context."]


def test_templates_are_the_reference_lists():
    assert list(PREFIXES) == SPEC_PREFIXES
    assert list(SUFFIXES) == SPEC_SUFFIXES
    assert NUM_PROMPTS == 60


def test_prompt_index_is_prefix_plus_20_times_suffix():
    assert prompt("chair", 0) == "chair."
    assert prompt("chair", 3) == "A model of a chair."
    assert prompt("chair", 20) == "chair with white background."
    assert prompt("chair", 59) == "A 3D rendering image of a chair with black context."
    prompts = all_prompts("airplane")
    assert len(prompts) == 60 == len(set(prompts))
    for j, p in enumerate(prompts):
        assert p == SPEC_PREFIXES[j % 20] + "airplane" + SPEC_SUFFIXES[j // 20]
    with pytest.raises(IndexError):
        prompt("chair", 60)


def test_sampling_is_uniform_over_60_and_reproducible():
    idx = sample_prompt_indices(60_000, torch.Generator().manual_seed(0))
    assert idx.dtype == torch.long and int(idx.min()) == 0 and int(idx.max()) == 59
    counts = torch.bincount(idx, minlength=60).double()
    chi2 = float(((counts - 1000) ** 2 / 1000).sum())
    assert chi2 < 110  # 59 dof: p ~ 1e-4
    # prefix and suffix marginals are uniform and independent, as the reference's two draws
    joint = torch.zeros(20, 3)
    joint.index_put_((idx % 20, idx // 20), torch.ones(len(idx)), accumulate=True)
    assert torch.allclose(joint.sum(1) / len(idx), torch.full((20,), 1 / 20), atol=0.01)
    assert torch.allclose(joint.sum(0) / len(idx), torch.full((3,), 1 / 3), atol=0.01)
    again = sample_prompt_indices(60_000, torch.Generator().manual_seed(0))
    assert torch.equal(idx, again)


def test_build_prompts_pairs_descriptions_with_indices():
    out = build_prompts(["chair", "table"], torch.tensor([1, 40]))
    assert out == ["A chair.", "table with black context."]
    with pytest.raises(ValueError, match="shape"):
        build_prompts(["chair"], torch.tensor([1, 2]))
