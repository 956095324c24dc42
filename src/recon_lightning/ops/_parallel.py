"""Run serial, GIL-free numba kernels on several threads.

The kernels are compiled serially (``nogil=True``) and split into ranges here, instead of numba
``parallel=True`` loops: serial kernels compile in about half the time (the test suite compiles them
on every fresh checkout), ranges are handed out dynamically (a core busy with other work does not
hold back the call), and no second OpenMP runtime competes with torch's for the cores.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch

_pool: dict[str, Any] = {"executor": None, "threads": 0, "pid": -1}


def threads() -> int:
    """Threads to use: torch's setting (``torch.set_num_threads``)."""
    return max(1, torch.get_num_threads())


def _executor(n: int) -> ThreadPoolExecutor:
    # A fork (DataLoader workers, DDP spawn helpers) copies the executor but not its threads:
    # a child gets a fresh pool instead of queueing work that no thread would ever run.
    if _pool["executor"] is None or _pool["threads"] != n or _pool["pid"] != os.getpid():
        _pool.update(
            executor=ThreadPoolExecutor(max_workers=n, thread_name_prefix="recon-ops"),
            threads=n,
            pid=os.getpid(),
        )
    return _pool["executor"]


def ranges(total: int, per_thread: int = 4) -> list[tuple[int, int]]:
    """Split ``range(total)`` into about ``per_thread`` contiguous parts per thread (fewer when
    ``total`` is small), so that threads that finish early take more."""
    parts = max(1, min(total, threads() * per_thread if threads() > 1 else 1))
    return [(i * total // parts, (i + 1) * total // parts) for i in range(parts)]


def run(fn: Callable[..., object], args: Sequence[tuple]) -> None:
    """Call ``fn(*a)`` for every ``a`` in ``args``, on the thread pool when there is more than one.

    ``fn`` must release the GIL (``njit(nogil=True)``) and write its results into arrays it was
    given; the first exception raised by a call is re-raised here.
    """
    if len(args) <= 1 or threads() == 1:
        for a in args:
            fn(*a)
        return
    for _ in _executor(threads()).map(lambda a: fn(*a), args):
        pass
