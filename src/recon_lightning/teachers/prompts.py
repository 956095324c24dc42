"""Text prompts around a category description, as the reference builds them (spec §3.2, §4.6).

The reference (models/CrossModal.py, after its 2023-05-23 edit) draws a prefix and a suffix
independently and uniformly; numbering the 60 combinations ``j = prefix + 20 * suffix`` and
drawing ``j`` uniformly gives the same distribution; the same numbering is the zero-shot order.
"""

from __future__ import annotations

import torch

#: The 20 prefixes, in the reference's order ("A image of" is the reference's wording).
PREFIXES: tuple[str, ...] = (
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
)

#: The 3 suffixes of the reference after its 2023-05-23 commit.
SUFFIXES: tuple[str, ...] = (".", " with white background.", " with black context.")

#: Number of prompt variants per description.
NUM_PROMPTS: int = len(PREFIXES) * len(SUFFIXES)


def prompt(description: str, j: int) -> str:
    """Prompt ``j`` (0 <= j < 60): ``PREFIXES[j % 20] + description + SUFFIXES[j // 20]``."""
    if not 0 <= j < NUM_PROMPTS:
        raise IndexError(f"prompt index {j} outside 0..{NUM_PROMPTS - 1}")
    return PREFIXES[j % len(PREFIXES)] + description + SUFFIXES[j // len(PREFIXES)]


def all_prompts(description: str) -> list[str]:
    """The 60 prompts of one description, in index order."""
    return [prompt(description, j) for j in range(NUM_PROMPTS)]


def sample_prompt_indices(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` prompt indices uniformly from 0..59 with torch's RNG.

    Returns an int64 (n,) tensor on the CPU (the generator, if given, must be a CPU generator).
    """
    return torch.randint(0, NUM_PROMPTS, (n,), generator=generator, dtype=torch.long)


def build_prompts(descriptions: list[str], prompt_idx: torch.Tensor) -> list[str]:
    """One prompt per description: ``prompt(descriptions[i], prompt_idx[i])``."""
    if prompt_idx.ndim != 1 or prompt_idx.shape[0] != len(descriptions):
        raise ValueError(
            f"prompt_idx must have shape ({len(descriptions)},), got {tuple(prompt_idx.shape)}"
        )
    return [prompt(d, int(j)) for d, j in zip(descriptions, prompt_idx.tolist(), strict=True)]
