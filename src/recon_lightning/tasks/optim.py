"""The reference's optimiser recipe: parameter groups and the per-epoch cosine schedule.

``tools/builder.build_opti_sche`` in the reference builds three AdamW groups (a 10x-lr head group,
a no-weight-decay group and a decay group) and timm's ``CosineLRScheduler`` stepped once per epoch.
Both are restated here without timm so the schedule is exact and resumable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

log = logging.getLogger(__name__)


def reference_no_decay(name: str, param: torch.Tensor) -> bool:
    """The reference's rule on its own parameter names: 1-D, ``.bias`` or a ``token`` name."""
    return param.ndim <= 1 or name.endswith(".bias") or "token" in name


def build_param_groups(
    named_params: Iterable[tuple[str, nn.Parameter]],
    lr: float,
    weight_decay: float,
    is_head: Callable[[str], bool] | None = None,
    head_lr_mult: float = 10.0,
    is_no_decay: Callable[[str, torch.Tensor], bool] = reference_no_decay,
) -> list[dict]:
    """Three groups in the reference's order: [head (lr x ``head_lr_mult``), no decay, decay].

    Args:
        named_params: (name, parameter) pairs; frozen parameters are skipped, as the reference
            only groups trainable ones.
        lr: base learning rate; weight_decay: decay of the head and decay groups.
        is_head: which names form the head group (the reference: names containing ``cls`` in its
            ``PointTransformer``); ``None`` leaves the head group empty, as in pretraining.
        is_no_decay: the no-decay rule, evaluated on the names given.

    Returns:
        Param-group dicts with ``params``, ``lr``, ``weight_decay`` and ``names``; empty groups
        are kept so group indices match the reference's.
    """
    head: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    decay: list[tuple[str, nn.Parameter]] = []
    for name, p in named_params:
        if not p.requires_grad:
            continue
        if is_head is not None and is_head(name):
            head.append((name, p))
        elif is_no_decay(name, p):
            no_decay.append((name, p))
        else:
            decay.append((name, p))
    return [
        _group(head, lr * head_lr_mult, weight_decay),
        _group(no_decay, lr, 0.0),
        _group(decay, lr, weight_decay),
    ]


def _group(items: list[tuple[str, nn.Parameter]], lr: float, weight_decay: float) -> dict:
    return {
        "params": [p for _, p in items],
        "names": [n for n, _ in items],
        "lr": lr,
        "weight_decay": weight_decay,
    }


def cosine_lr_at(
    t: int,
    base_lr: float,
    epochs: int = 300,
    warmup_epochs: int = 10,
    warmup_lr_init: float = 1e-6,
    lr_min: float = 1e-6,
) -> float:
    """timm ``CosineLRScheduler._get_lr(t)`` with the reference's settings (cycle_limit 1).

    Warm-up is linear from ``warmup_lr_init``; after it the cosine uses the raw epoch ``t`` over
    ``epochs`` (timm's ``warmup_prefix=False``); from ``t >= epochs`` on it stays at ``lr_min``.
    """
    if t < warmup_epochs:
        return warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_epochs
    if t >= epochs:
        return lr_min
    return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * t / epochs))


def lr_during_epoch(epoch: int, base_lr: float, **kwargs: float) -> float:
    """The lr the reference trains epoch ``epoch`` with.

    Building the scheduler with a warm-up sets every group to ``warmup_lr_init`` and the runner
    steps it after each epoch with ``scheduler.step(epoch)``, so epochs 0 and 1 both train at
    ``warmup_lr_init`` and epoch e >= 1 trains at f(e - 1). Without warm-up timm leaves the
    groups at their base lr for epoch 0.
    """
    if epoch == 0:
        return kwargs.get("warmup_lr_init", 1e-6) if kwargs.get("warmup_epochs", 10) else base_lr
    return cosine_lr_at(epoch - 1, base_lr, **kwargs)


