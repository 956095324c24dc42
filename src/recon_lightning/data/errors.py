"""Dataset errors that name the offending file and say how to obtain or prepare it.

Every loader in this package raises one of these instead of a bare ``FileNotFoundError`` or a
numpy/h5py/pickle traceback, so a user with a half-downloaded dataset learns which file is wrong
and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class DatasetNotFoundError(FileNotFoundError):
    """A file or folder the dataset needs is missing."""


class MalformedDatasetError(ValueError):
    """A dataset file exists but cannot be read or has the wrong content."""


def require_file(path: Path, how: str) -> Path:
    """Return ``path`` if it is a file, else raise a :class:`DatasetNotFoundError`.

    Args:
        path: the file the dataset needs.
        how: one sentence saying how to obtain or prepare the file.
    """
    if not path.is_file():
        raise DatasetNotFoundError(f"missing dataset file {path}. {how}")
    return path


def require_dir(path: Path, how: str) -> Path:
    """Return ``path`` if it is a directory, else raise a :class:`DatasetNotFoundError`."""
    if not path.is_dir():
        raise DatasetNotFoundError(f"missing dataset folder {path}. {how}")
    return path


def describe_missing(paths: Sequence[Path], shown: int = 5) -> str:
    """``"<count> files, first: a, b, ..."`` for an error message about many missing files."""
    first = ", ".join(str(p) for p in paths[:shown])
    more = "" if len(paths) <= shown else f" (and {len(paths) - shown} more)"
    return f"{len(paths)} file(s) missing; first: {first}{more}"


def read_lines(path: Path, how: str) -> list[str]:
    """Non-empty, stripped lines of a text list file; missing file -> DatasetNotFoundError."""
    require_file(path, how)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise MalformedDatasetError(f"cannot read list file {path}: {exc}. {how}") from exc
    return [line.strip() for line in text.splitlines() if line.strip()]
