"""Backend names, validation and the small runtime helpers the fast paths share."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch

from ._keops import KeOpsUnavailableError, warn_fallback

T = TypeVar("T")

#: Every backend name an op may accept; each op documents the subset it implements.
BACKENDS = ("auto", "torch", "numba", "kdtree", "keops")


def check_backend(op: str, backend: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the op and its choices unless ``backend`` is in ``allowed``."""
    if backend not in allowed:
        raise ValueError(f"unknown {op} backend {backend!r}; choose one of {', '.join(allowed)}")


def require_cpu(op: str, backend: str, x: torch.Tensor) -> None:
    """The numba and KD-tree paths run on CPU tensors only; say so instead of copying silently."""
    if x.device.type != "cpu":
        raise ValueError(
            f"{op} backend {backend!r} runs on CPU tensors; got a tensor on {x.device}. "
            "Use backend='auto', 'torch' or 'keops' on this device."
        )


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """Detached, C-contiguous numpy view of a CPU tensor; float32 unless it is float64 (numba and
    pykdtree have no half precision, and index searches need no more than float32)."""
    x = x.detach()
    if x.dtype != torch.float64:
        x = x.float()
    return x.contiguous().numpy()


def with_keops_fallback(op: str, keops_call: Callable[[], T], fallback: Callable[[], T]) -> T:
    """``auto`` on a device where KeOps is the pick: use it, or warn once and use ``fallback``."""
    try:
        return keops_call()
    except KeOpsUnavailableError:
        warn_fallback(op)
        return fallback()
