"""Composing the real configs in tests, and the overrides that shrink a run to seconds on a CPU."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parents[1] / "conf"

#: ReCon at toy size (8 patches of 8 points), no workers: a step takes milliseconds.
TINY_MODEL = [
    "encoder.trans_dim=32",
    "encoder.depth=1",
    "encoder.num_heads=2",
    "encoder.num_group=8",
    "encoder.group_size=8",
    "encoder.decoder_depth=1",
    "encoder.decoder_num_heads=2",
    "data.num_workers=0",
]
#: Tiny pretraining on SyntheticShapes with random teachers.
TINY_PRETRAIN = [*TINY_MODEL, "data.npoints=128", "data.num_points=256", "teachers=random"]


def compose_cfg(overrides: list[str], name: str = "train", hydra_cfg: bool = False) -> DictConfig:
    """``conf/<name>.yaml`` composed with ``overrides`` (outside ``@hydra.main``)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=name, overrides=overrides, return_hydra_config=hydra_cfg)


def run_cli(script: str, args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    """Run an installed entry point (``recon-train``, ...) as a user would, output captured."""
    return subprocess.run(
        [str(Path(sys.executable).parent / script), *args],
        cwd=cwd,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=900,
    )
