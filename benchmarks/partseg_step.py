"""Speed and memory of one ReCon-base part-segmentation training step (issue 10, item 8).

Measures, in one process and on the same inputs and weights, a training step (forward, NLL,
backward, AdamW; B=16, 2048 points, 128 patches of 32 points, fp32) of
:class:`~recon_lightning.models.ReConPartSegmentation`:

- ours;
- a *reference-style* baseline: the reference's segmentation pieces restated in torch without
  Python loops: dense 3-NN (the full (B, N, S) distance matrix, then top-3), the interpolated
  (B, N, 3, C) gather, [xyz, features] through the propagation MLP at every point, the global
  feature repeated to every point and the head's first Conv1d on the concatenated 3776 channels;
  the encoder's attention as explicit softmax, the mini-PointNet with its per-point concatenation
  and the grouping by dense distances (as ``benchmarks/pretrain_step.py``);
- the same baseline with only the propagation and head restated (our encoder), to show where
  the difference comes from.

The ratio ours / baseline is the figure to quote, not the absolute seconds. Each row also gives
the peak memory of one step and the memory autograd saves for the backward pass; ours must keep
no (B, N, S) point-by-patch tensor for backward (checked, printed). Both models' eval outputs
are compared first (equal up to rounding).

Run: ``python benchmarks/partseg_step.py [--device cpu|cuda] [--batch 16] [--threads 2]
[--clock wall|cpu] [--quick]`` (``--quick``: a small model and cloud for a smoke run).
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table

from _common import machine_description, peak_memory_mib, time_call
from recon_lightning.models import (
    FeaturePropagation,
    MiniPointNet,
    ReConPartSegmentation,
    SegmentationHead,
    build_partseg,
)

BASE = dict(trans_dim=384, depth=12, num_heads=6, num_group=128, group_size=32)
QUICK = dict(trans_dim=64, depth=3, num_heads=2, num_group=32, group_size=16)


# ----------------------------------------------------------------------------- reference style


def _propagation_reference(
    self: FeaturePropagation, xyz: torch.Tensor, centers: torch.Tensor, features: torch.Tensor
) -> torch.Tensor:
    """The reference's ``PointNetFeaturePropagation``: dense distances, 3-NN, gather, concat."""
    d = torch.cdist(xyz, centers) ** 2  # (B, N, S)
    dists, idx = d.topk(3, dim=-1, largest=False)
    w = 1.0 / (dists + 1e-8)
    w = w / w.sum(-1, keepdim=True)
    b = torch.arange(xyz.shape[0], device=xyz.device).view(-1, 1, 1)
    interp = (features[b, idx] * w.unsqueeze(-1)).sum(2)  # (B, N, 3, C) gather
    x = torch.cat([xyz, interp], dim=-1).transpose(1, 2)
    for conv, bn in zip(self.convs, self.bns, strict=True):
        x = F.relu(bn(conv(x)))
    return x


def _head_reference(
    self: SegmentationHead, point_features: torch.Tensor, global_feature: torch.Tensor
) -> torch.Tensor:
    """The reference's ``convs1-3``: the global feature repeated over the N points."""
    n = point_features.shape[-1]
    x = torch.cat([point_features, global_feature.unsqueeze(-1).expand(-1, -1, n)], dim=1)
    x = self.drop(F.relu(self.bn1(self.conv1(x))))
    x = F.relu(self.bn2(self.conv2(x)))
    return F.log_softmax(self.out(x), dim=1).transpose(1, 2)


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


@contextlib.contextmanager
def reference_style(model: ReConPartSegmentation, encoder: bool = True) -> Iterator[None]:
    """Swap in the reference's algorithms (propagation and head; ``encoder``: its pieces too)."""
    saved = (
        FeaturePropagation.forward,
        SegmentationHead.forward,
        F.scaled_dot_product_attention,
        MiniPointNet.forward,
    )
    backend = model.encoder.group_backend
    FeaturePropagation.forward = _propagation_reference
    SegmentationHead.forward = _head_reference
    if encoder:
        F.scaled_dot_product_attention = _sdpa_explicit
        MiniPointNet.forward = _minipointnet_reference
        model.encoder.group_backend = "torch"
    try:
        yield
    finally:
        (
            FeaturePropagation.forward,
            SegmentationHead.forward,
            F.scaled_dot_product_attention,
            MiniPointNet.forward,
        ) = saved
        model.encoder.group_backend = backend


