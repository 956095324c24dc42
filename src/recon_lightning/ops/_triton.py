"""Triton plumbing shared by the Triton kernels: availability, interpreter mode and launching.

Triton ships with torch's CUDA wheels on Linux; a CPU-only torch usually lacks it. It is imported
lazily: :func:`triton_error` says why it is unusable (``None`` while it works), and
``backend="triton"`` then raises :class:`TritonUnavailableError`. ``backend="auto"`` only picks
Triton for CUDA tensors and falls back, with one warning, when it cannot import or compile.

The kernels (``_triton_fps``, ``_triton_knn``) are plain functions wrapped in :class:`Kernel`,
which jit-compiles them for the GPU or, while ``TRITON_INTERPRET=1`` is set, runs them in Triton's
interpreter (numpy on the host: any device, slow; what the CPU test suite uses). Triton 3.x
decides between the two when ``@triton.jit`` runs, reading the variable at that moment: for its
own helpers (``tl.max``, ``tl.sum``, ...) that is when triton is imported, which in a test
session happens early and elsewhere (lightning imports triton). :class:`Kernel` therefore decides
per launch, and an interpreted launch runs with interpreted twins of triton.language's helpers
swapped in and triton.language restored afterwards (:func:`_interpretable_language`), so one
process can run both (tests toggle the variable with ``monkeypatch.setenv``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch


class TritonUnavailableError(RuntimeError):
    """triton cannot be imported here, or failed to compile or run a kernel."""


#: Where Triton comes from, for the error raised when it is missing.
INSTALL_HINT = (
    "Triton ships with torch's CUDA wheels on Linux (pip install torch); otherwise install a "
    "matching `pip install triton` next to a CUDA build of torch"
)

#: Largest k of the Triton kNN kernel (a per-query register list of k entries); ``auto`` uses
#: another backend above it.
KNN_MAX_K = 512

_state: dict[str, Any] = {"checked": False, "error": None, "warned": False}


def triton_error() -> str | None:
    """Why Triton is unusable, or ``None`` while it imports and has not failed to compile."""
    if not _state["checked"]:
        _state["checked"] = True
        try:
            import triton  # noqa: F401
            import triton.language  # noqa: F401
        except Exception as err:  # ImportError, or a broken install failing at import
            _state["error"] = (
                f"triton could not be imported ({type(err).__name__}: {err}). {INSTALL_HINT}"
            )
    return _state["error"]


def interpreting() -> bool:
    """Whether Triton's interpreter is on (``TRITON_INTERPRET=1``), read now, as triton reads it."""
    try:
        from triton import knobs
    except ImportError:  # triton < 3.4 has no knobs; its jit decorator reads the variable itself
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)


def require_triton(op: str, x: torch.Tensor) -> None:
    """Raise unless ``backend="triton"`` can run ``op`` on the device of ``x``.

    Raises:
        TritonUnavailableError: triton is missing or has failed to compile here.
        ValueError: ``x`` is not a CUDA tensor and the interpreter is off.
    """
    err = triton_error()
    if err is not None:
        raise TritonUnavailableError(f"{op} backend 'triton' is unavailable: {err}")
    if x.device.type != "cuda" and not interpreting():
        raise ValueError(
            f"{op} backend 'triton' runs on CUDA tensors; got a tensor on {x.device}. Triton runs "
            "other tensors only in its interpreter (TRITON_INTERPRET=1, slow: for tests); use "
            "backend='auto' on this device."
        )


def warn_fallback(op: str) -> None:
    """Warn once per process that ``auto`` is not using Triton, and why."""
    if not _state["warned"]:
        _state["warned"] = True
        import warnings

        warnings.warn(
            f"recon_lightning.ops.{op}: Triton is unavailable, falling back to another backend "
            f"({triton_error()})",
            RuntimeWarning,
            stacklevel=3,
        )


class Kernel:
    """A Triton kernel (a plain function in triton.language) compiled or interpreted per launch.

    Compiled launches turn off floating-point contraction (``enable_fp_fusion=False``): a fused
    ``a*b + c`` rounds once where the torch and numba paths round twice, and the index-identical
    results (FPS above all, where one different pick changes every later one) need the same
    roundings. The interpreter computes with numpy, which never fuses.
    """

    def __init__(self, fn: Callable[..., None]) -> None:
        self.fn = fn
        self._variants: dict[bool, Any] = {}

    def launch(self, grid: tuple[int, ...], *args: Any, **options: Any) -> None:
        """Run on ``grid`` with ``args``; ``options`` hold constexprs and ``num_warps``.

        Raises:
            TritonUnavailableError: a compiled kernel failed to build or launch; remembered, so
                ``auto`` stops trying Triton in this process.
        """
        interp = interpreting()
        fn = self._variants.get(interp)
        if fn is None:
            import triton

            fn = self._variants[interp] = triton.jit(self.fn)
        if interp:  # errors here are ours to see, not a broken toolchain
            with _interpretable_language():
                fn[grid](*args, **options)
            return
        try:
            fn[grid](*args, enable_fp_fusion=False, **options)
        except Exception as err:  # compiler, ptxas or driver failure
            _state["error"] = (
                f"Triton failed to compile or run {self.fn.__name__}: {type(err).__name__}: {err}"
            )
            raise TritonUnavailableError(_state["error"]) from err


#: Interpreted twins of triton.language's compiled helpers, by id (with the original, which keeps
#: the id alive).
_twins: dict[int, tuple[Any, Any]] = {}


@contextmanager
def _interpretable_language() -> Iterator[None]:
    """Make triton.language usable by the interpreter for one launch, then restore it.

    When triton was imported without ``TRITON_INTERPRET``, its helpers are compiled-only
    ``JITFunction`` objects that the interpreter refuses to call; each is replaced by the
    ``InterpretedFunction`` triton would have made under the variable. The interpreter also
    patches triton.language's builtins during a launch and leaves those made by nested helper
    calls in place; restoring every namespace it touches keeps later compiled launches in this
    process intact. Not thread-safe, like the interpreter itself.
    """
    import triton.language as tl
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    modules = [
        m for name, m in list(sys.modules.items()) if name.startswith("triton.language") and m
    ]
    classes = [tl.core.tensor, tl.core.dtype, getattr(tl.core, "tensor_descriptor_base", None)]
    saved = [(ns, dict(vars(ns))) for ns in [*modules, *classes] if ns is not None]
    try:
        for mod in modules:
            for name, value in list(vars(mod).items()):
                if isinstance(value, JITFunction):
                    if id(value) not in _twins:
                        _twins[id(value)] = (value, InterpretedFunction(value.fn))
                    setattr(mod, name, _twins[id(value)][1])
        yield
    finally:
        for ns, before in saved:
            now = vars(ns)
            if isinstance(ns, type):  # patched dunders and methods; modules keep added names,
                # the interpreter's globals that its cached rewritten helpers look up there
                for name in [n for n in now if n not in before]:
                    delattr(ns, name)
            for name, value in before.items():
                if now.get(name, _MISSING) is not value:
                    setattr(ns, name, value)


_MISSING = object()


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (Triton block shapes are powers of two)."""
    return 1 << max(0, (n - 1).bit_length())
