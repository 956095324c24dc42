"""Atomic file writes: a reader (or a run resumed after a kill) never sees a half-written file.

Everything this package writes that a later run reads back (results, reports, caches, converted
checkpoints) goes through :func:`atomic_open`: the bytes go to a temporary file in the target's
folder, are flushed to disk, and then replace the target with :func:`os.replace` (atomic on
POSIX and Windows). A crash or Ctrl-C mid-write leaves the previous file untouched.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

PathLike = str | os.PathLike[str]


@contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it replaces ``path``.

    Args:
        path: the file to (re)write; its folder is created.
        mode: ``"wb"`` or ``"w"`` (text, UTF-8).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) atomically; returns the path."""
    with atomic_open(path, "w") as handle:
        handle.write(text)
    return Path(path)


def write_json_atomic(
    path: PathLike, data: Any, default: Callable[[Any], Any] | None = None, **dump_kwargs: Any
) -> Path:
    """Write ``data`` as indented JSON (plus a final newline) atomically; returns the path."""
    text = json.dumps(data, indent=2, default=default, **dump_kwargs) + "\n"
    return write_text_atomic(path, text)


def write_with_atomic(path: PathLike, writer: Callable[[IO[bytes]], Any]) -> Path:
    """``writer(binary_handle)`` into a temporary file that then replaces ``path``.

    E.g. ``write_with_atomic(p, lambda f: torch.save(obj, f))`` or ``np.savez`` / ``pickle.dump``.
    """
    with atomic_open(path, "wb") as handle:
        writer(handle)
    return Path(path)


def replace_atomic(tmp: PathLike, path: PathLike) -> Path:
    """Move a fully written ``tmp`` (e.g. a memory-mapped array) over ``path`` atomically."""
    os.replace(tmp, path)
    return Path(path)
