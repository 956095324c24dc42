"""Base class of the frozen teachers: no gradients, always in eval mode."""

from __future__ import annotations

from torch import nn


class FrozenModule(nn.Module):
    """An ``nn.Module`` whose parameters never train and whose mode is always eval.

    ``freeze()`` turns off ``requires_grad`` and switches to eval; ``train()`` is overridden so a
    parent's ``.train()`` (Lightning calls it every epoch) leaves the teacher in eval mode. The
    reference kept its teachers in train mode; they have no dropout, so nothing differs numerically.
    """

    def freeze(self) -> FrozenModule:
        """Disable gradients of every parameter and switch to eval mode; returns ``self``."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.train(False)

    def train(self, mode: bool = True) -> FrozenModule:  # noqa: ARG002 - mode is ignored on purpose
        """Stay in eval mode whatever ``mode`` asks for."""
        return super().train(False)
