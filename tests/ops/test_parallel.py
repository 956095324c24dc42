"""The thread pool that spreads the numba kernels: exact partitions, results independent of the
thread count, errors surface, and a forked child gets working threads."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch

from ops.ops_cases import blobs
from recon_lightning import ops
from recon_lightning.ops import _parallel


@pytest.fixture
def torch_threads():
    """Set torch's thread count for one test, then restore it."""
    old = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(old)


@pytest.mark.parametrize("n_threads", [1, 2, 3])
def test_ranges_partition_exactly(torch_threads, n_threads):
    torch_threads(n_threads)
    for total in range(0, 40):
        parts = _parallel.ranges(total)
        covered = [i for a, b in parts for i in range(a, b)]
        assert covered == list(range(total))
        assert all(b > a for a, b in parts) or total == 0


def test_results_do_not_depend_on_thread_count(torch_threads):
    pts = blobs(5, 700, torch.float32, seed=1)
    single = blobs(1, 3000, torch.float32, seed=2)
    results = []
    for n_threads in (1, 2, 3):
        torch_threads(n_threads)
        results.append(
            (
                ops.fps(pts, 40),
                ops.fps(single, 300),
                ops.knn(pts[:, :50], pts, 9)[1],  # tree, clouds spread
                ops.knn(single[:, :500], single, 5)[1],  # tree, queries spread
                ops.knn(pts[:, :50], pts[:, :200], 4)[1],  # brute force
                ops.chamfer_l2(pts[:, :100], pts[:, 100:300]),
            )
        )
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_kernel_errors_surface(torch_threads):
    torch_threads(2)

    def boom(i: int) -> None:
        if i == 3:
            raise RuntimeError("kernel failed on range 3")

    with pytest.raises(RuntimeError, match="range 3"):
        _parallel.run(boom, [(i,) for i in range(6)])


def _child(queue) -> None:
    # torch's own OpenMP is not fork-safe (hence DataLoader workers run torch on 1 thread): keep
    # torch at 1 thread here and give only our pool 2 threads.
    torch.set_num_threads(1)
    _parallel.threads = lambda: 2
    queue.put(ops.fps(blobs(4, 300, torch.float32, seed=3), 16).tolist())


def test_forked_child_gets_a_working_pool(torch_threads):
    torch_threads(2)
    pts = blobs(4, 300, torch.float32, seed=3)
    want = ops.fps(pts, 16).tolist()  # the parent's pool exists now
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    got = queue.get(timeout=30)  # a child that reused the parent's dead pool would hang here
    proc.join(timeout=30)
    assert proc.exitcode == 0
    assert got == want
