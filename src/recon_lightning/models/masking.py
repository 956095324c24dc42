"""Which patches the pretraining encoder does not see."""

from __future__ import annotations

import torch
from torch import nn

MASK_TYPES = ("rand", "block")


class PatchMasker(nn.Module):
    """Draw a (B, G) bool mask with exactly ``int(mask_ratio * G)`` True (masked) per row.

    - ``rand``: a uniformly random subset per cloud (argsort of uniform noise).
    - ``block``: the masked patches are the ones whose centres are nearest a random centre.

    Draws use torch's global RNG (or ``generator``) on the centres' device, so seeding torch (as
    Lightning's ``seed_everything`` does) makes the masks reproducible. Vectorised over the batch.
    """

    def __init__(self, mask_ratio: float = 0.6, mask_type: str = "rand") -> None:
        super().__init__()
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must be in [0, 1); got {mask_ratio}")
        if mask_type not in MASK_TYPES:
            raise ValueError(f"mask_type must be one of {MASK_TYPES}; got {mask_type!r}")
        self.mask_ratio = mask_ratio
        self.mask_type = mask_type

    def num_masked(self, num_group: int) -> int:
        """``int(mask_ratio * G)``, the reference's count."""
        return int(self.mask_ratio * num_group)

    def forward(
        self, centers: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Draw a mask.

        Args:
            centers: (B, G, 3) patch centres.
            generator: optional RNG for the draw.

        Returns:
            (B, G) bool, True = masked.
        """
        b, g, _ = centers.shape
        m = self.num_masked(g)
        if self.mask_type == "rand":
            noise = torch.rand(b, g, device=centers.device, generator=generator)
            order = noise.argsort(dim=1)
        else:
            seed = torch.randint(g, (b,), device=centers.device, generator=generator)
            anchor = centers[torch.arange(b, device=centers.device), seed]  # (B, 3)
            dist = (centers - anchor.unsqueeze(1)).norm(dim=-1)  # (B, G)
            order = dist.argsort(dim=1, stable=True)
        mask = torch.zeros(b, g, dtype=torch.bool, device=centers.device)
        return mask.scatter_(1, order[:, :m], True)

    def extra_repr(self) -> str:
        return f"mask_ratio={self.mask_ratio}, mask_type={self.mask_type!r}"