# ----------------------------------------------------------------------------- measurements


def saved_for_backward(
    fn: Callable[[], torch.Tensor], b: int, n: int, s: int
) -> tuple[float, list[tuple[int, ...]]]:
    """MiB autograd saves during ``fn`` (distinct storages) and the saved tensors shaped
    (B, N, S, ...) or (B, S, N, ...): a point-by-patch matrix kept for the backward pass."""
    storages: dict[int, int] = {}
    dense: list[tuple[int, ...]] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        if not t.is_sparse:
            storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        shape = tuple(t.shape)
        if len(shape) >= 3 and shape[0] == b and set(shape[1:3]) == {n, s}:
            dense.append(shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values()) / 2**20, dense


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--batch", type=int, default=None, help="default 16 (--quick: 2)")
    parser.add_argument("--points", type=int, default=None, help="default 2048 (--quick: 300)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds per timed row")
    parser.add_argument(
        "--clock",
        default="wall",
        choices=["wall", "cpu"],
        help="wall: latency; cpu: process CPU time (with --threads=1, immune to other programs)",
    )
    parser.add_argument("--quick", action="store_true", help="small model and cloud")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device
    size = QUICK if args.quick else BASE
    b = args.batch or (2 if args.quick else 16)
    n = args.points or (300 if args.quick else 2048)
    s = size["num_group"]

    torch.manual_seed(0)
    model = build_partseg(**size, drop_path_rate=0.1).to(device)
    points = torch.randn(b, n, 3, device=device)
    points = points / points.norm(dim=-1).amax(dim=1)[:, None, None]
    category = torch.randint(0, 16, (b,), device=device)
    target = torch.randint(0, 50, (b, n), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    # Same function either way (eval: no dropout, drop-path or batch statistics).
    model.eval()
    with torch.no_grad():
        ours_out = model(points, category)
        with reference_style(model):
            ref_out = model(points, category)
    max_diff = float((ours_out - ref_out).abs().max())
    model.train()

    def forward_loss() -> torch.Tensor:
        return F.nll_loss(model(points, category).transpose(1, 2), target)

    def step() -> None:
        loss = forward_loss()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    rows: list[tuple[str, float, float | None, float, list]] = []
    configs: list[tuple[str, contextlib.AbstractContextManager]] = [
        ("ours", contextlib.nullcontext()),
        ("reference-style", reference_style(model, encoder=True)),
        ("ref. prop + head only", reference_style(model, encoder=False)),
    ]
    for name, ctx in configs:
        with ctx:
            step()  # warm-up (allocator, kernels, optimiser state)
            timing = time_call(step, device, args.budget, max_reps=10, clock=args.clock)
            peak = peak_memory_mib(step, device)
            saved, dense = saved_for_backward(forward_loss, b, n, s)
        rows.append((name, timing.median_ms / 1e3, peak, saved, dense))

    console = Console(width=120)
    info = machine_description(torch.get_num_threads())
    info["clock"] = args.clock
    console.print(", ".join(f"{k} {v}" for k, v in info.items() if v != "missing"))
    console.print(
        f"device {device}, B={b}, N={n}, {s} patches x {size['group_size']} points, "
        f"width {size['trans_dim']}, {size['depth']} blocks, fp32; eval outputs ours vs "
        f"reference-style: max |diff| {max_diff:.2e}"
    )
    table = Table(title="Part-segmentation training step (forward + NLL + backward + AdamW)")
    for col in ("configuration", "s/step", "shapes/s", "ours/this", "peak MiB", "saved MiB"):
        table.add_column(col, justify="left" if col == "configuration" else "right", no_wrap=True)
    ours_t = rows[0][1]
    for name, t, peak, saved, _ in rows:
        table.add_row(
            name,
            f"{t:.3f}",
            f"{b / t:.1f}",
            f"{ours_t / t:.2f}",
            "n/a" if peak is None else f"{peak:.0f}",
            f"{saved:.0f}",
        )
    console.print(table)
    dense = rows[0][4]
    console.print(
        f"ours keeps a (B, N, S) point-by-patch tensor for backward: "
        f"{'YES ' + str(dense) if dense else 'no'}"
    )
    if dense:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
