"""GPU benchmark in one command: point ops, the pretraining step and the fine-tuning step.

Measures on one CUDA device, in one process, and writes one Markdown report (``--out``):

- ops: FPS, kNN, Chamfer-L2 (forward and forward+backward) and 3-NN interpolation at the ReCon
  sizes and up to 100k points; ours (``backend="triton"``, ``"keops"`` where pykeops imports and
  compiles, ``"auto"``) against the torch reference path (``backend="torch"``: FPS's loop, the
  dense kNN/Chamfer search) and, when installed, torch_cluster and pointnet2_ops. Median of CUDA
  events after warm-up, peak memory above the inputs (``max_memory_allocated`` after a reset),
  and every result checked against the reference (FPS indices equal, kNN sets equal up to distance
  ties, values within float tolerance); a mismatch is flagged in the table.
- the ReCon-base pretraining student step at batch 128 (forward + losses + backward + AdamW) in
  fp32 and bf16 autocast, with online teachers (full-size, random weights), cached teacher
  features (random features of the right sizes, looked up on the host as ``CachedTeachers``
  does) and cached features + on-device data (subsets and rotations drawn on the GPU from a
  resident (N, 8192, 3) tensor), eager and with ``torch.compile`` of the encoder/decoder blocks.
- the fine-tuning step of ScanObjectNN hardest (32 x 2048 points, FPS 2048 -> 2048 each step) and
  ModelNet40 8k (32 x 8192, FPS 8192 -> 8192), FPS included, and its share.

Goals printed beside the figures: FPS 32x1024->64 and 32x8192->1200 under 1 ms; pretraining at
>= 4,500 samples/s on an H100/H200 with cached teachers + on-device data in bf16 (300 epochs of
ShapeNet-55's 52,470 shapes in under an hour).

    python benchmarks/gpu.py [--device cuda|cpu] [--dry-run] [--quick] [--budget-s 300]
                             [--out docs/benchmarks-gpu.md]

``--dry-run`` uses tiny sizes and few repeats so that every code path runs, on CPU too (Triton in
its interpreter, dynamo with the eager backend). Rows are run in priority order and, once
``--budget-s`` is spent, the remaining ones are listed as skipped: the full run fits in about six
minutes on an H200. Only torch and this package are imported up front; teachers (open_clip),
KeOps and the third-party libraries load inside their rows, which report why they could not run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
# Read when pykeops is first imported (inside a row): quiet, and a cache folder of our own.
os.environ.setdefault("KEOPS_VERBOSE", "0")
os.environ.setdefault("PYKEOPS_VERBOSE", "0")
os.environ.setdefault("KEOPS_CACHE_FOLDER", str(_ROOT / ".cache" / "keops"))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _common import peak_memory_mib  # noqa: E402
from recon_lightning import ops  # noqa: E402
from recon_lightning.ops.knn import sq_dist_gathered  # noqa: E402

#: ShapeNet-55 pretraining: shapes per epoch (train + test lists, ``whole=True``) and epochs.
SHAPENET55_SHAPES = 52_470
PRETRAIN_EPOCHS = 300
#: Goals (issue 12): FPS at the two ReCon sizes, and pretraining throughput on an H100/H200.
FPS_GOAL_MS = 1.0
FPS_GOAL_WORKLOADS = ("32x1024 -> 64", "32x8192 -> 1200")
PRETRAIN_GOAL_SPS = 4_500
#: The ReCon-base pretraining model (conf/encoder/base.yaml + masking rand 0.6).
BASE = dict(
    trans_dim=384,
    depth=12,
    num_heads=6,
    num_group=64,
    group_size=32,
    drop_path_rate=0.1,
    decoder_depth=4,
    decoder_num_heads=6,
    mask_ratio=0.6,
    img_dim=768,
    text_dim=512,
)
#: What --dry-run builds instead: the same code paths in seconds on a CPU.
TINY = dict(
    trans_dim=32,
    depth=2,
    num_heads=2,
    num_group=16,
    group_size=8,
    drop_path_rate=0.1,
    decoder_depth=1,
    decoder_num_heads=2,
    mask_ratio=0.6,
    img_dim=768,
    text_dim=512,
)


# ---------------------------------------------------------------------------------------- plumbing


@dataclass
class Settings:
    """Sizes and repeat counts of one run (full, ``--quick`` or ``--dry-run``)."""

    device: str
    dry_run: bool
    quick: bool
    warmup: int
    reps: int
    max_row_s: float  # timing seconds per row, after warm-up

    @property
    def cuda(self) -> bool:
        return self.device == "cuda"


class Budget:
    """Wall-clock budget: rows check it before they start and are skipped once it is spent."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.perf_counter()
        self.skipped = 0
        self.on_progress: Callable[[], None] = lambda: None

    def progress(self) -> None:
        """After each row: rewrite the report, so a run stopped from outside keeps its rows."""
        self.on_progress()

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, cost_s: float = 0.0) -> bool:
        """Whether a row expected to take ``cost_s`` seconds still fits."""
        ok = self.elapsed() + cost_s <= self.seconds
        if not ok:
            self.skipped += 1
        return ok

    def reason(self) -> str:
        return f"skipped: --budget-s {self.seconds:.0f} spent"


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def median_ms(fn: Callable[[], object], s: Settings, warmup: int | None = None) -> float:
    """Median milliseconds of ``fn`` after warm-up: CUDA events on a GPU, else a host clock.

    Repeats ``s.reps`` times, fewer once ``s.max_row_s`` is spent (at least three, or ``reps``).
    """
    for _ in range(s.warmup if warmup is None else warmup):
        fn()
    sync(s.device)
    times: list[float] = []
    deadline = time.perf_counter() + s.max_row_s
    while len(times) < s.reps and (len(times) < min(3, s.reps) or time.perf_counter() < deadline):
        if s.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def failure(err: BaseException) -> str:
    """One-line description of an exception for a table cell."""
    msg = " ".join(str(err).split())
    return f"failed: {type(err).__name__}: {msg[:120]}"


def free_memory(device: str) -> None:
    if device == "cuda":
        torch.cuda.empty_cache()


@contextlib.contextmanager
def triton_mode(s: Settings) -> Iterator[None]:
    """Triton's interpreter on for CPU tensors (the kernels read the variable at each launch)."""
    if s.cuda:
        yield
        return
    before = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        yield
    finally:
        if before is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = before


