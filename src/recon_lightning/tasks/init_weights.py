"""Starting weights for downstream tasks: our Lightning ``.ckpt`` files or official checkpoints.

``ckpt_path`` in every downstream recipe names one of

- a pretraining checkpoint: ours (``PretrainTask`` ``.ckpt``) or the reference's
  (``ckpt-epoch-*.pth`` / ``ckpt-last.pth``): the encoder (and, for zero-shot, the projections)
  is loaded; the rest stays at its initialisation and is reported;
- a fine-tuned classifier: ours (``ClassificationTask`` ``.ckpt``) or the reference's
  ``ckpt-best.pth``: everything, head included, is loaded.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..checkpoints import load_pretrained
from ..models import LoadReport

log = logging.getLogger("recon_lightning")

PathLike = str | os.PathLike[str]


def initialise(model: nn.Module, ckpt_path: PathLike | None, what: str) -> LoadReport | None:
    """Load what fits of ``ckpt_path`` into ``model`` and log what stays randomly initialised.

    Args:
        model: the plain model a task wraps.
        ckpt_path: checkpoint file, or None to keep the initialisation.
        what: a short name of the task for the log line.

    Returns:
        The :class:`~recon_lightning.models.LoadReport`, or None without a checkpoint.

    Raises:
        FileNotFoundError: ``ckpt_path`` does not exist.
    """
    if ckpt_path is None:
        log.info("%s: no ckpt_path; weights keep their random initialisation", what)
        return None
    if not os.path.isfile(ckpt_path):
        raise FileNotFoundError(
            f"ckpt_path={ckpt_path} does not exist; pass our pretraining/fine-tuning .ckpt or an "
            "official ReCon checkpoint (ckpt-epoch-300.pth, ckpt-best.pth), or ckpt_path=null"
        )
    report = load_pretrained(model, ckpt_path)
    log.info("%s: initialised from %s\n%s", what, ckpt_path, report)
    return report


def projection_dims(state: Mapping[str, torch.Tensor]) -> dict[str, int | None]:
    """Output sizes of the ``img_proj`` / ``text_proj`` layers in a state dict (None if absent).

    Works on our names (any prefix, e.g. a Lightning ``model.img_proj.weight``) and on the
    reference's (``img_proj.weight``), which coincide for these layers.
    """
    dims: dict[str, int | None] = {"img_dim": None, "text_dim": None}
    for key, value in state.items():
        for proj, name in (("img_proj.weight", "img_dim"), ("text_proj.weight", "text_dim")):
            if key.endswith(proj) and value.ndim == 2:
                dims[name] = int(value.shape[0])
    return dims


def check_report_complete(report: LoadReport | None, ckpt_path: Any, what: str) -> None:
    """Raise unless every model entry came from the checkpoint (evaluating a trained model)."""
    if report is None:
        raise ValueError(
            f"{what} evaluates a trained model: pass ckpt_path=<fine-tuned checkpoint>"
        )
    if report.missing:
        raise ValueError(
            f"{what}: {ckpt_path} leaves {len(report.missing)} entries randomly initialised "
            f"({', '.join(report.missing[:6])}{', ...' if len(report.missing) > 6 else ''}); "
            "this looks like a pretraining checkpoint, not a fine-tuned classifier. Fine-tune it "
            "first with recon-train, or evaluate it with experiment=svm_modelnet40"
        )
