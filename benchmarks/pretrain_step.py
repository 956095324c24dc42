"""Speed and memory of one ReCon-base pretraining step on this machine (issue: pretraining).

Measures, in one process, a base-size step (forward + backward + AdamW, B=32, 1024 points, fp32):
- the student step with our code, and with a *reference-style* baseline run in the same process
  (the reference's algorithms restated in torch: the FPS loop, dense kNN and Chamfer, the Conv1d
  mini-PointNet with its per-point concatenation, explicit softmax attention); the ratio is the
  figure to quote, not the absolute seconds;
- the full step with online teachers (full-size ViT-B/16 in21k + CLIP ViT-B/32 text, random
  weights: speed does not depend on their values) and with cached teacher features;
- the share of forward time in tokenizer / encoder / decoder / loss, and the teachers' forward;
- optionally the student step under ``torch.compile`` (``--compile``).

Run: ``python benchmarks/pretrain_step.py [--batch 32] [--repeats 3] [--compile]``.
"""

from __future__ import annotations

import argparse
import contextlib
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from recon_lightning.models import MiniPointNet, build_pretrainer
from recon_lightning.models import losses as model_losses
from recon_lightning.teachers import build_teachers

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


def _sdpa_explicit(q, k, v, *args, **kwargs):
    """The reference's attention: softmax((q @ k^T) * scale) @ v."""
    attn = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    return attn.softmax(dim=-1) @ v


def _minipointnet_reference(self: MiniPointNet, patches: torch.Tensor) -> torch.Tensor:
    """The reference ``Encoder.forward``: Conv1d stages, pooled feature concatenated per point."""
    b, g, k, _ = patches.shape
    x = patches.reshape(b * g, k, 3).transpose(2, 1)
    x = self.conv1_2(self.act(self.bn1(self.conv1_1(x))))
    pooled = torch.max(x, dim=2, keepdim=True)[0]
    x = torch.cat([pooled.expand(-1, -1, k), x], dim=1)
    x = self.conv2_2(self.act(self.bn2(self.conv2_1(x))))
    return torch.max(x, dim=2, keepdim=False)[0].reshape(b, g, self.embed_dim)


def _chamfer_dense(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Chamfer-L2 from the full differentiable distance matrix, as a plain torch port does."""
    d = torch.cdist(pred, target) ** 2
    return d.min(dim=2).values.mean() + d.min(dim=1).values.mean()


@contextlib.contextmanager
def reference_style(model: torch.nn.Module) -> Iterator[None]:
    """Swap in the reference's algorithms for the duration of the block."""
    saved = (F.scaled_dot_product_attention, MiniPointNet.forward, model_losses.chamfer_l2)
    backend = model.encoder.group_backend
    F.scaled_dot_product_attention = _sdpa_explicit
    MiniPointNet.forward = _minipointnet_reference
    model_losses.chamfer_l2 = _chamfer_dense
    model.encoder.group_backend = "torch"
    try:
        yield
    finally:
        F.scaled_dot_product_attention, MiniPointNet.forward, model_losses.chamfer_l2 = saved
        model.encoder.group_backend = backend


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()
    torch.manual_seed(0)
    b = args.batch
    points = torch.randn(b, 1024, 3)
    points = points / points.norm(dim=-1).amax(dim=1)[:, None, None]
    batch = {
        "image": torch.randint(0, 256, (b, 3, 224, 224), dtype=torch.uint8),
        "text": ["airplane", "chair", "table", "car"] * (b // 4) + ["lamp"] * (b % 4),
    }
    img_t, txt_t = torch.randn(b, 768), torch.randn(b, 512)
    model = build_pretrainer(**BASE)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def student_step() -> None:
        loss = model.losses(points, img_t, txt_t)["total"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows: list[tuple[str, float, str]] = []
    ours = _median_time(student_step, args.repeats)
    rows.append(("student step, ours", ours, ""))
    with reference_style(model):
        ref = _median_time(student_step, args.repeats)
    rows.append(("student step, reference-style baseline", ref, "1.00"))
    rows[0] = (rows[0][0], ours, f"{ours / ref:.2f}")

    # Forward shares of our student (no grad: the split of the forward pass).
    with torch.no_grad():
        enc = model.encoder
        tokens_t = _median_time(lambda: enc.tokenize(points), args.repeats)
        tokens = enc.tokenize(points)
        mask = model.masker(tokens.centers)
        encode_t = _median_time(lambda: enc.encode(tokens, mask), args.repeats)
        out = enc.encode(tokens, mask)
        decode_t = _median_time(
            lambda: model.decoder(out.local, tokens.centers, mask), args.repeats
        )
        full_t = _median_time(lambda: model.losses(points, img_t, txt_t), args.repeats)
    loss_t = max(full_t - tokens_t - encode_t - decode_t, 0.0)

    teachers = build_teachers(mode="random", tiny=False)
    teach_t = _median_time(lambda: teachers.targets(batch), args.repeats)
    cached = {"index": torch.arange(b), "text": batch["text"]}
    rows.append(("full step, online teachers", ours + teach_t, f"{(ours + teach_t) / ref:.2f}"))
    rows.append(("full step, cached teachers", ours, f"{ours / ref:.2f}"))
    del cached

    if args.compile:
        compiled = torch.compile(model)

        def compiled_step() -> None:
            loss = compiled.losses(points, img_t, txt_t)["total"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        comp = _median_time(compiled_step, args.repeats, warmup=2)
        rows.append(("student step, torch.compile", comp, f"{comp / ref:.2f}"))

    console = Console()
    console.print(
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, B={b}, base size, fp32"
    )
    table = Table(title="ReCon-base pretraining step (median s)")
    table.add_column("configuration")
    table.add_column("s / step", justify="right")
    table.add_column("samples / s", justify="right")
    table.add_column("ratio to baseline", justify="right")
    for name, t, ratio in rows:
        table.add_row(name, f"{t:.3f}", f"{b / t:.1f}", ratio)
    console.print(table)
    shares = Table(title="Forward time shares (ours, no grad)")
    shares.add_column("part")
    shares.add_column("s", justify="right")
    shares.add_column("share of student forward", justify="right")
    for name, t in (
        ("tokenizer (FPS, kNN, mini-PointNet)", tokens_t),
        ("encoder", encode_t),
        ("decoder", decode_t),
        ("heads + losses", loss_t),
    ):
        shares.add_row(name, f"{t:.3f}", f"{100 * t / full_t:.0f}%")
    shares.add_row(
        "teachers (ViT-B/16 + CLIP text)", f"{teach_t:.3f}", f"{100 * teach_t / full_t:.0f}%"
    )
    console.print(shares)
    console.print(f"peak RSS of this process: {_peak_rss_mib():.0f} MiB")


if __name__ == "__main__":
    main()
