"""OmegaConf resolvers the configs use for run folders and logger identities.

- ``${recon_run_id:}``: the run folder's name. Under SLURM it is the job's id (array job and task
  ids for arrays), so a requeued job finds its own folder and ``last.ckpt`` again; elsewhere the
  start time, as Hydra's ``${now:}`` would give.
- ``${recon_hash:TEXT}``: a short stable hash, e.g. of the output folder as a wandb run id (the
  same folder, the same wandb run, across requeues).
- ``${recon_run_name:NAME,OVERRIDES}``: ``NAME`` plus the job's overrides, for logger run names
  (40 few-shot runs are no longer all called "fewshot").
- ``${recon_job_overrides:}``: the job's overrides (Hydra's ``override_dirname``), empty
  outside a Hydra run (tests, notebooks).
- ``${recon_group:NAME}``: the wandb group: ``NAME`` plus the sweep folder's name in a multirun,
  so each sweep's runs group together.
"""

from __future__ import annotations

import hashlib
import os
from datetime import datetime

from omegaconf import OmegaConf

_START = datetime.now()


def run_id() -> str:
    """The SLURM job id (``<array job>_<task>`` for arrays) or the start time."""
    env = os.environ
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        return f"slurm-{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    if "SLURM_JOB_ID" in env:
        return f"slurm-{env['SLURM_JOB_ID']}"
    return _START.strftime("%Y-%m-%d_%H-%M-%S")


def short_hash(text: str, length: int = 12) -> str:
    """The first ``length`` hex digits of the SHA-1 of ``text``."""
    return hashlib.sha1(str(text).encode()).hexdigest()[:length]


def run_name(name: str, overrides: str | None = None) -> str:
    """``name`` or ``name:overrides`` (Hydra's ``override_dirname``, paths excluded)."""
    return f"{name}:{overrides}" if overrides else str(name)


def job_overrides() -> str:
    """Hydra's ``job.override_dirname`` of this job, or ``""`` outside a Hydra run."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return str(HydraConfig.get().job.override_dirname)
    except (ImportError, ValueError):
        return ""


def group(name: str) -> str:
    """``name`` in a single run; ``name@<sweep folder>`` inside a Hydra multirun."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        config = HydraConfig.get()
    except (ImportError, ValueError):
        return str(name)
    if config.mode == RunMode.MULTIRUN:
        return f"{name}@{os.path.basename(os.path.normpath(config.sweep.dir))}"
    return str(name)


def register() -> None:
    """Register the resolvers once (idempotent)."""
    for key, fn, cache in (
        ("recon_run_id", run_id, True),
        ("recon_hash", short_hash, False),
        ("recon_run_name", run_name, False),
        ("recon_group", group, False),
        ("recon_job_overrides", job_overrides, False),
    ):
        if not OmegaConf.has_resolver(key):
            OmegaConf.register_new_resolver(key, fn, use_cache=cache)


register()
