"""Locating the Hydra config tree and building the pieces every run needs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import DictConfig

from ..tasks.config import instantiate

__all__ = ["compose_train", "config_dir", "instantiate", "instantiate_group"]


def config_dir() -> str:
    """The packaged config tree ``recon_lightning.conf``: the repository's ``conf/`` folder.

    Users add their own folders on top with Hydra's ``--config-dir DIR`` or
    ``hydra.searchpath=[file://DIR]``; this one is always the primary tree.
    """
    spec = importlib.util.find_spec("recon_lightning.conf")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        if (Path(location) / "train.yaml").is_file():
            return str(Path(location))
    raise FileNotFoundError(
        f"recon-lightning's Hydra configs (train.yaml) are missing from "
        f"{locations or 'the install'}; "
        "reinstall the package (`pip install .` or `make install` from a clone)"
    )


def compose_train(overrides: list[str]) -> DictConfig:
    """Compose ``conf/train.yaml`` with ``overrides`` outside ``@hydra.main`` (demo, recon-data)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def instantiate_group(cfg: DictConfig | None) -> list:
    """Instantiate every entry of a dict-of-configs group (callbacks, loggers) that has a target."""
    if not cfg:
        return []
    return [instantiate(c) for c in cfg.values() if c is not None and "_target_" in c]
