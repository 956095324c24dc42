"""The built wheel stands on its own: configs inside, entry points start outside the clone."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# What a wheel is built from: the sources, configs and packaging files (not the venv or tests).
SOURCES = ("pyproject.toml", "setup.py", "README.md", "LICENSE", "src", "conf")


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources and ``pip install --no-deps`` it into a folder."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src_copy"
    src.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for name in SOURCES:
        path = REPO / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=ignore)
        else:
            shutil.copy2(path, src / name)
    dist = root / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)]
    subprocess.run(build, check=True, cwd=root)
    (wheel,) = dist.glob("recon_lightning-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "recon_lightning/conf/train.yaml" in names
    assert "recon_lightning/conf/experiment/finetune_scan_hardest.yaml" in names
    target = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)
    return target


def _run(target: Path, script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(target), "HYDRA_FULL_ERROR": "1"}
    return subprocess.run(
        [str(target / "bin" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_wheel_ships_configs_and_entry_points_start_outside_the_clone(installed_wheel, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "import recon_lightning, sys; sys.stdout.write(recon_lightning.__file__)",
        ],
        cwd=outside,
        env={**os.environ, "PYTHONPATH": str(installed_wheel)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert Path(probe.stdout).is_relative_to(installed_wheel), "the wheel, not the clone, ran"

    train = _run(
        installed_wheel,
        "recon-train",
        "--cfg",
        "job",
        "experiment=finetune_scan_hardest",
        cwd=outside,
    )
    assert train.returncode == 0, train.stderr
    assert (
        "ScanObjectNN" in train.stdout and "experiment_name: finetune_scan_hardest" in train.stdout
    )

    evaluate = _run(
        installed_wheel, "recon-eval", "--cfg", "job", "experiment=svm_modelnet40", cwd=outside
    )
    assert evaluate.returncode == 0, evaluate.stderr
    assert "experiment_name: svm_modelnet40" in evaluate.stdout


def test_user_config_dir_adds_experiments(installed_wheel, tmp_path):
    """Hydra's --config-dir puts a user's own experiment files beside the packaged ones."""
    user = tmp_path / "my_conf"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "my_scan.yaml").write_text(
        "# @package _global_\ndefaults:\n  - finetune_scan_hardest\n\ntask_name: my_scan\nseed: 7\n"
    )
    result = _run(
        installed_wheel,
        "recon-train",
        "--config-dir",
        str(user),
        "--cfg",
        "job",
        "experiment=my_scan",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "task_name: my_scan" in result.stdout and "seed: 7" in result.stdout
    assert "ScanObjectNN" in result.stdout  # the packaged recipe it builds on
