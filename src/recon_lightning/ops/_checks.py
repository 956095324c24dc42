"""Input validation shared by the point ops: every op fails with a message naming the argument."""

from __future__ import annotations

import operator

import torch


def check_points(name: str, x: torch.Tensor, dim: int | None = 3) -> None:
    """Raise if ``x`` is not a finite (B, N, dim) floating tensor with B, N >= 1."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (B, N, 3); got {tuple(x.shape)}")
    if dim is not None and x.shape[-1] != dim:
        raise ValueError(
            f"{name} must have {dim} coordinates in its last dim; got {tuple(x.shape)}"
        )
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} has an empty batch (B = 0); pass at least one cloud")
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no points (N = 0)")
    # One reduction: a finite sum implies finite elements (inf and NaN propagate); only a
    # non-finite sum (or a legitimate overflow) pays for the element-wise test.
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise ValueError(
            f"{name} contains non-finite coordinates (NaN or inf); clean the input first"
        )


def check_same_batch(a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> None:
    """Raise unless ``a`` and ``b`` share batch size, dtype and device."""
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"{a_name} and {b_name} have different batch sizes: {a.shape[0]} vs {b.shape[0]}"
        )
    if a.dtype != b.dtype:
        raise TypeError(f"{a_name} and {b_name} have different dtypes: {a.dtype} vs {b.dtype}")
    if a.device != b.device:
        raise ValueError(
            f"{a_name} and {b_name} are on different devices: {a.device} vs {b.device}"
        )


def check_count(name: str, value: object, upper: int, upper_name: str) -> int:
    """Return ``value`` as an int, raising unless it is an integer in ``[1, upper]``."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer; got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer; got {value!r}") from None
    if not 1 <= v <= upper:
        raise ValueError(f"{name} must be in [1, {upper_name}={upper}]; got {name}={v}")
    return v