def autocast(device: str, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast as Lightning's ``bf16-mixed`` sets it, or nothing for fp32."""
    if precision == "bf16":
        return torch.autocast(device, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@functools.cache
def version_of(module: str) -> str:
    """``module.__version__``, "installed" without one, or "missing"."""
    try:
        mod = __import__(module)
    except Exception:  # not installed, or broken at import (a missing shared library)
        return "missing"
    return str(getattr(mod, "__version__", "installed"))


# ---------------------------------------------------------------------------------------- inputs


def cloud(b: int, n: int, seed: int, device: str) -> torch.Tensor:
    """(b, n, 3) float32 clouds of three Gaussian blobs at unit radius, none within the FPS skip
    radius of the origin, so plain FPS libraries must give the reference's indices exactly."""
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(b, 3, 1, 3, generator=g)
    scales = 0.05 + 0.3 * torch.rand(b, 3, 1, 3, generator=g)
    which = torch.randint(0, 3, (b, n), generator=g)
    pts = torch.randn(b, 3, n, 3, generator=g) * scales + centers
    pts = pts[torch.arange(b)[:, None], which, torch.arange(n)[None, :]]
    pts = pts - pts.mean(1, keepdim=True)
    pts = pts / pts.norm(dim=-1).amax(1).view(b, 1, 1)
    r = pts.norm(dim=-1, keepdim=True)
    pts = torch.where(r < 0.04, pts / r.clamp_min(1e-9) * 0.04, pts)
    return pts.contiguous().to(device)


# ---------------------------------------------------------------------------------------- ops


@dataclass
class Impl:
    """One way of doing an op's job; ``run(grad)`` returns what is compared with the reference."""

    name: str
    run: Callable[[bool], torch.Tensor]
    kind: str = "ours"  # ours | reference | library
    skip: str | None = None
    triton: bool = False  # needs Triton's interpreter on CPU


@dataclass
class OpRow:
    op: str
    workload: str
    impl: str
    kind: str
    fwd_ms: float | None = None
    fb_ms: float | None = None
    peak_mib: float | None = None
    same: str = ""
    note: str = ""
    vs_ref: dict[str, float] = field(default_factory=dict)
    goal: str = ""


@dataclass
class Workload:
    op: str
    label: str
    impls: list[Impl]
    leaves: list[torch.Tensor]
    check: Callable[[torch.Tensor, torch.Tensor], str]
    grad: bool = True


def _equal_indices(ref: torch.Tensor, got: torch.Tensor) -> str:
    if ref.shape == got.shape and torch.equal(ref.cpu(), got.cpu().long()):
        return "yes"
    if ref.shape != got.shape:
        return f"MISMATCH: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
    return f"MISMATCH: {(ref.cpu() != got.cpu().long()).float().mean():.2%} of indices differ"


def _close(rtol: float, atol: float) -> Callable[[torch.Tensor, torch.Tensor], str]:
    def check(ref: torch.Tensor, got: torch.Tensor) -> str:
        ref, got = ref.detach().double().cpu(), got.detach().double().cpu()
        if ref.shape == got.shape and torch.allclose(ref, got, rtol=rtol, atol=atol):
            return "yes"
        if ref.shape != got.shape:
            return f"MISMATCH: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
        return f"MISMATCH: max diff {(ref - got).abs().max():.2e}"

    return check


def _knn_check(q: torch.Tensor, p: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], str]:
    """kNN results agree when the neighbour *sets* are equal; a different member is accepted only
    where its distance ties the reference's (then both sets are correct)."""

    def check(ref: torch.Tensor, got: torch.Tensor) -> str:
        got = got.to(ref.device).long()
        if got.shape != ref.shape:
            return f"MISMATCH: shape {tuple(got.shape)} vs {tuple(ref.shape)}"
        differ = (ref.sort(-1).values != got.sort(-1).values).any(-1)
        if not bool(differ.any()):
            return "yes"
        with torch.no_grad():
            d_ref = sq_dist_gathered(q, p, ref).sort(-1).values
            d_got = sq_dist_gathered(q, p, got).sort(-1).values
        share = f"{differ.float().mean():.2%} of queries"
        if torch.allclose(d_ref, d_got, rtol=1e-5, atol=1e-7):
            return f"yes (sets differ at distance ties in {share})"
        return f"MISMATCH: {share} have other neighbours"

    return check


def _keops_skip(s: Settings) -> str | None:
    if not s.cuda and s.dry_run:
        return "dry run on CPU: KeOps compiles take ~10 s per formula"
    return None


def _triton_skip(s: Settings) -> str | None:
    from recon_lightning.ops import _triton

    if _triton.triton_error() is not None:
        return "triton is not importable here"
    if not s.cuda and not s.dry_run:
        return "Triton runs CPU tensors only in its interpreter (used by --dry-run)"
    return None


def fps_workload(b: int, n: int, m: int, s: Settings) -> Workload:
    x = cloud(b, n, 1, s.device)
    # The reference loop launches a few kernels per sample: fine on a GPU, minutes on a CPU.
    slow_ref = "minutes on CPU" if not s.cuda and b * n * m > 5e7 else None

    def ours(backend: str) -> Callable[[bool], torch.Tensor]:
        return lambda grad: ops.fps(x, m, backend=backend)

    impls = [
        Impl("torch loop (reference)", ours("torch"), "reference", slow_ref),
        Impl("ours triton", ours("triton"), skip=_triton_skip(s), triton=True),
    ]
    impls += _fps_libraries(x, m, s)
    return Workload("FPS", f"{b}x{n} -> {m}", impls, [], _equal_indices, grad=False)


def _fps_libraries(x: torch.Tensor, m: int, s: Settings) -> list[Impl]:
    """torch_cluster's and pointnet2_ops' FPS (CUDA), where installed."""
    b, n, _ = x.shape
    out: list[Impl] = []

    def torch_cluster_fps(grad: bool) -> torch.Tensor:
        import torch_cluster

        batch = torch.arange(b, device=x.device).repeat_interleave(n)
        idx = torch_cluster.fps(x.reshape(-1, 3), batch, ratio=m / n, random_start=False)
        # ceil(ratio * n) per cloud may round up to m + 1: keep the first m of each cloud.
        idx = idx.view(b, -1)[:, :m]
        return idx - (torch.arange(b, device=x.device) * n)[:, None]

    def pointnet2_fps(grad: bool) -> torch.Tensor:
        from pointnet2_ops import pointnet2_utils

        return pointnet2_utils.furthest_point_sample(x.contiguous(), m).long()

    for name, module, fn in (
        ("torch_cluster.fps", "torch_cluster", torch_cluster_fps),
        ("pointnet2_ops FPS", "pointnet2_ops", pointnet2_fps),
    ):
        skip = None
        if version_of(module) == "missing":
            skip = "not installed"
        elif not s.cuda:
            skip = "CUDA only here"
        out.append(Impl(name, fn, "library", skip))
    return out


def knn_workload(b: int, m: int, n: int, k: int, s: Settings) -> Workload:
    p = cloud(b, n, 2, s.device).requires_grad_()
    q = ops.gather_points(p.detach(), ops.fps(p.detach(), m)).requires_grad_()

    def ours(backend: str) -> Callable[[bool], torch.Tensor]:
        def run(grad: bool) -> torch.Tensor:
            d, idx = ops.knn(q, p, k, backend=backend)
            if grad:
                d.sum().backward()
            return idx

        return run

    def torch_cluster_knn(grad: bool) -> torch.Tensor:
        import torch_cluster

        bx = torch.arange(b, device=p.device).repeat_interleave(n)
        by = torch.arange(b, device=p.device).repeat_interleave(m)
        row, col = torch_cluster.knn(
            p.detach().reshape(-1, 3), q.detach().reshape(-1, 3), k, bx, by
        )
        # Edges come grouped by query (row); col indexes the flat points of all clouds.
        col = col[row.argsort(stable=True)].view(b, m, k)
        idx = col - (torch.arange(b, device=p.device) * n).view(b, 1, 1)
        d = sq_dist_gathered(q, p, idx)  # library neighbours, our differentiable gather
        if grad:
            d.sum().backward()
        return idx

    dense = b * m * n * 4
    impls = [
        Impl(
            "torch dense (reference)",
            ours("torch"),
            "reference",
            f"{dense / 2**30:.0f} GiB of distances" if dense > 2**34 else None,
        ),
        Impl("ours triton", ours("triton"), skip=_triton_skip(s), triton=True),
        Impl("ours keops", ours("keops"), skip=_keops_skip(s)),
        Impl("ours auto", ours("auto")),
        Impl(
            "torch_cluster.knn + gather",
            torch_cluster_knn,
            "library",
            "not installed" if version_of("torch_cluster") == "missing" else None,
        ),
    ]
    return Workload("kNN", f"{b}x({m} over {n}), k={k}", impls, [q, p], _knn_check(q.detach(), p))


def chamfer_workload(b: int, n: int, s: Settings, label: str | None = None) -> Workload:
    x = cloud(b, n, 3, s.device).requires_grad_()
    y = cloud(b, n, 4, s.device).requires_grad_()

    def ours(backend: str) -> Callable[[bool], torch.Tensor]:
        def run(grad: bool) -> torch.Tensor:
            loss = ops.chamfer_l2(x, y, backend=backend)
            if grad:
                loss.backward()
            return loss.detach()

        return run

    impls = [
        Impl("torch dense (reference)", ours("torch"), "reference"),
        Impl("ours triton", ours("triton"), skip=_triton_skip(s), triton=True),
        Impl("ours keops", ours("keops"), skip=_keops_skip(s)),
        Impl("ours auto", ours("auto")),
    ]
    return Workload(
        "Chamfer-L2", label or f"{b}x({n} vs {n})", impls, [x, y], _close(rtol=1e-4, atol=1e-7)
    )


def interp_workload(b: int, n: int, m: int, c: int, s: Settings) -> Workload:
    dst, src = cloud(b, n, 6, s.device), cloud(b, m, 7, s.device)
    feat = torch.randn(b, m, c, device=s.device, requires_grad=True)

    def ours(backend: str) -> Callable[[bool], torch.Tensor]:
        def run(grad: bool) -> torch.Tensor:
            out = ops.three_nn_interpolate(dst, src, feat, backend=backend)
            if grad:
                out.sum().backward()
            return out.detach()

        return run

    def pointnet2_interp(grad: bool) -> torch.Tensor:
        from pointnet2_ops import pointnet2_utils as pu

        dist, idx = pu.three_nn(dst.contiguous(), src.contiguous())
        # pointnet2_ops returns distances; our weights are 1 / (d² + 1e-8), normalised.
        w = 1.0 / (dist.square() + 1e-8)
        w = w / w.sum(-1, keepdim=True)
        out = pu.three_interpolate(feat.transpose(1, 2).contiguous(), idx, w).transpose(1, 2)
        if grad:
            out.sum().backward()
        return out.detach()

    pn2 = "not installed" if version_of("pointnet2_ops") == "missing" else None
    impls = [
        Impl("torch dense (reference)", ours("torch"), "reference"),
        Impl("ours triton", ours("triton"), skip=_triton_skip(s), triton=True),
        Impl("ours keops", ours("keops"), skip=_keops_skip(s)),
        Impl("ours auto", ours("auto")),
        Impl("pointnet2_ops three_nn + interpolate", pointnet2_interp, "library", pn2),
    ]
    return Workload("3-NN interp", f"{b}x({n} from {m}), C={c}", impls, [feat], _close(1e-4, 1e-5))


def op_workloads(s: Settings) -> Iterator[Callable[[], Workload]]:
    """Workload builders in priority order (the goal sizes first); built lazily, one at a time."""
    if s.dry_run:
        yield lambda: fps_workload(2, 256, 16, s)
        yield lambda: fps_workload(2, 512, 64, s)
        yield lambda: knn_workload(2, 16, 256, 8, s)
        yield lambda: chamfer_workload(8, 16, s, "8 patches (16 vs 16)")
        yield lambda: chamfer_workload(2, 256, s)
        yield lambda: interp_workload(2, 256, 32, 16, s)
        return
    yield lambda: fps_workload(32, 1024, 64, s)
    yield lambda: fps_workload(32, 8192, 1200, s)
    yield lambda: fps_workload(128, 1024, 64, s)
    yield lambda: knn_workload(32, 64, 1024, 32, s)
    yield lambda: knn_workload(128, 64, 1024, 32, s)
    yield lambda: chamfer_workload(128 * 64, 32, s, "128x64 patches (32 vs 32)")
    yield lambda: chamfer_workload(32, 1024, s)
    yield lambda: interp_workload(16, 2048, 128, 384, s)
    yield lambda: fps_workload(32, 2048, 2048, s)
    yield lambda: knn_workload(32, 128, 2048, 32, s)
    if not s.quick:
        yield lambda: fps_workload(32, 8192, 8192, s)
        yield lambda: knn_workload(32, 512, 8192, 32, s)
        yield lambda: fps_workload(1, 100_000, 4096, s)
        yield lambda: knn_workload(1, 4096, 100_000, 32, s)
        yield lambda: chamfer_workload(1, 100_000, s)
        yield lambda: interp_workload(1, 100_000, 4096, 64, s)


def measure_workload(w: Workload, s: Settings) -> list[OpRow]:
    """Run every implementation of one workload; check each against the reference."""
    rows: list[OpRow] = []
    ref: torch.Tensor | None = None
    ref_row: OpRow | None = None
    for impl in w.impls:
        row = OpRow(w.op, w.label, impl.name, impl.kind)
        rows.append(row)
        if impl.skip:
            row.note = f"skipped: {impl.skip}"
            continue

        def fb(impl: Impl = impl) -> torch.Tensor:
            for t in w.leaves:
                t.grad = None
            return impl.run(True)

        try:
            with triton_mode(s) if impl.triton else contextlib.nullcontext():
                out = impl.run(False)  # compiles what it needs, and gives the result
                row.fwd_ms = median_ms(lambda impl=impl: impl.run(False), s)
                if w.grad and w.leaves:
                    row.fb_ms = median_ms(fb, s)
                row.peak_mib = peak_memory_mib(
                    fb if w.grad and w.leaves else (lambda impl=impl: impl.run(False)), s.device
                )
        except Exception as err:  # a backend unavailable or broken here: say so, go on
            row.note = failure(err)
            free_memory(s.device)
            continue
        if impl.kind == "reference":
            ref, ref_row, row.same = out, row, "reference"
        elif ref is None:
            row.same = "no reference to compare"
        else:
            row.same = w.check(ref, out)
    if ref_row is not None:
        for row in rows:
            if row is not ref_row and row.fwd_ms and ref_row.fwd_ms:
                row.vs_ref["fwd"] = ref_row.fwd_ms / row.fwd_ms
            if row is not ref_row and row.fb_ms and ref_row.fb_ms:
                row.vs_ref["fb"] = ref_row.fb_ms / row.fb_ms
    if w.op == "FPS" and w.label in FPS_GOAL_WORKLOADS and s.cuda:
        for row in rows:
            if row.impl == "ours triton" and row.fwd_ms is not None:
                met = row.fwd_ms < FPS_GOAL_MS and row.same == "yes"
                row.goal = f"< {FPS_GOAL_MS:g} ms: {'met' if met else 'MISSED'}"
    return rows


def run_ops(s: Settings, budget: Budget, rows: list[OpRow]) -> None:
    """Every op workload in priority order, appended to ``rows`` as they finish."""
    for build in op_workloads(s):
        if not budget.allows():
            rows.append(OpRow("…", "remaining op workloads", "—", "ours", note=budget.reason()))
            break
        try:
            w = build()
        except Exception as err:  # e.g. out of memory building 100k inputs on a small card
            rows.append(OpRow("?", "?", "—", "ours", note=failure(err)))
            continue
        print(f"[ops] {w.op} {w.label}", flush=True)
        rows += measure_workload(w, s)
        del w
        free_memory(s.device)
        budget.progress()


# ---------------------------------------------------------------------------------------- steps


@dataclass
class StepRow:
    section: str  # pretrain | finetune
    precision: str
    mode: str = ""  # pretraining data mode: on-device | cached | online
    teachers: str = ""
    data: str = ""
    compiled: bool = False
    recipe: str = ""
    batch: int = 0
    ms: float | None = None
    fps_ms: float | None = None
    peak_mib: float | None = None
    note: str = ""
    goal: str = ""

    @property
    def samples_per_s(self) -> float | None:
        return self.batch / self.ms * 1e3 if self.ms else None


@dataclass
class PretrainSizes:
    batch: int
    npoints: int
    stored: int  # points per stored shape (ShapeNet-55: 8192)
    shapes: int  # resident shapes for on-device data (ShapeNet-55: 52,470)
    host_shapes: int  # rows of the host-side cached feature table
    views: int  # cached image views per shape (K)
    categories: list[str]
    model: dict
    tiny_teachers: bool


def pretrain_sizes(s: Settings) -> PretrainSizes:
    from recon_lightning.data.shapenet_synsets import SHAPENET55_SYNSETS

    names = list(SHAPENET55_SYNSETS.values())
    if s.dry_run:
        return PretrainSizes(4, 256, 512, 64, 64, 2, names[:4], TINY, True)
    return PretrainSizes(128, 1024, 8192, SHAPENET55_SHAPES, 8192, 10, names, BASE, False)


class PretrainInputs:
    """The three ways a pretraining step gets its points and teacher targets.

    - ``online``: a host batch as the DataLoader gives it (pinned points, uint8 images, texts)
      copied to the device, the y-rotation there, and the frozen teachers' forward.
    - ``cached``: a host batch of points and indices; image/text features looked up in host
      tables (as ``CachedTeachers`` reads its memory map) and copied over.
    - ``on-device``: nothing crosses the bus: shapes, labels and feature tables are resident, each
      step draws shape indices, a random ``npoints`` subset per shape (ShapeNet-55's item
      sampling), the unit-sphere normalisation, the y-rotation and the features on the GPU.

    The DataLoader workers' own time (file reads, image augmentation) is not in any of them: it
    overlaps the step when enough workers run.
    """

    def __init__(self, z: PretrainSizes, device: str) -> None:
        self.z, self.device = z, device
        pin = device == "cuda"
        g = torch.Generator().manual_seed(0)
        b = z.batch
        self.labels_host = torch.randint(0, len(z.categories), (b,), generator=g)
        self.texts = [z.categories[i] for i in self.labels_host.tolist()]
        self.points_host = torch.randn(b, z.npoints, 3, generator=g) * 0.4
        self.index_host = torch.randint(0, z.host_shapes, (b,), generator=g)
        if pin:
            self.points_host = self.points_host.pin_memory()
        self.images_host: torch.Tensor | None = None
        # Host feature tables: (shapes, K, 768) image views and (categories, 60, 512) prompts.
        self.img_table_host = torch.randn(z.host_shapes, z.views, z.model["img_dim"], generator=g)
        self.txt_table_host = torch.randn(len(z.categories), 60, z.model["text_dim"], generator=g)
        self.shape_label_host = torch.randint(0, len(z.categories), (z.host_shapes,), generator=g)
        self._resident: dict[str, torch.Tensor] | None = None
        self._store: Any = False  # not looked up yet
        self.teachers: torch.nn.Module | None = None

    def resident(self) -> dict[str, torch.Tensor]:
        """The on-device dataset and feature tables, made on first use (5 GiB at full size)."""
        if self._resident is None:
            z, dev = self.z, self.device
            g = torch.Generator(device=dev).manual_seed(1)
            self._resident = {
                "points": torch.randn(z.shapes, z.stored, 3, device=dev, generator=g) * 0.4,
                "labels": torch.randint(0, len(z.categories), (z.shapes,), device=dev, generator=g),
                "img": torch.randn(z.shapes, z.views, z.model["img_dim"], device=dev, generator=g),
                "txt": self.txt_table_host.to(dev),
            }
        return self._resident

    def online_teachers(self) -> torch.nn.Module:
        """Full-size teachers with random weights (speed does not depend on their values)."""
        if self.teachers is None:
            from recon_lightning.teachers import build_teachers

            teachers = build_teachers(mode="random", tiny=self.z.tiny_teachers).to(self.device)
            teachers.eval()
            # Steady state: the text teacher remembers each description's 60 prompt features.
            with torch.no_grad():
                teachers.text(self.z.categories)
            self.teachers = teachers
            g = torch.Generator().manual_seed(2)
            images = torch.randint(0, 256, (self.z.batch, 3, 224, 224), generator=g)
            self.images_host = images.to(torch.uint8)
            if self.device == "cuda":
                self.images_host = self.images_host.pin_memory()
        return self.teachers

    def fn(
        self, mode: str, precision: str
    ) -> Callable[[], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """A closure giving ``(points, img_target, text_target)`` on the device for one step."""
        from recon_lightning.data.transforms import normalize_unit_sphere, rotate_y

        dev, z = self.device, self.z
        if mode == "online":
            teachers = self.online_teachers()

            def online() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                points = rotate_y(self.points_host.to(dev, non_blocking=True))
                batch = {"image": self.images_host.to(dev, non_blocking=True), "text": self.texts}
                # As PretrainTask: teachers under no_grad, inside the step's autocast region.
                with torch.no_grad(), autocast(dev, precision):
                    img, txt = teachers.targets(batch)
                return points, img.float(), txt.float()

            return online
        if mode == "cached":

            def cached() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
                points = rotate_y(self.points_host.to(dev, non_blocking=True))
                view = torch.randint(0, z.views, (z.batch,))
                prompt = torch.randint(0, 60, (z.batch,))
                img = self.img_table_host[self.index_host, view]
                txt = self.txt_table_host[self.shape_label_host[self.index_host], prompt]
                return points, img.to(dev), txt.to(dev)

            return cached
        res = self.resident()
        store = self.point_store()

        def draw_points(idx: torch.Tensor) -> torch.Tensor:
            if store is not None:
                return store.batch(idx, z.npoints, transform=rotate_y)["points"]
            # The first npoints of a uniformly random permutation per shape (argsort of i.i.d.
            # keys), the reference's per-item randperm(N)[:npoints], for the batch at once.
            keys = torch.rand(idx.shape[0], z.stored, device=dev)
            choice = keys.argsort(dim=1)[:, : z.npoints]
            return rotate_y(normalize_unit_sphere(res["points"][idx[:, None], choice]))

        def on_device() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            b = z.batch
            idx = torch.randint(0, z.shapes, (b,), device=dev)
            view = torch.randint(0, z.views, (b,), device=dev)
            prompt = torch.randint(0, 60, (b,), device=dev)
            img, txt = res["img"][idx, view], res["txt"][res["labels"][idx], prompt]
            return draw_points(idx), img, txt

        return on_device

    def point_store(self) -> Any:
        """The package's ``data.on_device.PointStore`` over the resident shapes, or ``None`` where
        this checkout has none (then ``fn`` draws the same subsets inline)."""
        if self._store is False:
            try:
                from recon_lightning.data.on_device import PointStore

                res = self.resident()
                self._store = PointStore(
                    points=res["points"],
                    labels=res["labels"],
                    descriptions=tuple(self.z.categories),
                )
            except Exception:  # absent, or another signature: fall back to the inline draw
                self._store = None
        return self._store

    def on_device_note(self) -> str:
        return "subsets: data.on_device.PointStore" if self.point_store() else "subsets: inline"


def compile_blocks(model: torch.nn.Module, s: Settings) -> str:
    """``torch.compile`` each encoder and decoder block in place; returns a note for the table.

    The blocks differ in their drop-path rate, a constant to dynamo, so each is its own graph
    (16 at base size, per precision): the recompile limit is raised to hold them all.
    """
    import torch._dynamo

    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 128)
    # Inductor on CPU compiles C++ for minutes; a CPU dry run traces with dynamo only.
    backend = "inductor" if s.cuda else "eager"
    blocks = [*model.encoder.blocks, *model.decoder.blocks]
    for block in blocks:
        block.compile(backend=backend)
    return f"{len(blocks)} blocks compiled ({backend})"


def resident_mib(*items: object) -> float:
    """MiB held by modules (parameters, buffers), optimisers (state), tensors and dicts of them."""
    total = 0
    for item in items:
        if isinstance(item, torch.nn.Module):
            tensors = [*item.parameters(), *item.buffers()]
        elif isinstance(item, torch.optim.Optimizer):
            tensors = [t for st in item.state.values() for t in st.values() if torch.is_tensor(t)]
        elif isinstance(item, dict):
            tensors = [t for t in item.values() if torch.is_tensor(t)]
        else:
            tensors = [item] if torch.is_tensor(item) else []
        total += sum(t.numel() * t.element_size() for t in tensors)
    return total / 2**20


def step_peak_mib(step: Callable[[], None], s: Settings, *resident: object) -> float | None:
    """Memory one configuration needs: on CUDA what it keeps resident (model, optimiser state,
    resident data, teachers) plus the step's transient peak above what was allocated before it;
    other configurations' leftovers in this process are not counted. CPU: the step's extra RSS."""
    transient = peak_memory_mib(step, s.device)
    if not s.cuda or transient is None:
        return transient
    return resident_mib(*resident) + transient


#: Pretraining rows by data mode: (teachers label, data label).
DATA_LABELS = {
    "online": ("online (random init, full size)", "host batch"),
    "cached": ("cached features (host table)", "host batch"),
    "on-device": ("cached features (on device)", "on device"),
}
MODE_ORDER = {"on-device": 0, "cached": 1, "online": 2}


def pretrain_plan(s: Settings) -> list[tuple[str, str, bool]]:
    """(precision, data mode, compiled) in priority order: the goal configuration first, online
    teachers last (they are built once and kept), compiled rows after every eager one."""
    if s.dry_run:  # each data mode, precision and the compiled path once
        return [
            ("bf16", "on-device", False),
            ("fp32", "cached", False),
            ("bf16", "online", False),
            ("bf16", "on-device", True),
        ]
    if s.quick:
        eager = [
            ("bf16", "on-device"),
            ("bf16", "cached"),
            ("fp32", "on-device"),
            ("bf16", "online"),
        ]
        compiled = [("bf16", "on-device"), ("bf16", "cached")]
    else:
        modes = ("on-device", "cached")
        eager = [(p, m) for p in ("bf16", "fp32") for m in modes]
        eager += [("bf16", "online"), ("fp32", "online")]
        compiled = list(eager)
    return [(p, m, False) for p, m in eager] + [(p, m, True) for p, m in compiled]


class PretrainBench:
    """Runs pretraining rows; keeps one model (eager, then a compiled one), the inputs and the
    teachers between rows so that each is built once."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.z = pretrain_sizes(s)
        self.inputs = PretrainInputs(self.z, s.device)
        self.model: tuple[bool, torch.nn.Module, torch.optim.Optimizer, str] | None = None
        self.compiled_ok: set[str] = set()  # precisions whose compiled graphs exist

    def _model(self, compiled: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer, str]:
        from recon_lightning.models import build_pretrainer

        if self.model is None or self.model[0] != compiled:
            self.model = None  # free the other one first
            free_memory(self.s.device)
            torch.manual_seed(0)
            model = build_pretrainer(**self.z.model).to(self.s.device).train()
            note = compile_blocks(model, self.s) if compiled else ""
            opt = torch.optim.AdamW(model.parameters(), lr=5e-4, weight_decay=0.05)
            self.model = (compiled, model, opt, note)
        return self.model[1], self.model[2], self.model[3]

    def run(self, plan: list[tuple[str, str, bool]], budget: Budget, rows: list[StepRow]) -> None:
        """Run ``plan``'s rows in order, appending each to ``rows``."""
        s, z = self.s, self.z
        for precision, mode, compiled in plan:
            teachers, data = DATA_LABELS[mode]
            if z.tiny_teachers:
                teachers = teachers.replace("full size", "tiny")
            row = StepRow("pretrain", precision, mode, teachers, data, compiled, batch=z.batch)
            rows.append(row)
            # A first compile at base size takes about a minute: not on a nearly spent budget.
            first = compiled and precision not in self.compiled_ok and s.cuda and not s.dry_run
            if not budget.allows(60.0 if first else 0.0):
                row.note = budget.reason()
                continue
            print(f"[pretrain] {precision} {mode} compiled={compiled}", flush=True)
            try:
                model, opt, note = self._model(compiled)
                get = self.inputs.fn(mode, precision)

                def step(model=model, opt=opt, get=get, precision=precision) -> None:
                    points, img, txt = get()
                    with autocast(s.device, precision):
                        loss = model.losses(points, img, txt)["total"]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                # Compiling happens in the first steps: warm up longer.
                row.ms = median_ms(
                    step, s, warmup=s.warmup + (2 if compiled and not s.dry_run else 0)
                )
                held: object = None  # what this data mode keeps on the device besides the model
                if mode == "online":
                    held = self.inputs.teachers
                elif mode == "on-device":
                    held = self.inputs.resident()
                row.peak_mib = step_peak_mib(step, s, model, opt, held)
                notes = [note, self.inputs.on_device_note() if mode == "on-device" else ""]
                row.note = "; ".join(n for n in notes if n)
                if compiled:
                    self.compiled_ok.add(precision)
            except Exception as err:  # open_clip missing, out of memory, a compile failure, ...
                row.note = failure(err)
                if os.environ.get("RECON_BENCH_TRACEBACK"):
                    traceback.print_exc()
                free_memory(s.device)
                budget.progress()
                continue
            if (
                mode == "on-device"
                and precision == "bf16"
                and row.samples_per_s
                and s.cuda
                and not s.dry_run
            ):
                met = row.samples_per_s >= PRETRAIN_GOAL_SPS
                row.goal = f">= {PRETRAIN_GOAL_SPS:,}/s: {'met' if met else 'MISSED'}"
            budget.progress()

    def close(self) -> None:
        self.model = None
        self.inputs = None  # type: ignore[assignment]
        free_memory(self.s.device)


@dataclass
class Recipe:
    name: str
    batch: int
    stored: int
    npoints: int
    model: dict
    transform: str


def finetune_recipes(s: Settings) -> list[Recipe]:
    base = {k: BASE[k] for k in ("trans_dim", "depth", "num_heads", "group_size")}
    if s.dry_run:
        tiny = {k: TINY[k] for k in ("trans_dim", "depth", "num_heads", "group_size")}
        return [
            Recipe(
                "tiny (dry run)", 4, 512, 256, {**tiny, "num_group": 16, "cls_dim": 15}, "rotate_y"
            )
        ]
    return [
        Recipe(
            "ScanObjectNN hardest",
            32,
            2048,
            2048,
            {**base, "num_group": 128, "drop_path_rate": 0.2, "cls_dim": 15},
            "rotate_y",
        ),
        Recipe(
            "ModelNet40 8k",
            32,
            8192,
            8192,
            {**base, "num_group": 512, "drop_path_rate": 0.2, "cls_dim": 40},
            "scale_and_translate",
        ),
    ]


def run_finetune(s: Settings, budget: Budget, rows: list[StepRow]) -> None:
    """Fine-tuning rows of every recipe, fp32 then bf16 (fp32 only with ``--quick``)."""
    # A dry run checks the code path once (bf16: autocast included); --quick keeps fp32.
    precisions = ("bf16",) if s.dry_run else ("fp32",) if s.quick else ("fp32", "bf16")
    for recipe in finetune_recipes(s):
        finetune_rows(recipe, precisions, s, budget, rows)
        free_memory(s.device)


def finetune_rows(
    recipe: Recipe, precisions: tuple[str, ...], s: Settings, budget: Budget, rows: list[StepRow]
) -> None:
    """The fine-tuning step as the DataModule + ClassificationTask run it: the host batch copied
    over, FPS to ``point_all`` and a random ``npoints`` subset on the device, the train
    augmentation, cross-entropy, backward, gradient clipping at norm 10, AdamW."""
    from recon_lightning.data.transforms import fps_then_subset, get_batch_transform, point_all_for
    from recon_lightning.models import build_classifier

    points_host = cloud(recipe.batch, recipe.stored, 8, "cpu")
    labels_host = torch.randint(0, recipe.model["cls_dim"], (recipe.batch,))
    if s.cuda:
        points_host, labels_host = points_host.pin_memory(), labels_host.pin_memory()
    transform = get_batch_transform(recipe.transform)
    point_all = point_all_for(recipe.npoints, recipe.stored)
    model: torch.nn.Module | None = None
    opt: torch.optim.Optimizer | None = None

    def sample() -> torch.Tensor:
        points = points_host.to(s.device, non_blocking=True)
        return transform(fps_then_subset(points, recipe.npoints, point_all))

    for precision in precisions:
        row = StepRow("finetune", precision, recipe=recipe.name, batch=recipe.batch)
        row.data = f"{recipe.stored} -> FPS {point_all} -> {recipe.npoints}"
        rows.append(row)
        if not budget.allows():
            row.note = budget.reason()
            continue
        print(f"[finetune] {recipe.name} {precision}", flush=True)
        try:
            if model is None or opt is None:
                torch.manual_seed(0)
                model = build_classifier(**recipe.model).to(s.device).train()
                opt = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.05)

            def step(model=model, opt=opt, precision=precision) -> None:
                points = sample()
                labels = labels_host.to(s.device, non_blocking=True)
                with autocast(s.device, precision):
                    loss = F.cross_entropy(model(points), labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
                opt.step()

            row.ms = median_ms(step, s)
            row.fps_ms = median_ms(sample, s, warmup=1)
            row.peak_mib = step_peak_mib(step, s, model, opt)
        except Exception as err:  # out of memory, a backend failing here, ...
            row.note = failure(err)
            free_memory(s.device)
        budget.progress()


# ---------------------------------------------------------------------------------------- report


def _ms(v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v:,.3f}" if v < 1 else f"{v:,.2f}" if v < 100 else f"{v:,.0f}"


def _mib(v: float | None) -> str:
    return "—" if v is None else f"{v:,.1f}" if v < 100 else f"{v:,.0f}"


def _ratio(v: float) -> str:
    """A speed-up with two significant digits (0.031x, 2.4x, 31x)."""
    return f"{v:.2g}x" if v < 10 else f"{v:.0f}x"


def _flag(same: str) -> str:
    return f"**{same}**" if same.startswith("MISMATCH") else same


def launch_floor_ms(s: Settings) -> float | None:
    """Time of one tiny kernel between CUDA events: the floor under any one-launch op."""
    if not s.cuda:
        return None
    x = torch.zeros(1, device="cuda")
    quick = Settings(s.device, False, False, warmup=5, reps=50, max_row_s=0.5)
    return median_ms(lambda: x.add_(1), quick)


def header(s: Settings, args: argparse.Namespace, floor: float | None) -> list[str]:
    if s.cuda:
        props = torch.cuda.get_device_properties(0)
        gpu = (
            f"{torch.cuda.get_device_name(0)} (compute capability {props.major}.{props.minor}, "
            f"{props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs)"
        )
    else:
        gpu = f"none: CPU run ({platform.processor() or platform.machine()})"
    mode = "dry run (tiny sizes: code paths, not figures)" if s.dry_run else "full"
    if s.quick and not s.dry_run:
        mode = "quick"
    lines = [
        f"- device: {gpu}",
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}), triton {version_of('triton')}, "
        f"pykeops {version_of('pykeops')}, torch_cluster {version_of('torch_cluster')}, "
        f"pointnet2_ops {version_of('pointnet2_ops')}; Python {platform.python_version()}",
        f"- run: {mode}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
        f"`python benchmarks/gpu.py {' '.join(args.argv)}`".rstrip(),
    ]
    if floor is not None:
        lines.append(f"- one tiny kernel between CUDA events: {_ms(floor)} ms (the launch floor)")
    return lines


