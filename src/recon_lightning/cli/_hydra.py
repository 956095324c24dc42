"""Locating the Hydra config tree and building the pieces every run needs."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig


def config_dir() -> str:
    """The ``conf/`` folder: ``$RECON_CONF_DIR`` or the repository's own (editable installs)."""
    env = os.environ.get("RECON_CONF_DIR")
    path = Path(env) if env else Path(__file__).resolve().parents[3] / "conf"
    if not (path / "train.yaml").is_file():
        raise FileNotFoundError(
            f"Hydra configs not found in {path}; install recon-lightning from a clone with "
            "`pip install -e .` or point RECON_CONF_DIR at the repository's conf/ folder"
        )
    return str(path)


def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers) that has a target."""
    from hydra.utils import instantiate

    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]
