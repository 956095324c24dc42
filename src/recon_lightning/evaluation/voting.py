"""Test-time voting (reference ``runner_finetune.test_vote``, spec §4.4).

Per test batch: FPS the stored cloud to ``point_all`` once; ``times`` views, each a random
``npoints`` subset (one draw shared by the batch, as ``np.random.choice`` in the reference) passed
through the dataset's test-time transform; the logits of the views are averaged and the argmax is
the vote. The reference repeats the whole voting evaluation 299 times and reports the **maximum**
accuracy over repeats; :class:`RepeatedVoteAccuracy` keeps one running count per repeat so that
both the honest single-repeat accuracy and that optimistic maximum can be reported, labelled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchmetrics import Metric

from ..data.transforms import BatchTransform, fps_sample, point_all_for, random_subset

Forward = Callable[[torch.Tensor], torch.Tensor]


def vote_pool(points_raw: torch.Tensor, npoints: int) -> torch.Tensor:
    """(B, N, C) stored clouds -> (B, point_all, C) FPS pool the views are drawn from."""
    return fps_sample(points_raw, point_all_for(npoints, points_raw.shape[1]))


def vote_logits(
    forward: Forward,
    pool: torch.Tensor,
    npoints: int,
    times: int = 10,
    transform: BatchTransform | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Average of the logits of ``times`` augmented views of each cloud.

    Args:
        forward: model, (B, npoints, 3) -> (B, K) logits.
        pool: (B, P, 3) FPS pool from :func:`vote_pool` (P >= npoints).
        npoints: points per view.
        times: number of views (10 in the reference).
        transform: test-time batch transform ``f(points, generator=...)``, or None.
        generator: torch generator for the subsets and the transform.

    Returns:
        (B, K) mean logits over the views.
    """
    if times < 1:
        raise ValueError(f"voting needs at least one view; got times={times}")
    total: torch.Tensor | None = None
    # One forward per view (not one stacked batch): memory stays that of a plain test batch.
    for _ in range(times):
        view = random_subset(pool, npoints, generator=generator, shared=True)
        if transform is not None:
            view = transform(view, generator=generator)
        logits = forward(view)
        total = logits if total is None else total + logits
    assert total is not None
    return total / times


class RepeatedVoteAccuracy(Metric):
    """Accuracy of ``repeats`` independent voting evaluations, counted side by side.

    ``update(preds, target)`` takes (R, B) predictions (one row per repeat) and (B,) labels;
    ``compute()`` returns the (R,) accuracies in [0, 1]. Counts are summed over DDP ranks.
    """

    full_state_update = False

    def __init__(self, repeats: int, **kwargs) -> None:
        super().__init__(**kwargs)
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1; got {repeats}")
        self.repeats = repeats
        self.add_state("correct", torch.zeros(repeats, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("total", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != (self.repeats, target.shape[0]):
            raise ValueError(
                f"preds must be ({self.repeats}, {target.shape[0]}); got {tuple(preds.shape)}"
            )
        self.correct += (preds == target.unsqueeze(0)).sum(dim=1)
        self.total += target.shape[0]

    def compute(self) -> torch.Tensor:
        return self.correct.double() / self.total.clamp_min(1)