def goals_table(ops_rows: list[OpRow], steps: list[StepRow], s: Settings) -> list[str]:
    out = ["| goal | measured | status |", "|---|---:|---|"]
    for workload in FPS_GOAL_WORKLOADS:
        row = next(
            (
                r
                for r in ops_rows
                if r.op == "FPS" and r.workload == workload and r.impl == "ours triton"
            ),
            None,
        )
        measured = f"{_ms(row.fwd_ms)} ms" if row and row.fwd_ms is not None else "not measured"
        status = row.goal.split(": ")[-1] if row and row.goal else "not measured"
        out.append(f"| FPS {workload} (triton) < {FPS_GOAL_MS:g} ms | {measured} | {status} |")
    best = max(
        (
            r
            for r in steps
            if r.section == "pretrain" and r.mode == "on-device" and r.precision == "bf16" and r.ms
        ),
        key=lambda r: r.samples_per_s or 0.0,
        default=None,
    )
    if best is None:
        measured, status = "not measured", "not measured"
    else:
        sps = best.samples_per_s or 0.0
        hours = PRETRAIN_EPOCHS * SHAPENET55_SHAPES / sps / 3600
        measured = (
            f"{sps:,.0f} samples/s ({'compiled' if best.compiled else 'eager'}); "
            f"{PRETRAIN_EPOCHS} epochs in {hours:.1f} h"
        )
        status = "met" if sps >= PRETRAIN_GOAL_SPS else "MISSED"
        if s.dry_run or not s.cuda:
            status = "n/a: not a GPU figure"
    out.append(
        f"| pretraining, bf16, cached teachers + on-device data >= {PRETRAIN_GOAL_SPS:,} "
        f"samples/s on an H100/H200 | {measured} | {status} |"
    )
    return out


