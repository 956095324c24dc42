"""Speed and memory of one ReCon-base pretraining step on this machine (issue 12, item 5).

Measures, in one process, a base-size step (forward + backward + AdamW, B=32, 1024 points, fp32):

- the student step with our code, and with a *reference-style* baseline run in the same process
  on the same weights (the reference's algorithms restated in torch: the FPS loop, dense kNN and
  Chamfer, the Conv1d mini-PointNet with its per-point concatenation on every patch, explicit
  softmax attention with keys and values projected from every token, every decoder row through
  the last decoder block). The two are timed in
  alternation, round after round, so a change of machine load hits both; the ratio (median of
  the per-round ratios, with its range) is the figure to quote, not the absolute seconds;
- where the time goes: forward and backward of grouping, mini-PointNet, encoder, decoder, the
  rest (heads, losses), and AdamW, for both, from the same timed steps;
- the full step with online teachers (full-size ViT-B/16 in21k + CLIP ViT-B/32 text, random
  weights: speed does not depend on their values) and with cached teacher features;
- optionally (``--compile``) the student step with its encoder and decoder blocks under
  ``torch.compile`` (inductor), with the compile time.

Run: ``python benchmarks/pretrain_step.py [--batch 32] [--repeats 5] [--threads 2]
[--clock wall|cpu] [--compile] [--no-teachers]``. ``--clock cpu`` is the CPU time of the process
(every thread summed): with ``--threads 1`` it is the time on an idle core, and other programs
sharing the machine do not change it.
"""

from __future__ import annotations

import os
import sys


def _early_threads(argv: list[str]) -> str:
    """``--threads`` as given (``--threads=N`` or ``--threads N``), needed before the imports."""
    for i, a in enumerate(argv):
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
    return "2"


# Thread pools (OpenMP, numba) read these at import: set them before torch and numba load.
_THREADS = _early_threads(sys.argv)
os.environ.setdefault("OMP_NUM_THREADS", _THREADS)
os.environ.setdefault("NUMBA_NUM_THREADS", _THREADS)

import argparse  # noqa: E402
import collections  # noqa: E402
import contextlib  # noqa: E402
import copy  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from _common import CLOCKS, machine_description  # noqa: E402
from recon_lightning.models import MiniPointNet, ReConPretrainer, build_pretrainer  # noqa: E402
from recon_lightning.models import losses as model_losses  # noqa: E402
from recon_lightning.models.attention import CrossAttention  # noqa: E402
from recon_lightning.models.transformer_block import TransformerBlock  # noqa: E402

BASE = dict(
    trans_dim=384,
    depth=12,
    num_heads=6,
    num_group=64,
    group_size=32,
    drop_path_rate=0.1,
    decoder_depth=4,
    decoder_num_heads=6,
    img_dim=768,
    text_dim=512,
)
#: Parts of a step, in the order of the tables.
PARTS = ("grouping (FPS + kNN)", "mini-PointNet", "encoder", "decoder", "heads + losses", "AdamW")


# ----------------------------------------------------------------------------- reference style


def _sdpa_explicit(q, k, v, *args, **kwargs):
    """The reference's attention: softmax((q @ k^T) * scale) @ v."""
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return attn.softmax(dim=-1) @ v


