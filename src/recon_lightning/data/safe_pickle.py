"""A restricted unpickler for the reference's ``.dat`` / ``.pkl`` dataset files.

The ModelNet ``*_8192pts_fps.dat`` caches and the few-shot ``{fold}.pkl`` splits are pickles that
users download from third-party drives. A plain ``pickle.load`` would run any callable the file
names, so these files are read through :class:`RestrictedUnpickler`, which resolves only the
globals numpy needs to rebuild arrays, dtypes and scalars (for pickles written by numpy 1.x,
``numpy.core...``, and 2.x, ``numpy._core...``), plus the harmless ``_codecs.encode`` that
protocol 0-2 pickles use for bytes. Lists, tuples, dicts, strings and numbers are built by pickle
opcodes and need no globals. Everything else (``os.system``, ``builtins.exec``, ``eval``,
``subprocess.Popen``, arbitrary classes) is refused *before* it is called.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from ..atomic_io import write_with_atomic

# The numpy internals are imported from the module that actually holds them in this numpy; the
# pickle may name either the 1.x (``numpy.core``) or the 2.x (``numpy._core``) location.
try:  # numpy >= 2
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


def _build_allowed() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
        # Python containers and numbers, in case a writer pickled them by reference.
        ("builtins", "list"): list,
        ("builtins", "tuple"): tuple,
        ("builtins", "dict"): dict,
        ("builtins", "int"): int,
        ("builtins", "float"): float,
        ("builtins", "complex"): complex,
        ("builtins", "bool"): bool,
        ("builtins", "str"): str,
        ("builtins", "bytes"): bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    return allowed


_ALLOWED = _build_allowed()


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that admits only numpy arrays/dtypes/scalars and plain containers/numbers."""

    def find_class(self, module: str, name: str) -> Any:  # noqa: D401 - pickle API
        """Resolve ``module.name`` only if it is on the allow-list, else refuse."""
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load global {module}.{name}: only numpy arrays, dtypes, scalars, "
                "lists, tuples, dicts and numbers are allowed in dataset pickles"
            ) from None


def safe_loads(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`."""
    return RestrictedUnpickler(io.BytesIO(data)).load()


def safe_load_file(path: Path | str) -> Any:
    """Unpickle the file at ``path`` with :class:`RestrictedUnpickler`.

    Raises:
        pickle.UnpicklingError: for a refused global or a corrupt stream (the caller adds the file
            name and how to regenerate it).
    """
    with open(path, "rb") as fh:
        return RestrictedUnpickler(fh).load()


def atomic_pickle_dump(obj: Any, path: Path | str, protocol: int = 4) -> None:
    """Pickle ``obj`` to ``path`` atomically: write a temp file beside it, then rename.

    A crash or Ctrl-C mid-write leaves no truncated cache behind that a later run would trip on.
    Protocol 4 keeps the file readable by the reference code (Python >= 3.4).
    """
    write_with_atomic(path, lambda handle: pickle.dump(obj, handle, protocol=protocol))