def ops_table(rows: list[OpRow]) -> list[str]:
    out = [
        "| op | workload | implementation | fwd ms | fwd+bwd ms | speed-up vs reference "
        "(fwd / fwd+bwd) | peak MiB | same result as reference | goal |",
        "|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        speed = " / ".join(_ratio(r.vs_ref[k]) if k in r.vs_ref else "—" for k in ("fwd", "fb"))
        if not r.vs_ref:
            speed = "1x" if r.same == "reference" else "—"
        same = r.note or _flag(r.same)
        name = f"**{r.impl}**" if r.impl.startswith("ours triton") else r.impl
        out.append(
            f"| {r.op} | {r.workload} | {name} | {_ms(r.fwd_ms)} | {_ms(r.fb_ms)} | {speed} "
            f"| {_mib(r.peak_mib)} | {same} | {r.goal} |"
        )
    return out


def pretrain_table(rows: list[StepRow]) -> list[str]:
    out = [
        "| precision | teachers | data | student | ms / step | samples / s | "
        f"{PRETRAIN_EPOCHS} epochs of ShapeNet-55 | peak MiB | goal | note |",
        "|---|---|---|---|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        sps = r.samples_per_s
        hours = f"{PRETRAIN_EPOCHS * SHAPENET55_SHAPES / sps / 3600:.1f} h" if sps else "—"
        out.append(
            f"| {r.precision} | {r.teachers} | {r.data} | "
            f"{'torch.compile blocks' if r.compiled else 'eager'} | {_ms(r.ms)} | "
            f"{f'{sps:,.0f}' if sps else '—'} | {hours} | {_mib(r.peak_mib)} | {r.goal} | "
            f"{r.note} |"
        )
    return out


def finetune_table(rows: list[StepRow]) -> list[str]:
    out = [
        "| recipe | batch | points: stored -> FPS -> model | precision | ms / step | "
        "samples / s | of which FPS + subset ms (share) | peak MiB | note |",
        "|---|---:|---|---|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        sps = r.samples_per_s
        fps = "—"
        if r.fps_ms is not None and r.ms:
            fps = f"{_ms(r.fps_ms)} ({100 * r.fps_ms / r.ms:.0f}%)"
        out.append(
            f"| {r.recipe} | {r.batch} | {r.data} | {r.precision} | {_ms(r.ms)} | "
            f"{f'{sps:,.0f}' if sps else '—'} | {fps} | {_mib(r.peak_mib)} | {r.note} |"
        )
    return out


def render(
    s: Settings,
    args: argparse.Namespace,
    ops_rows: list[OpRow],
    steps: list[StepRow],
    budget: Budget,
    floor: float | None,
) -> str:
    # Eager and compiled side by side, the goal configuration first.
    pre = sorted(
        (r for r in steps if r.section == "pretrain"),
        key=lambda r: (r.precision != "bf16", MODE_ORDER.get(r.mode, 9), r.compiled),
    )
    fine = [r for r in steps if r.section == "finetune"]
    z = pretrain_sizes(s)
    clock = "CUDA events" if s.cuda else "a host clock (CPU run)"
    cpu_peak = "" if s.cuda else " On CPU, peak = the extra resident memory of one call instead."
    lines = [
        "# GPU benchmarks",
        "",
        "Written by `benchmarks/gpu.py` (`benchmarks/gpu_session.sh` runs it on a lent GPU "
        "machine); rerun it to refresh these figures.",
        "",
        *header(s, args, floor),
        f"- wall time {budget.elapsed():.0f} s of a {budget.seconds:.0f} s budget"
        + (f"; {budget.skipped} row(s) skipped when it was spent" if budget.skipped else ""),
        "",
        "## Goals",
        "",
        *goals_table(ops_rows, steps, s),
        "",
        "## Point ops",
        "",
        f"Median of {clock} after warm-up (the first call compiles: Triton, KeOps). Speed-up = "
        'reference time / this time, the reference being the torch path (`backend="torch"`: '
        "FPS's loop, the dense kNN/Chamfer search). Peak = `max_memory_allocated` above the "
        "inputs during one forward+backward (forward only for FPS). Same result: FPS indices "
        "equal, kNN sets equal (other members only at distance ties), values within 1e-4."
        + cpu_peak,
        "",
        *ops_table(ops_rows),
        "",
        f"## Pretraining step (ReCon-{'tiny, dry run' if s.dry_run else 'base'}, batch {z.batch}, "
        f"{z.npoints} points)",
        "",
        "One step = the batch's inputs (below) + forward + losses + backward + AdamW. Teachers: "
        f"online = the {'tiny' if z.tiny_teachers else 'full-size'} ViT-B/16 and CLIP text "
        "towers with random weights; cached = "
        "random features of the right sizes looked up per step. Data: host batch = pinned points "
        "copied over each step and rotated there; on device = shapes resident in GPU memory, "
        f"subsets of {z.npoints} of {z.stored} points, normalisation and rotation drawn on the "
        "GPU. fp32 = torch's default matmul precision (no TF32), as recon-train runs; bf16 = "
        "autocast as `trainer.precision=bf16-mixed`. Peak = what the configuration holds on the "
        "GPU (model, optimiser state, resident data or teachers) + the step's transient peak "
        "(`max_memory_allocated` above what was allocated before it). DataLoader workers' time "
        "is not included." + cpu_peak,
        "",
        *pretrain_table(pre),
        "",
        "## Fine-tuning step (FPS in every step)",
        "",
        "As the DataModule and ClassificationTask train: the host batch copied over, FPS to "
        "`point_all` and a random subset on the GPU, the recipe's augmentation, cross-entropy, "
        "backward, gradient clipping at 10, AdamW. Peak as above.",
        "",
        *finetune_table(fine),
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- main


def settings_from(args: argparse.Namespace) -> Settings:
    if args.dry_run:
        # The first call (compiles, result check) is the warm-up; one timed call each.
        return Settings(args.device, True, args.quick, warmup=0, reps=1, max_row_s=0.0)
    if args.quick:
        return Settings(args.device, False, True, warmup=2, reps=10, max_row_s=0.3)
    return Settings(args.device, False, False, warmup=3, reps=25, max_row_s=0.5)


def default_out(args: argparse.Namespace) -> Path:
    """The committed report only for a full GPU run; dry and CPU runs write under outputs/."""
    if args.device == "cuda" and not args.dry_run:
        return _ROOT / "docs" / "benchmarks-gpu.md"
    name = "dry-run" if args.dry_run else args.device
    return _ROOT / "outputs" / f"benchmarks-gpu-{name}.md"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument(
        "--dry-run", action="store_true", help="tiny sizes, few repeats: every code path, quickly"
    )
    parser.add_argument(
        "--quick", action="store_true", help="ReCon sizes only, bf16 compiled only, fewer repeats"
    )
    parser.add_argument(
        "--budget-s",
        type=float,
        default=300.0,
        help="stop starting rows once this many seconds are spent (default 300)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="Markdown report (default: docs/benchmarks-gpu.md for a full CUDA run, else "
        "outputs/benchmarks-gpu-{dry-run,cpu}.md)",
    )
    parser.add_argument(
        "--only",
        default="ops,pretrain,finetune",
        help="comma-separated sections to run: ops, pretrain, finetune",
    )
    args = parser.parse_args(argv)
    args.argv = argv
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: use --device cpu (with --dry-run for a quick check)")
        return 2
    s = settings_from(args)
    if not s.cuda and "OMP_NUM_THREADS" not in os.environ:
        # CPU runs are for checking the code paths, often on a shared machine: one thread does
        # not spin against other programs for the cores.
        torch.set_num_threads(1)
    sections = set(args.only.split(","))
    unknown = sections - {"ops", "pretrain", "finetune"}
    if unknown:
        parser.error(f"--only: unknown section(s) {', '.join(sorted(unknown))}")
    out: Path = args.out or default_out(args)
    out.parent.mkdir(parents=True, exist_ok=True)
    budget = Budget(args.budget_s)
    torch.manual_seed(0)
    floor = launch_floor_ms(s)
    ops_rows: list[OpRow] = []
    steps: list[StepRow] = []

    def write() -> str:
        report = render(s, args, ops_rows, steps, budget, floor)
        out.write_text(report)
        return report

    budget.on_progress = write
    if "ops" in sections:
        run_ops(s, budget, ops_rows)
    # Fine-tuning, then eager pretraining, then the compiled rows (their first compile is long:
    # they are the first to go when the budget runs out).
    if "finetune" in sections:
        run_finetune(s, budget, steps)
    if "pretrain" in sections:
        bench = PretrainBench(s)
        plan = pretrain_plan(s)
        bench.run([p for p in plan if not p[2]], budget, steps)
        bench.run([p for p in plan if p[2]], budget, steps)
        bench.close()
    print(write())
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