def _cross_attention_reference(
    self: CrossAttention, queries: torch.Tensor, context: torch.Tensor
) -> torch.Tensor:
    """The reference's cross-attention: keys and values projected from every context token."""
    b, n, c = context.shape
    h = self.num_heads
    k, v = self.kv(context).reshape(b, n, 2, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
    q = self.q(queries).reshape(b, -1, h, c // h).transpose(1, 2)
    out = _sdpa_explicit(q, k, v).transpose(1, 2).reshape(b, -1, c)
    return self.proj(out)


def _minipointnet_reference(self: MiniPointNet, patches: torch.Tensor) -> torch.Tensor:
    """The reference ``Encoder.forward``: Conv1d stages, pooled feature concatenated per point."""
    b, g, k, _ = patches.shape
    x = patches.reshape(b * g, k, 3).transpose(2, 1)
    x = self.conv1_2(self.act(self.bn1(self.conv1_1(x))))
    pooled = torch.max(x, dim=2, keepdim=True)[0]
    x = torch.cat([pooled.expand(-1, -1, k), x], dim=1)
    x = self.conv2_2(self.act(self.bn2(self.conv2_1(x))))
    return torch.max(x, dim=2, keepdim=False)[0].reshape(b, g, self.embed_dim)


def _forward_visible_reference(
    self: MiniPointNet, patches: torch.Tensor, visible: torch.Tensor
) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
    """The reference embeds every patch, then the encoder keeps the visible tokens."""
    tokens = self(patches)
    return tokens[visible].reshape(tokens.shape[0], -1, tokens.shape[2]), lambda: tokens


def _forward_rows_reference(self: TransformerBlock, x: torch.Tensor, start: int) -> torch.Tensor:
    """The reference runs every row through the last decoder block, then keeps the mask tokens."""
    return self(x)[:, start:]


def _chamfer_dense(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Chamfer-L2 from the full differentiable distance matrix, as a plain torch port does."""
    d = torch.cdist(pred, target) ** 2
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


@contextlib.contextmanager
def reference_style(model: ReConPretrainer) -> Iterator[None]:
    """Swap in the reference's algorithms for the duration of the block."""
    saved = (
        F.scaled_dot_product_attention,
        CrossAttention.forward,
        MiniPointNet.forward,
        MiniPointNet.forward_visible,
        TransformerBlock.forward_rows,
        model_losses.chamfer_l2,
    )
    backend = model.encoder.group_backend
    F.scaled_dot_product_attention = _sdpa_explicit
    CrossAttention.forward = _cross_attention_reference
    MiniPointNet.forward = _minipointnet_reference
    MiniPointNet.forward_visible = _forward_visible_reference
    TransformerBlock.forward_rows = _forward_rows_reference
    model_losses.chamfer_l2 = _chamfer_dense
    model.encoder.group_backend = "torch"
    try:
        yield
    finally:
        (
            F.scaled_dot_product_attention,
            CrossAttention.forward,
            MiniPointNet.forward,
            MiniPointNet.forward_visible,
            TransformerBlock.forward_rows,
            model_losses.chamfer_l2,
        ) = saved
        model.encoder.group_backend = backend


# ----------------------------------------------------------------------------- timing


class PartTimer:
    """Forward and backward time of the parts of a pretraining step, on one clock.

    Forward: the calls of ``encoder.group_points``, ``encoder.tokenize_masked`` (mini-PointNet),
    ``encoder.encode_visible`` and the decoder. Backward: marks when the gradients of the decoder
    output, of the encoder's local output and of the visible tokens are ready (autograd runs the
    graph backwards, part after part); what comes before the first mark is the heads and losses.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.steps: list[dict[str, float]] = []
        self._fwd: collections.Counter[str] = collections.Counter()
        self._marks: dict[str, float] = {}

    def _timed(self, part: str, fn: Callable, mark: Callable | None = None) -> Callable:
        def wrapper(*args, **kwargs):
            t0 = self.clock()
            out = fn(*args, **kwargs)
            self._fwd[part] += self.clock() - t0
            if mark is not None and torch.is_grad_enabled():
                mark(out)
            return out

        return wrapper

    def _hook(self, name: str, tensor: torch.Tensor) -> None:
        def hook(grad: torch.Tensor) -> None:
            self._marks.setdefault(name, self.clock())

        if tensor.requires_grad:
            tensor.register_hook(hook)

    @contextlib.contextmanager
    def attached(self, model: ReConPretrainer) -> Iterator[None]:
        enc = model.encoder
        enc.group_points = self._timed("grouping (FPS + kNN)", enc.group_points)
        enc.tokenize_masked = self._timed(
            "mini-PointNet", enc.tokenize_masked, lambda out: self._hook("mpn", out[1])
        )
        enc.encode_visible = self._timed(
            "encoder", enc.encode_visible, lambda out: self._hook("enc", out.local)
        )
        model.decoder.forward = self._timed(
            "decoder", model.decoder.forward, lambda out: self._hook("dec", out[0])
        )
        try:
            yield
        finally:
            for name in ("group_points", "tokenize_masked", "encode_visible"):
                delattr(enc, name)
            del model.decoder.forward

    def step(
        self, forward: Callable[[], torch.Tensor], opt: torch.optim.Optimizer
    ) -> dict[str, float]:
        """One step (forward, backward, AdamW), recorded part by part."""
        self._fwd.clear()
        self._marks.clear()
        t0 = self.clock()
        loss = forward()
        t1 = self.clock()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t2 = self.clock()
        opt.step()
        t3 = self.clock()
        rec = {f"fwd {p}": self._fwd[p] for p in PARTS[:4]}
        rec["fwd heads + losses"] = (t1 - t0) - sum(rec.values())
        m = self._marks
        if {"dec", "enc", "mpn"} <= m.keys():
            rec["bwd heads + losses"] = m["dec"] - t1
            rec["bwd decoder"] = m["enc"] - m["dec"]
            rec["bwd encoder"] = m["mpn"] - m["enc"]
            rec["bwd mini-PointNet"] = t2 - m["mpn"]
        rec["AdamW"] = t3 - t2
        rec["step"] = t3 - t0
        self.steps.append(rec)
        return rec

    def medians(self) -> dict[str, float]:
        keys = self.steps[0].keys() if self.steps else ()
        return {k: statistics.median(s[k] for s in self.steps if k in s) for k in keys}


def _median_time(fn: Callable[[], object], clock: Callable[[], float], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compiled_copy(model: ReConPretrainer) -> tuple[ReConPretrainer, int]:
    """A copy of ``model`` whose encoder and decoder blocks run under ``torch.compile``."""
    import torch._dynamo

    # Every block has its own drop-path rate, a constant to dynamo: one graph per block.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 128)
    compiled = copy.deepcopy(model)
    blocks = [*compiled.encoder.blocks, *compiled.decoder.blocks]
    for block in blocks:
        block.compile()
    last = compiled.decoder.blocks[-1]
    last.forward_rows = torch.compile(last.forward_rows)
    return compiled, len(blocks)


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (after a warm-up)")
    parser.add_argument("--threads", type=int, default=int(_THREADS))
    parser.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: latency; cpu: process CPU time (with --threads 1, immune to other programs)",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd blocks")
    parser.add_argument(
        "--no-teachers", action="store_true", help="skip the online teachers' forward"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = CLOCKS[args.clock]
    torch.manual_seed(0)
    b = args.batch
    points = torch.randn(b, 1024, 3)
    points = points / points.norm(dim=-1).amax(dim=1)[:, None, None]
    img_t, txt_t = torch.randn(b, 768), torch.randn(b, 512)
    model = build_pretrainer(**BASE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def forward(m: ReConPretrainer = model) -> torch.Tensor:
        return m.losses(points, img_t, txt_t)["total"]

    # Same seed (mask, drop path), same weights: both ways must give the same losses.
    with torch.no_grad():
        torch.manual_seed(1)
        ours_losses = model.losses(points, img_t, txt_t)
        torch.manual_seed(1)
        with reference_style(model):
            ref_losses = model.losses(points, img_t, txt_t)
    agree = max(abs(ours_losses[k] / ref_losses[k] - 1).item() for k in ours_losses)
    if agree > 1e-4:
        raise AssertionError(f"ours and the baseline disagree: losses {ours_losses} {ref_losses}")
    ours_t, ref_t = PartTimer(clock), PartTimer(clock)

    def ours_step() -> None:
        with ours_t.attached(model):
            ours_t.step(forward, opt)

    def ref_step() -> None:
        with reference_style(model), ref_t.attached(model):
            ref_t.step(forward, opt)

    steps: dict[str, Callable[[], None]] = {"ours": ours_step, "ref": ref_step}
    compile_note = ""
    if args.compile:
        compiled, n_blocks = _compiled_copy(model)
        copt = torch.optim.AdamW(compiled.parameters(), lr=1e-4)
        comp_t = PartTimer(clock)

        def compiled_step() -> None:
            with comp_t.attached(compiled):
                comp_t.step(lambda: forward(compiled), copt)

        t0 = time.perf_counter()
        compiled_step()  # the first call compiles (forward and backward graphs)
        compile_note = (
            f"{n_blocks + 1} graphs; first step (compiling) {time.perf_counter() - t0:.0f} s wall"
        )
        steps["compiled"] = compiled_step

    for fn in steps.values():
        fn()  # warm-up
    timers = [ours_t, ref_t] + ([comp_t] if args.compile else [])
    for timer in timers:
        timer.steps.clear()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.repeats):
        order = list(steps) if r % 2 == 0 else list(reversed(steps))
        for name in order:
            t0 = clock()
            steps[name]()
            times[name].append(clock() - t0)
    ratios = [o / r for o, r in zip(times["ours"], times["ref"], strict=True)]
    med = {name: statistics.median(t) for name, t in times.items()}

    teach_t = None
    if not args.no_teachers:
        from recon_lightning.teachers import build_teachers

        batch = {
            "image": torch.randint(0, 256, (b, 3, 224, 224), dtype=torch.uint8),
            "text": ["airplane", "chair", "table", "car"] * (b // 4) + ["lamp"] * (b % 4),
        }
        teachers = build_teachers(mode="random", tiny=False)
        with torch.no_grad():
            teach_t = _median_time(
                lambda: teachers.targets(batch), clock, max(1, args.repeats // 2)
            )

    console = Console(width=max(Console().width, 120))
    info = machine_description(args.threads)
    console.print(
        f"{info['cpu']} ({info['cores']} CPUs), {args.threads} threads, clock {args.clock}, "
        f"torch {info['torch']}, B={b}, base size, fp32, {args.repeats} interleaved rounds"
    )
    table = Table(title="ReCon-base pretraining step (median s)")
    for col in ("configuration", "s / step", "samples / s", "ratio to baseline"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    spread = f"{statistics.median(ratios):.2f} [{min(ratios):.2f}-{max(ratios):.2f}]"
    ref = med["ref"]
    table.add_row("student step, ours", f"{med['ours']:.3f}", f"{b / med['ours']:.1f}", spread)
    table.add_row("student step, reference-style baseline", f"{ref:.3f}", f"{b / ref:.1f}", "1.00")
    if args.compile:
        comp = med["compiled"]
        cr = [c / r for c, r in zip(times["compiled"], times["ref"], strict=True)]
        table.add_row(
            "student step, blocks under torch.compile",
            f"{comp:.3f}",
            f"{b / comp:.1f}",
            f"{statistics.median(cr):.2f} [{min(cr):.2f}-{max(cr):.2f}]",
        )
    if teach_t is not None:
        full = med["ours"] + teach_t
        table.add_row(
            "full step, online teachers", f"{full:.3f}", f"{b / full:.1f}", f"{full / ref:.2f}"
        )
    table.add_row(
        "full step, cached teachers",
        f"{med['ours']:.3f}",
        f"{b / med['ours']:.1f}",
        f"{med['ours'] / ref:.2f}",
    )
    console.print(table)
    if compile_note:
        console.print(f"torch.compile: {compile_note}")

    parts = Table(title="Where the step goes (median s per part)")
    parts.add_column("part")
    columns = [("ours", ours_t.medians()), ("baseline", ref_t.medians())]
    if args.compile:
        columns.append(("compiled", comp_t.medians()))
    for name, _ in columns:
        parts.add_column(f"{name} fwd", justify="right")
        parts.add_column(f"{name} bwd", justify="right")
    for part in PARTS:
        cells = []
        for _, m in columns:
            if part == "AdamW":
                cells += [f"{m.get('AdamW', 0):.3f}", ""]
            else:
                cells += [f"{m.get('fwd ' + part, 0):.3f}", f"{m.get('bwd ' + part, 0):.3f}"]
        parts.add_row(part, *cells)
    parts.add_row("step", *[c for _, m in columns for c in (f"{m['step']:.3f}", "")])
    console.print(parts)
    if teach_t is not None:
        console.print(f"teachers' forward (ViT-B/16 + CLIP text, no grad): {teach_t:.3f} s")
    console.print(f"losses of ours and the baseline agree to {agree:.1e} (relative)")
    console.print(f"peak RSS of this process: {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
