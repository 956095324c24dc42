"""``recon-eval``: evaluation-only runs (linear SVM, zero-shot, test + voting of a fine-tuned net).

Composes ``conf/eval.yaml`` (same groups as ``recon-train``; pick a recipe with ``experiment=``),
builds trainer, data and task exactly as ``recon-train`` does, then calls the task's
``evaluate(trainer, datamodule)`` and writes ``results.json`` into the run's output folder::

    recon-eval experiment=svm_modelnet40 ckpt_path=PRETRAINED.ckpt paths.data_dir=/datasets
    recon-eval experiment=svm_modelnet40 ckpt_path=null          # random-encoder baseline
    recon-eval experiment=zeroshot_modelnet40 ckpt_path=ZEROSHOT_PRETRAINED.pth
    recon-eval experiment=finetune_scan_objbg ckpt_path=FINETUNED.ckpt   # plain test + voting
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from ._hydra import config_dir
from .console import report_user_errors, setup_console
from .train import build

log = logging.getLogger("recon_lightning")


def run_eval(cfg: DictConfig) -> dict[str, Any]:
    """Build the configured task and evaluate it; returns its metrics.

    Raises:
        TypeError: the task has no ``evaluate`` (e.g. pretraining).
    """
    start = time.time()
    trainer, datamodule, task = build(cfg)
    if not hasattr(task, "evaluate"):
        raise TypeError(
            f"{type(task).__name__} has no evaluate(); recon-eval runs the svm, zeroshot and "
            "classification tasks (pick one with experiment=... or task=...)"
        )
    metrics = task.evaluate(trainer, datamodule)
    if trainer.is_global_zero and hasattr(task, "write_results"):
        info = {
            "config_name": cfg.get("experiment_name") or cfg.get("task_name"),
            "seed": cfg.seed,
            "checkpoint": cfg.get("ckpt_path"),
            "wall_time_s": time.time() - start,
        }
        path = task.write_results(Path(cfg.paths.output_dir) / "results.json", info)
        log.info("wrote %s", path)
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
@report_user_errors
def main(cfg: DictConfig) -> None:
    setup_console()
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))
    metrics = run_eval(cfg)
    log.info("metrics: %s", json.dumps(metrics, indent=1, default=str))


if __name__ == "__main__":
    main()
