"""Timing, peak-memory and machine-description helpers shared by the benchmarks."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@dataclass
class Timing:
    """Median and spread of one measured callable, in milliseconds."""

    median_ms: float
    min_ms: float
    reps: int


#: Clocks: "wall" (latency) or "cpu" (CPU time of the whole process, every thread summed: with one
#: thread the latency on an idle core, and unaffected by other programs sharing the machine).
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def time_call(
    fn: Callable[[], object],
    device: str = "cpu",
    budget_s: float = 1.0,
    max_reps: int = 25,
    clock: str = "wall",
) -> Timing:
    """Median time of ``fn`` on ``clock``; without warm-up (the caller warms up once for all).

    Repeats until ``budget_s`` is spent or ``max_reps`` runs (at least once).
    """
    now = CLOCKS[clock]
    times: list[float] = []
    spent = 0.0
    while not times or (spent < budget_s and len(times) < max_reps):
        t0 = now()
        fn()
        _sync(device)
        dt = now() - t0
        times.append(dt)
        spent += dt
    return Timing(statistics.median(times) * 1e3, min(times) * 1e3, len(times))


def _status_kib(field: str) -> int:
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def peak_memory_mib(fn: Callable[[], object], device: str = "cpu") -> float | None:
    """Extra memory at the peak of one call of ``fn``, in MiB.

    CUDA: ``max_memory_allocated`` above the allocation before the call. CPU: the process's
    resident-set high-water mark (reset through /proc/self/clear_refs) above the resident set
    before the call, so it counts every allocator (torch, numpy, numba, C++ libraries); glibc is
    first asked to hand its freed memory back (``malloc_trim``), so that the call's allocations
    show as new pages instead of reusing earlier ones unseen. ``None`` where Linux's /proc
    interface is missing.
    """
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    if not _CLEAR_REFS.exists():
        return None
    if hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)
    _CLEAR_REFS.write_text("5")  # reset VmHWM to the current resident set
    base = _status_kib("VmRSS")
    fn()
    return max(0, _status_kib("VmHWM") - base) / 1024


def machine_description(threads: int) -> dict[str, str]:
    """CPU model, cores, thread setting and library versions, for the benchmark's header."""
    model = platform.processor() or platform.machine()
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        cores = fields.get("CPU(s)", "?").strip()
    except OSError:
        cores = "?"
    info = {
        "cpu": model,
        "cores": cores,
        "threads used": str(threads),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    for mod in ("numba", "pykdtree", "pykeops", "scipy", "torch_quickfps", "fpsample"):
        try:
            info[mod] = str(__import__(mod).__version__)
        except (ImportError, AttributeError):
            info[mod] = "installed" if _importable(mod) else "missing"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _importable(mod: str) -> bool:
    try:
        __import__(mod)
    except ImportError:
        return False
    return True