class ReferenceCosineLR(LRScheduler):
    """Per-epoch scheduler reproducing the reference runners' lr for every group and epoch.

    Step it once per epoch (Lightning ``interval="epoch"``). Each group keeps its own base lr, so
    the 10x head group keeps its ratio, exactly as timm does.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        epochs: int = 300,
        warmup_epochs: int = 10,
        warmup_lr_init: float = 1e-6,
        lr_min: float = 1e-6,
        last_epoch: int = -1,
    ) -> None:
        self.schedule = {
            "epochs": epochs,
            "warmup_epochs": warmup_epochs,
            "warmup_lr_init": warmup_lr_init,
            "lr_min": lr_min,
        }
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        return [lr_during_epoch(self.last_epoch, base, **self.schedule) for base in self.base_lrs]


def fit_schedule(schedule: Mapping[str, Any], max_epochs: int | None) -> dict[str, Any]:
    """The scheduler settings for a run of ``max_epochs`` epochs.

    ``epochs: null`` follows the run with the reference's inclusive convention (it schedules
    ``t_initial`` epochs and trains epochs ``0..t_initial``): ``epochs = max_epochs - 1``, so
    the lr after the last epoch's step is ``lr_min``. A warm-up as long as the schedule or longer
    would leave no decay at all: it is shortened to ``max(1, epochs // 10)`` epochs (0 for a
    one-epoch schedule), with one warning. The faithful recipes (301 epochs, 10 warm-up) are
    unchanged.

    Raises:
        ValueError: ``epochs`` is null and the trainer has no epoch limit.
    """
    out = dict(schedule)
    if out.get("epochs") is None:
        if max_epochs is None or max_epochs < 1:
            raise ValueError(
                f"task.scheduler.epochs=null follows trainer.max_epochs, but trainer.max_epochs="
                f"{max_epochs}: set trainer.max_epochs or task.scheduler.epochs"
            )
        out["epochs"] = max(1, int(max_epochs) - 1)
    epochs, warmup = int(out["epochs"]), int(out.get("warmup_epochs", 10))
    if warmup and warmup >= epochs:
        fitted = min(max(1, epochs // 10), epochs - 1)
        log.warning(
            "task.scheduler.warmup_epochs=%d is as long as the %d-epoch schedule or longer; "
            "shortened to %d so the cosine decay fits the run",
            warmup,
            epochs,
            fitted,
        )
        out["warmup_epochs"] = fitted
    return out


def configure_reference_optimizer(
    module: Any,
    named_params: Iterable[tuple[str, nn.Parameter]],
    optimizer: Mapping[str, Any],
    scheduler: Mapping[str, Any],
    is_no_decay: Callable[[str, torch.Tensor], bool],
    is_head: Callable[[str], bool] | None = None,
) -> dict[str, Any]:
    """AdamW over the reference's groups + the per-epoch cosine, as Lightning's optimiser dict.

    Args:
        module: the LightningModule (its trainer's ``max_epochs`` sizes a ``epochs: null``
            schedule; see :func:`fit_schedule`).
        named_params: the parameters to optimise, by name.
        optimizer: ``lr``, ``weight_decay`` and optionally ``head_lr_mult`` (10).
        scheduler: :class:`ReferenceCosineLR` settings.
        is_no_decay: the no-decay rule on the given names.
        is_head: the 10x-lr head group (None: empty, as in pretraining).
    """
    groups = build_param_groups(
        named_params,
        lr=optimizer["lr"],
        weight_decay=optimizer["weight_decay"],
        is_head=is_head,
        head_lr_mult=optimizer.get("head_lr_mult", 10.0),
        is_no_decay=is_no_decay,
    )
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=optimizer["lr"])
    trainer = getattr(module, "_trainer", None)
    max_epochs = trainer.max_epochs if trainer is not None else None
    sched = ReferenceCosineLR(opt, **fit_schedule(scheduler, max_epochs))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
