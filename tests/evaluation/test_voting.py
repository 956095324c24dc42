"""Voting: averaged view logits, repeat bookkeeping, and the task's test metrics."""

from __future__ import annotations

import pytest
import torch

from recon_lightning.data.transforms import fps_sample
from recon_lightning.evaluation.voting import RepeatedVoteAccuracy, vote_logits, vote_pool
from tasks.test_classification import cpu_trainer, tiny_data, tiny_task


def test_vote_logits_average_the_views_in_draw_order():
    # The forward returns the index of the view it sees, so the mean is known exactly.
    pool = torch.randn(3, 20, 3)
    seen: list[torch.Tensor] = []

    def forward(view: torch.Tensor) -> torch.Tensor:
        seen.append(view)
        k = float(len(seen) - 1)
        return torch.full((view.shape[0], 2), k)

    out = vote_logits(forward, pool, npoints=8, times=4)
    torch.testing.assert_close(out, torch.full((3, 2), (0 + 1 + 2 + 3) / 4))
    assert len(seen) == 4 and all(v.shape == (3, 8, 3) for v in seen)
    # Each view is one random subset shared by the batch (reference np.random.choice per batch).
    for v in seen:
        idx = (v[0].unsqueeze(1) == pool[0].unsqueeze(0)).all(-1).float().argmax(1)
        torch.testing.assert_close(v, pool[:, idx])


def test_vote_logits_apply_the_transform_to_every_view():
    pool = torch.rand(2, 16, 3)
    out = vote_logits(
        lambda v: v.sum(1), pool, npoints=16, times=3, transform=lambda v, generator: 2 * v
    )
    # Subsets of all 16 points are permutations: sums are invariant, the transform doubles them.
    torch.testing.assert_close(out, 2 * pool.sum(1))
    with pytest.raises(ValueError, match="at least one view"):
        vote_logits(lambda v: v, pool, 16, times=0)


def test_vote_pool_is_fps_to_point_all():
    pts = torch.rand(2, 2048, 3)
    torch.testing.assert_close(vote_pool(pts, 1024), fps_sample(pts, 1200))
    assert vote_pool(torch.rand(1, 300, 3), 256).shape == (1, 300, 3)  # capped by N


def test_repeated_vote_accuracy_counts_each_repeat():
    metric = RepeatedVoteAccuracy(3)
    target = torch.tensor([0, 1, 2, 3])
    metric.update(torch.tensor([[0, 1, 2, 3], [0, 0, 0, 0], [0, 1, 0, 0]]), target)
    metric.update(torch.tensor([[1, 1], [0, 1], [0, 1]]), torch.tensor([0, 1]))
    torch.testing.assert_close(metric.compute(), torch.tensor([5 / 6, 3 / 6, 4 / 6]).double())
    with pytest.raises(ValueError, match="preds must be"):
        metric.update(torch.zeros(2, 4, dtype=torch.long), target)


def test_task_reports_plain_vote_and_reference_max_separately():
    torch.manual_seed(0)
    task = tiny_task(vote={"times": 2, "reference_repeats": 3})
    (row,) = cpu_trainer().test(task, datamodule=tiny_data())
    assert set(row) == {
        "test/acc",
        "test/vote_acc",
        "test/vote_acc_max_reference",
        "test/vote_acc_mean_over_repeats",
    }
    assert row["test/vote_acc_max_reference"] >= row["test/vote_acc_mean_over_repeats"]
    record = task.results({"config_name": "t", "seed": 0})
    # The headline is the plain test accuracy, never the reference's max over repeats.
    assert record["headline"]["metric"] == "test_acc"
    assert record["metrics"]["vote_repeats"] == 3 and record["metrics"]["vote_times"] == 2
    assert "optimistic" in record["notes"]["vote_acc_max_reference"]


class MeanReadout(torch.nn.Module):
    """A permutation-invariant classifier: logits from the mean point."""

    cls_dim = 4

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(3, 4)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.fc(points.mean(1))


def test_voting_with_identity_views_equals_plain_accuracy():
    torch.manual_seed(0)
    # Every view holds all points of the cloud and no transform: a permutation-invariant model
    # must vote exactly its plain prediction.
    task = tiny_task(vote={"times": 3, "transform": "none"})
    task.model = MeanReadout()
    data = tiny_data(num_points=64, npoints=64, test_size=16)
    (row,) = cpu_trainer().test(task, datamodule=data)
    assert row["test/vote_acc"] == pytest.approx(row["test/acc"])
    (row,) = cpu_trainer().test(tiny_task(vote={"times": 0}), datamodule=data)
    assert set(row) == {"test/acc"}
