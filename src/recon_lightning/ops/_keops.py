"""KeOps (pykeops) nearest-neighbour search, loaded lazily and quietly.

KeOps compiles each formula on first use (seconds) into ``KEOPS_CACHE_FOLDER`` (the Makefile points
it at ./.cache/keops, git-ignored; unset, KeOps uses ~/.cache). The banner and the "CUDA not found"
notice are silenced before pykeops is imported. If pykeops cannot be imported or its first compile
fails, :func:`keops_error` remembers why: ``backend="auto"`` then falls back with one warning and
``backend="keops"`` raises :class:`KeOpsUnavailableError` with that reason.
"""

from __future__ import annotations

import fcntl
import os
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch


class KeOpsUnavailableError(RuntimeError):
    """pykeops cannot be imported or cannot compile its formulas here."""


_state: dict[str, Any] = {"module": None, "error": None, "warned": False, "compiled": set()}


def _load() -> Any:
    """Import ``pykeops.torch`` once, silenced; record the failure instead of raising."""
    if _state["module"] is not None or _state["error"] is not None:
        return _state["module"]
    # Both switches are read at import time: keopscore's before pykeops sets its own.
    os.environ.setdefault("KEOPS_VERBOSE", "0")
    os.environ.setdefault("PYKEOPS_VERBOSE", "0")
    try:
        import pykeops
        import pykeops.torch as pkt

        pykeops.set_verbose(False)
        _state["module"] = pkt
    except Exception as err:  # any import-time failure (missing lib, bad install) disables KeOps
        _state["error"] = f"pykeops could not be imported: {type(err).__name__}: {err}"
    return _state["module"]


def keops_error() -> str | None:
    """Why KeOps is unusable, or ``None`` while it has not failed (it may not be loaded yet)."""
    _load()
    return _state["error"]


def warn_fallback(op: str) -> None:
    """Warn once per process that ``auto`` is not using KeOps, and why."""
    if not _state["warned"]:
        _state["warned"] = True
        warnings.warn(
            f"recon_lightning.ops.{op}: KeOps is unavailable, falling back to another backend "
            f"({_state['error']})",
            RuntimeWarning,
            stacklevel=3,
        )


@contextmanager
def _compile_lock():
    """Serialise first-use compiles across processes (pytest-xdist workers, DDP ranks) that share
    the KeOps cache folder, so two of them never write the same build at once."""
    folder = Path(os.environ.get("KEOPS_CACHE_FOLDER", Path.home() / ".cache" / "keops"))
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "recon_lightning.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def knn_indices_keops(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` nearest ``points`` (B, N, 3) of each ``query`` (B, M, 3), nearest first.

    A symbolic (B, M, N) squared-distance matrix reduced by ``argKmin``: nothing of size M·N is
    stored. Runs without autograd (KeOps' min reductions have no gradient); the caller gathers.

    Raises:
        KeOpsUnavailableError: pykeops cannot be imported or fails to compile the formula.

    Returns:
        (B, M, k) int64.
    """
    pkt = _load()
    if pkt is None:
        raise KeOpsUnavailableError(_state["error"])
    # KeOps reductions support float32/float64; half precision searches in float32.
    dtype = query.dtype if query.dtype in (torch.float32, torch.float64) else torch.float32
    key = (k, dtype, query.device.type)
    try:
        q = pkt.LazyTensor(query.detach().to(dtype).contiguous()[:, :, None, :])
        p = pkt.LazyTensor(points.detach().to(dtype).contiguous()[:, None, :, :])
        d = ((q - p) ** 2).sum(-1)
        if key in _state["compiled"]:
            idx = d.argKmin(k, dim=2)
        else:
            with _compile_lock():
                idx = d.argKmin(k, dim=2)
            _state["compiled"].add(key)
    except Exception as err:  # compiler missing, nvrtc/headers missing, build failure
        _state["error"] = f"KeOps failed to compile or run: {type(err).__name__}: {err}"
        raise KeOpsUnavailableError(_state["error"]) from err
    return idx.long().view(query.shape[0], query.shape[1], k)
