"""``recon-train``: compose the Hydra config, build trainer, data and task, fit (and test).

Conventions every task config follows (so this file stays generic):
- ``cfg.task`` is instantiated with ``_recursive_=False``; the task reads the nested configs it
  needs (``model``, ``teachers``, ...) that its YAML pulls in by interpolation.
- ``cfg.data.total_bs`` is the global batch; each device gets ``total_bs / world_size``.
- ``ckpt_path`` names weights to start from (downstream tasks read it through interpolation);
  ``resume`` resumes a run from a Lightning checkpoint (weights, optimiser, schedule, epoch).
- A task with ``write_results(path, info)`` writes ``results.json`` after the run.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

from ._hydra import config_dir, instantiate, instantiate_group
from .console import report_user_errors, setup_console

log = logging.getLogger("recon_lightning")


def per_device_batch(total_bs: int, world_size: int) -> int:
    """Split the global batch over devices as the reference does (it must divide evenly)."""
    if total_bs % world_size:
        raise ValueError(
            f"data.total_bs={total_bs} does not split over {world_size} devices; choose a "
            "multiple of the device count"
        )
    return total_bs // world_size


def check_sync_batchnorm(trainer: Any, enabled: bool) -> None:
    """Refuse ``trainer.sync_batchnorm`` on CPU processes: torch's SyncBatchNorm runs on GPUs only.

    Without this check the run would start and fail at the first training forward.
    """
    if enabled and trainer.world_size > 1 and trainer.strategy.root_device.type == "cpu":
        raise ValueError(
            "trainer.sync_batchnorm=true needs GPUs (torch's SyncBatchNorm has no CPU kernel); "
            "use trainer.sync_batchnorm=false with trainer=ddp_cpu"
        )


def build(cfg: DictConfig) -> tuple[Any, Any, Any]:
    """Instantiate ``(trainer, datamodule, task)`` from a composed config.

    Seeding: ``seed_everything(seed)`` here, before the model exists, so that every DDP process
    (each one runs this function) initialises identical weights; from then on
    :class:`~recon_lightning.distributed.RankSeeding` gives each rank its own stream of
    ``(seed, rank, batches done)`` (see :mod:`recon_lightning.distributed`). Checkpoints are
    written atomically, and a SIGTERM stops every rank at the same batch and saves ``last.ckpt``
    (see :mod:`recon_lightning.callbacks.checkpointing`).
    """
    import lightning.pytorch as pl

    from ..callbacks import AtomicCheckpointIO, CheckpointOnSigterm, RunSummary
    from ..distributed import RankSeeding

    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    from lightning.pytorch.callbacks import LearningRateMonitor

    loggers = instantiate_group(cfg.get("logger"))
    callbacks = [
        *instantiate_group(cfg.get("callbacks")),
        RunSummary(),
        RankSeeding(cfg.seed),
        CheckpointOnSigterm(),
    ]
    if not loggers:  # LearningRateMonitor refuses a trainer without a logger: nowhere to log to
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    extra: dict[str, Any] = {}
    if cfg.trainer.get("plugins") is None:  # a config's own plugins (checkpoint IO) win
        extra["plugins"] = [AtomicCheckpointIO()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, **extra)
    check_sync_batchnorm(trainer, bool(cfg.trainer.get("sync_batchnorm", False)))
    data_cfg = cfg.data
    if "total_bs" in data_cfg:
        data_cfg = data_cfg.copy()
        with open_dict(data_cfg):
            data_cfg.batch_size = per_device_batch(data_cfg.pop("total_bs"), trainer.world_size)
    datamodule = instantiate(data_cfg)
    task = instantiate(cfg.task, _recursive_=False)
    return trainer, datamodule, task


def prepare_fit(trainer: Any, datamodule: Any) -> int | None:
    """Check the training split before Lightning starts; returns batches per epoch.

    Reads the training split now (so a missing or corrupt dataset fails before any model is
    moved to a device), refuses a split that a drop-last loader turns into zero steps, and
    shortens a logging interval longer than the epoch (Lightning would warn and log nothing).
    """
    if not hasattr(datamodule, "dataset"):
        return None
    from ..data.base import require_full_batch

    split = getattr(datamodule, "train_split", "train")  # ShapeNetPart trains on trainval
    samples = len(datamodule.dataset(split))
    require_full_batch(split, samples, datamodule.batch_size, trainer.world_size)
    batches = samples // trainer.world_size // datamodule.batch_size
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        batches = min(batches, limit)
    elif isinstance(limit, float):
        batches = max(1, int(batches * limit))
    if 0 < batches < trainer.log_every_n_steps:
        trainer.log_every_n_steps = batches
    return batches


def resolve_resume(cfg: DictConfig) -> str | None:
    """The checkpoint to resume from: ``resume=PATH``, or with ``resume=auto`` (the default) the
    run folder's own ``checkpoints/last.ckpt`` when there is one (a requeued SLURM job, a
    restarted command with the same ``hydra.run.dir``), else None (a fresh run).
    """
    resume = cfg.get("resume")
    if resume is None:
        return None
    if str(resume) == "auto":
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        if last.is_file():
            log.info("resume=auto: continuing from %s (resume=null starts afresh)", last)
            return str(last)
        return None
    if not Path(str(resume)).is_file():
        raise FileNotFoundError(
            f"resume={resume} does not exist; pass a Lightning checkpoint of this run "
            "(e.g. <run folder>/checkpoints/last.ckpt), resume=auto or resume=null"
        )
    return str(resume)


def log_resolved_config(trainer: Any, cfg: DictConfig) -> None:
    """Send the whole resolved config to every logger (wandb config, hparams.yaml, TensorBoard)."""
    if not trainer.loggers:
        return
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger in trainer.loggers:
        logger.log_hyperparams({"config": resolved})


def run(cfg: DictConfig) -> dict[str, Any]:
    """Fit (and optionally test) the configured task; returns the final metrics."""
    start = time.time()
    trainer, datamodule, task = build(cfg)
    from ..tasks.eval_only import EVAL_ONLY_MESSAGE, EvalOnlyMixin

    if isinstance(task, EvalOnlyMixin):  # say so before Lightning starts a loop
        raise ValueError(EVAL_ONLY_MESSAGE.format(name=task.task_name))
    if cfg.get("train", True):
        resume = resolve_resume(cfg)
        prepare_fit(trainer, datamodule)
        log_resolved_config(trainer, cfg)
        trainer.fit(task, datamodule=datamodule, ckpt_path=resume)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    if cfg.get("test", False):
        for row in trainer.test(task, datamodule=datamodule, weights_only=False):
            metrics.update({k: float(v) for k, v in row.items()})
    if hasattr(task, "write_results") and trainer.is_global_zero:
        info = {
            "config_name": cfg.get("experiment_name") or cfg.get("task_name"),
            "seed": cfg.seed,
            "checkpoint": cfg.get("ckpt_path"),
            "wall_time_s": time.time() - start,
        }
        task.write_results(Path(cfg.paths.output_dir) / "results.json", info)
    return metrics


#: Exit status after a SIGTERM stopped training (128 + 15, what a shell reports for a process
#: ended by SIGTERM): the run saved its state but did not finish.
SIGTERM_EXIT_STATUS = 143


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
@report_user_errors
def main(cfg: DictConfig) -> None:
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    setup_console()
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg, resolve=False))
    try:
        metrics = run(cfg)
    except SIGTERMException:
        log.warning("stopped by SIGTERM; exit status %d", SIGTERM_EXIT_STATUS)
        sys.exit(SIGTERM_EXIT_STATUS)
    log.info("final metrics: %s", json.dumps(metrics, indent=1))


if __name__ == "__main__":
    main()
