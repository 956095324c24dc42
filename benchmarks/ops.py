"""Speed and peak memory of recon_lightning.ops against the fastest existing libraries.

Every backend of ours and the libraries for each job run in the same process, on the same inputs:
FPS, kNN, Chamfer-L2 (forward and forward+backward), grouping and 3-NN interpolation, from the
ReCon patch case (32 clouds of 1024 points -> 64 centers, k=32; 1,216 patch pairs of 32 points) up
to 100k points. Each row also checks that the result equals ours (FPS indices exactly, distances
and losses to float tolerance). ``make bench`` installs the ``bench`` extra and runs this.

    python benchmarks/ops.py [--threads=2] [--only fps,knn,chamfer,group,interp]
                             [--device cpu|cuda] [--budget 4] [--clock wall|cpu]
                             [--markdown PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


# Thread pools read these at import: set them before numpy/torch/pykdtree load.
def _early_threads(argv: list[str]) -> str:
    """``--threads`` as given (``--threads=N`` or ``--threads N``), needed before the imports."""
    for i, a in enumerate(argv):
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return "2"


_THREADS = _early_threads(sys.argv)
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
os.environ.setdefault("NUMBA_NUM_THREADS", _THREADS)
_ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEOPS_CACHE_FOLDER", str(_ROOT / ".cache" / "keops"))
os.environ.setdefault("KEOPS_VERBOSE", "0")
os.environ.setdefault("PYKEOPS_VERBOSE", "0")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from _common import machine_description, peak_memory_mib, time_call  # noqa: E402
from recon_lightning import ops  # noqa: E402
from recon_lightning.ops.knn import sq_dist_gathered  # noqa: E402

Result = object


@dataclass
class Impl:
    """One way of doing a job: ``run(grad)`` returns what is compared with the reference."""

    name: str
    ours: bool
    run: Callable[[bool], Result]
    skip: str | None = None  # why it is not run at this size
    grad: bool = True  # has a forward+backward variant


@dataclass
class Row:
    job: str
    workload: str
    impl: str
    ours: bool
    fwd_ms: float | None = None
    fb_ms: float | None = None
    peak_mib: float | None = None
    same: str = ""
    note: str = ""
    ratio: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------- inputs


def cloud(b: int, n: int, seed: int, device: str) -> torch.Tensor:
    """(b, n, 3) float32 clouds of three Gaussian blobs at unit radius, with no point inside the
    FPS skip radius (|p|² <= 1e-3), so plain FPS libraries must give our indices exactly."""
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


def _loop_gather(idx_np: list[np.ndarray], device: str) -> torch.Tensor:
    return torch.from_numpy(np.stack([i.astype(np.int64) for i in idx_np])).to(device)


# ---------------------------------------------------------------------------------------- FPS


def fps_impls(x: torch.Tensor, n: int, device: str) -> list[Impl]:
    impls = [
        Impl("ours auto", True, lambda g: ops.fps(x, n), grad=False),
        Impl(
            "ours torch",
            True,
            lambda g: ops.fps(x, n, backend="torch"),
            skip="minutes (n steps over N)" if x.shape[1] * n > 2e8 else None,
            grad=False,
        ),
    ]
    try:
        import torch_quickfps as qf

        mask = (x * x).sum(-1).double() > 1e-3  # the skip rule, as quickfps' eligibility mask
        for h in (None, 3, 5, 7, 9):
            label = "default" if h is None else f"h={h}"
            impls.append(
                Impl(
                    f"torch-quickfps {label}",
                    False,
                    lambda g, h=h: qf.sample_idx(x, n, h=h, start_idx=0, mask=mask),
                    grad=False,
                )
            )
    except ImportError:
        impls.append(Impl("torch-quickfps", False, lambda g: None, skip="not installed"))
    try:
        import fpsample

        if device == "cpu":
            xn = x.numpy()

            def fps_vanilla(g: bool) -> Result:
                return _loop_gather([fpsample.fps_sampling(c, n, start_idx=0) for c in xn], device)

            def fps_kdline(g: bool) -> Result:
                return _loop_gather(
                    [fpsample.bucket_fps_kdline_sampling(c, n, h=7, start_idx=0) for c in xn],
                    device,
                )

            slow = x.shape[0] * x.shape[1] * n > 2e8
            impls += [
                Impl("fpsample fps", False, fps_vanilla, skip="minutes" if slow else None),
                Impl("fpsample kdline h=7", False, fps_kdline),
            ]
    except ImportError:
        impls.append(Impl("fpsample", False, lambda g: None, skip="not installed"))
    return impls


# ---------------------------------------------------------------------------------------- kNN


def _pykdtree_knn(q: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
    from pykdtree.kdtree import KDTree

    qn, pn = q.detach().cpu().numpy(), p.detach().cpu().numpy()
    out = [KDTree(pn[b]).query(qn[b], k=k)[1].reshape(-1, k) for b in range(len(qn))]
    return _loop_gather(out, q.device)


def _ckdtree_knn(q: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
    from scipy.spatial import cKDTree

    qn, pn = q.detach().cpu().numpy(), p.detach().cpu().numpy()
    out = [cKDTree(pn[b]).query(qn[b], k=k, workers=-1)[1] for b in range(len(qn))]
    return _loop_gather([o.reshape(len(qn[0]), k) for o in out], q.device)


def _cdist_knn(q: torch.Tensor, p: torch.Tensor, k: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cdist(q, p).topk(k, dim=-1, largest=False).indices


def _finish_knn(q: torch.Tensor, p: torch.Tensor, idx: torch.Tensor, grad: bool) -> Result:
    """Library neighbours + our gather: distances with autograd, then backward if asked."""
    d = sq_dist_gathered(q, p, idx)
    if grad:
        d.sum().backward()
    return d.detach()


def knn_impls(q: torch.Tensor, p: torch.Tensor, k: int, device: str) -> list[Impl]:
    big = q.shape[0] * q.shape[1] * p.shape[1]

    def ours(backend: str) -> Callable[[bool], Result]:
        def run(grad: bool) -> Result:
            d, _ = ops.knn(q, p, k, backend=backend)
            if grad:
                d.sum().backward()
            return d.detach()

        return run

    impls = [Impl(f"ours {b}", True, ours(b)) for b in ("auto", "numba", "kdtree", "torch")]
    impls.append(
        Impl("ours keops", True, ours("keops"), skip="seconds on CPU" if big > 1e8 else None)
    )
    if device == "cpu":
        impls += [
            Impl(
                "pykdtree + gather", False, lambda g: _finish_knn(q, p, _pykdtree_knn(q, p, k), g)
            ),
            Impl("cKDTree + gather", False, lambda g: _finish_knn(q, p, _ckdtree_knn(q, p, k), g)),
        ]
    impls.append(
        Impl(
            "torch.cdist+topk + gather",
            False,
            lambda g: _finish_knn(q, p, _cdist_knn(q, p, k), g),
            skip=f"{big * 4 / 2**30:.0f} GiB matrix" if big > 2e9 else None,
        )
    )
    return impls


# ---------------------------------------------------------------------------------------- Chamfer


def _chamfer_from(x, y, i1, i2, grad: bool) -> Result:
    d1 = (x - ops.gather_points(y, i1)).square().sum(-1)
    d2 = (y - ops.gather_points(x, i2)).square().sum(-1)
    loss = d1.mean() + d2.mean()
    if grad:
        loss.backward()
    return loss.detach()


def chamfer_impls(x: torch.Tensor, y: torch.Tensor, device: str) -> list[Impl]:
    pairs = x.shape[0] * x.shape[1] * y.shape[1]

    def ours(backend: str) -> Callable[[bool], Result]:
        def run(grad: bool) -> Result:
            loss = ops.chamfer_l2(x, y, backend=backend)
            if grad:
                loss.backward()
            return loss.detach()

        return run

    def cdist_nn(grad: bool) -> Result:
        with torch.no_grad():
            d = torch.cdist(x, y)
            i1, i2 = d.argmin(2), d.argmin(1)
        return _chamfer_from(x, y, i1, i2, grad)

    def pykd_nn(grad: bool) -> Result:
        i1 = _pykdtree_knn(x, y, 1)[..., 0]
        i2 = _pykdtree_knn(y, x, 1)[..., 0]
        return _chamfer_from(x, y, i1, i2, grad)

    dense = f"{pairs * 4 / 2**30:.0f} GiB matrix" if pairs > 2e9 else None
    impls = [Impl(f"ours {b}", True, ours(b)) for b in ("auto", "numba", "kdtree")]
    impls.append(Impl("ours torch", True, ours("torch"), skip="minutes" if pairs > 2e9 else None))
    impls.append(
        Impl("ours keops", True, ours("keops"), skip="seconds on CPU" if pairs > 1e8 else None)
    )
    impls.append(Impl("torch.cdist no-grad NN + gather", False, cdist_nn, skip=dense))
    if device == "cpu":
        impls.append(Impl("pykdtree NN + gather", False, pykd_nn))
    return impls


# ---------------------------------------------------------------------------------------- others


def group_impls(x: torch.Tensor, g: int, k: int) -> list[Impl]:
    def run(backend: str) -> Callable[[bool], Result]:
        def f(grad: bool) -> Result:
            nbh, _ = ops.group(x, g, k, backend=backend)
            return nbh.norm(dim=-1).sort(-1).values  # patch order is free: compare distances

        return f

    return [Impl(f"ours {b}", True, run(b), grad=False) for b in ("auto", "torch")]


def interp_impls(dst: torch.Tensor, src: torch.Tensor, feat: torch.Tensor) -> list[Impl]:
    def run(backend: str) -> Callable[[bool], Result]:
        def f(grad: bool) -> Result:
            out = ops.three_nn_interpolate(dst, src, feat, backend=backend)
            if grad:
                out.sum().backward()
            return out.detach()

        return f

    return [Impl(f"ours {b}", True, run(b)) for b in ("auto", "numba", "kdtree", "torch")]


# ---------------------------------------------------------------------------------------- runner


def _same(ref: Result, got: Result) -> str:
    if ref is None or got is None:
        return ""
    ref, got = torch.as_tensor(ref).cpu(), torch.as_tensor(got).cpu()
    if ref.dtype == torch.long:
        return "yes" if torch.equal(ref, got) else f"NO ({(ref != got).float().mean():.1%} differ)"
    ok = torch.allclose(ref.double(), got.double(), rtol=1e-4, atol=1e-6)
    return "yes" if ok else f"NO (max diff {(ref.double() - got.double()).abs().max():.2e})"


def _forward_backward(impl: Impl, leaves: list[torch.Tensor]) -> Callable[[], Result]:
    def run() -> Result:
        for t in leaves:
            t.grad = None
        return impl.run(True)

    return run


def _forward(impl: Impl) -> Callable[[], Result]:
    return lambda: impl.run(False)


def measure(
    job: str,
    workload: str,
    impls: list[Impl],
    leaves: list[torch.Tensor],
    device: str,
    budget: float,
    clock: str = "wall",
) -> list[Row]:
    """Run every implementation of one workload; ratios against its fastest library.

    Timings are interleaved: each round runs every implementation once, and the median over
    rounds is reported, so a change of machine load (a shared machine) hits all rows alike.
    """
    rows: list[Row] = []
    calls: list[tuple[Row, str, Callable[[], Result]]] = []
    ref = None
    for impl in impls:
        row = Row(job, workload, impl.name, impl.ours)
        rows.append(row)
        if impl.skip:
            row.note = f"skipped: {impl.skip}"
            continue
        try:
            out = impl.run(False)  # warm-up: compiles what it needs, and gives the result
            fb = _forward_backward(impl, leaves) if impl.grad and leaves else None
            if fb is not None:
                fb()
        except Exception as err:  # a backend unavailable here (KeOps without compiler, ...)
            row.note = f"failed: {type(err).__name__}: {str(err)[:80]}"
            continue
        if ref is None:
            ref, row.same = out, "reference"
        else:
            row.same = _same(ref, out)
        calls.append((row, "fwd", _forward(impl)))
        if fb is not None:
            calls.append((row, "fb", fb))
        row.peak_mib = peak_memory_mib(fb or _forward(impl), device)
    once = [time_call(fn, device, 0.0, 1, clock).median_ms for _, _, fn in calls]
    rounds = max(3, min(25, int(budget * 1e3 / max(sum(once), 1e-3))))
    samples: dict[int, list[float]] = {i: [] for i in range(len(calls))}
    for r in range(rounds):
        order = range(len(calls)) if r % 2 == 0 else reversed(range(len(calls)))
        for i in order:
            samples[i].append(time_call(calls[i][2], device, 0.0, 1, clock).min_ms)
    for i, (row, kind, _) in enumerate(calls):
        med = float(np.median(samples[i]))
        if kind == "fwd":
            row.fwd_ms = med
        else:
            row.fb_ms = med
    # Only libraries that return our result (FPS: the same indices) compete for "fastest".
    libs = [r for r in rows if not r.ours and r.same == "yes"]
    best_fwd = min((r.fwd_ms for r in libs if r.fwd_ms), default=None)
    best_fb = min((r.fb_ms for r in libs if r.fb_ms), default=None)
    for r in rows:
        if best_fwd and r.fwd_ms:
            r.ratio["fwd"] = r.fwd_ms / best_fwd
        if best_fb and r.fb_ms:
            r.ratio["fb"] = r.fb_ms / best_fb
    return rows


def workloads(only: set[str], device: str):
    """(job, workload label, impls, tensors whose grads the backward fills) for every size."""
    if "fps" in only:
        for b, n, m in [(32, 1024, 64), (8, 8192, 1024), (1, 100_000, 4096)]:
            x = cloud(b, n, 1, device)
            yield "FPS", f"{b}x{n} -> {m}", fps_impls(x, m, device), []
    if "knn" in only:
        for b, m, n, k in [(32, 64, 1024, 32), (8, 512, 8192, 32), (1, 4096, 100_000, 32)]:
            p = cloud(b, n, 2, device).requires_grad_()
            q = ops.gather_points(p.detach(), ops.fps(p.detach(), m)).requires_grad_()
            yield "kNN", f"{b}x({m} over {n}), k={k}", knn_impls(q, p, k, device), [q, p]
    if "chamfer" in only:
        for b, n in [(1216, 32), (32, 1024), (1, 8192), (1, 100_000)]:
            x = cloud(b, n, 3, device).requires_grad_()
            y = cloud(b, n, 4, device).requires_grad_()
            yield "Chamfer-L2", f"{b}x({n} vs {n})", chamfer_impls(x, y, device), [x, y]
    if "group" in only:
        x = cloud(32, 1024, 5, device)
        yield "group", "32x1024 -> 64x32", group_impls(x, 64, 32), []
    if "interp" in only:
        dst, src = cloud(16, 2048, 6, device), cloud(16, 128, 7, device)
        feat = torch.randn(16, 128, 384, device=device, requires_grad=True)
        yield "3-NN interp", "16x(2048 from 128), C=384", interp_impls(dst, src, feat), [feat]


def _fmt(v: float | None, ratio: float | None = None) -> str:
    if v is None:
        return "—"
    s = f"{v:,.2f}" if v < 100 else f"{v:,.0f}"
    return s if ratio is None else f"{s} ({ratio:.2f}x)"


def render(rows: list[Row], info: dict[str, str], console: Console) -> str:
    """Print the rich table and return the same content as markdown."""
    table = Table(
        title="recon_lightning.ops benchmark: median ms, (x) = time / fastest library with our "
        "result; peak = extra resident memory of one fwd+bwd call"
    )
    for col in ("job", "workload", "implementation", "fwd ms", "fwd+bwd ms", "peak MiB", "same"):
        table.add_column(col, justify="right" if "ms" in col or "MiB" in col else "left")
    md = [
        "| job | workload | implementation | fwd ms (vs best lib) | fwd+bwd ms (vs best lib) "
        "| peak MiB | same result |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    last = None
    for r in rows:
        key = (r.job, r.workload)
        if key != last and last is not None:
            table.add_section()
        last = key
        fwd = _fmt(r.fwd_ms, r.ratio.get("fwd"))
        fb = _fmt(r.fb_ms, r.ratio.get("fb"))
        mem = _fmt(r.peak_mib)
        same = r.note or r.same
        style = "bold green" if r.impl == "ours auto" else (None if r.ours else "dim")
        table.add_row(r.job, r.workload, r.impl, fwd, fb, mem, same, style=style)
        name = f"**{r.impl}**" if r.impl == "ours auto" else r.impl
        md.append(f"| {r.job} | {r.workload} | {name} | {fwd} | {fb} | {mem} | {same} |")
    console.print(", ".join(f"{k}: {v}" for k, v in info.items()))
    console.print(table)
    return "\n".join(md)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=int(_THREADS))
    parser.add_argument("--only", default="fps,knn,chamfer,group,interp")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--budget", type=float, default=4.0, help="seconds of timing rounds per workload"
    )
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: latency; cpu: process CPU time (with --threads=1, immune to other programs)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the table as markdown here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    console = Console(width=200)
    info = machine_description(args.threads)
    info["clock"] = args.clock
    rows: list[Row] = []
    for job, workload, impls, leaves in workloads(set(args.only.split(",")), args.device):
        console.print(f"[dim]{job} {workload} ...[/dim]")
        rows += measure(job, workload, impls, leaves, args.device, args.budget, args.clock)
    md = render(rows, info, console)
    if args.markdown:
        header = "\n".join(f"- {k}: {v}" for k, v in info.items())
        args.markdown.write_text(header + "\n\n" + md + "\n")


if __name__ == "__main__":
    main()
