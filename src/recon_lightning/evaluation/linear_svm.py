"""Linear-SVM evaluation of a frozen encoder (reference runner_svm, spec §4.7)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC

from ..models import svm_features


@torch.no_grad()
def extract_features(
    encoder: torch.nn.Module,
    batches: Iterable[dict],
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``encoder`` in eval mode over ``batches`` and collect SVM features and labels.

    Args:
        encoder: a ``ReConEncoder`` (``forward(points) -> EncoderOutput``).
        batches: dicts with ``points`` (B, N, 3) and ``label`` (B,).
        prepare: optional point sampling applied on the device first (e.g. deterministic FPS).

    Returns:
        ``(features (S, 2C) float32, labels (S,) int64)``.
    """
    was_training = encoder.training
    encoder.eval()
    feats, labels = [], []
    try:
        for batch in batches:
            pts = batch["points"].to(device)
            if prepare is not None:
                pts = prepare(pts)
            feats.append(svm_features(encoder(pts)).float().cpu())
            labels.append(batch["label"].reshape(-1).cpu())
    finally:
        encoder.train(was_training)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy()


def linear_svm_accuracy(
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    c: float = 0.075,
    seed: int = 0,
    standardize: bool = False,
) -> float:
    """Fit sklearn ``LinearSVC(C=c)`` on ``train`` features and return accuracy on ``test``.

    ``standardize`` first scales every feature to zero mean and unit variance on the training
    set (a common linear-probe protocol; the reference's SVM uses the raw features).
    """
    svm = LinearSVC(C=c, random_state=seed, max_iter=5000)
    clf = make_pipeline(StandardScaler(), svm) if standardize else svm
    clf.fit(*train)
    x, y = test
    return float((clf.predict(x) == y).mean())
