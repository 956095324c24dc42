"""Backend names, validation and the small runtime helpers the fast paths share."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import TypeVar

import numpy as np
import torch

from . import _triton
from ._keops import KeOpsUnavailableError, warn_fallback
from ._triton import TritonUnavailableError

T = TypeVar("T")

#: Every backend name an op may accept; each op documents the subset it implements.
BACKENDS = ("auto", "torch", "numba", "kdtree", "keops", "triton")
#: Dtypes autocast produces; point searches never run in them under autocast (see below).
_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_backend(op: str, backend: str, allowed: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the op and its choices unless ``backend`` is in ``allowed``."""
    if backend not in allowed:
        raise ValueError(f"unknown {op} backend {backend!r}; choose one of {', '.join(allowed)}")


def require_cpu(op: str, backend: str, x: torch.Tensor) -> None:
    """The numba and KD-tree paths run on CPU tensors only; say so instead of copying silently."""
    if x.device.type != "cpu":
        raise ValueError(
            f"{op} backend {backend!r} runs on CPU tensors; got a tensor on {x.device}. "
            "Use backend='auto', 'torch', 'keops' or 'triton' on this device."
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


def dense_bytes(a: torch.Tensor, b: torch.Tensor) -> int:
    """Bytes of the dense (B, M, N) distance matrix between ``a`` (B, M, 3) and ``b`` (B, N, 3),
    in the dtype a search uses (float64 stays float64, the rest is float32)."""
    item = 8 if a.dtype == torch.float64 else 4
    return a.shape[0] * a.shape[1] * b.shape[1] * item


def with_triton_fallback(op: str, triton_call: Callable[[], T], fallback: Callable[[], T]) -> T:
    """``auto`` where Triton is the pick: use it, or warn once and use ``fallback``."""
    try:
        return triton_call()
    except TritonUnavailableError:
        _triton.warn_fallback(op)
        return fallback()


def autocast_enabled(device_type: str) -> bool:
    """Whether autocast is on for ``device_type`` in this thread."""
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except (TypeError, RuntimeError):  # torch < 2.4 takes no device; unknown device types
        if device_type == "cpu":
            return bool(torch.is_autocast_cpu_enabled())
        return device_type == "cuda" and bool(torch.is_autocast_enabled())


def full_precision(*xs: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Under autocast, float16/bfloat16 coordinates as float32 (differentiably); else unchanged.

    Autocast hands out half-precision tensors (a decoder's output, say), and a bfloat16 squared
    distance has 8 significant bits: neighbours and FPS picks would be wrong. Like autocast's own
    float32 ops (``cdist`` among them), the point ops then compute in float32; outside autocast a
    half input keeps its documented behaviour.
    """
    if not autocast_enabled(xs[0].device.type):
        return xs
    return tuple(x.float() if x.dtype in _LOW_PRECISION else x for x in xs)


def autocast_off(x: torch.Tensor) -> AbstractContextManager:
    """A region with autocast off on the device of ``x`` (no-op where it is off already): the
    dense torch search's matmul would otherwise run in autocast's half precision."""
    device_type = x.device.type
    if autocast_enabled(device_type):
        return torch.autocast(device_type, enabled=False)
    return nullcontext()
