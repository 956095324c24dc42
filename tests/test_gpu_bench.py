"""benchmarks/gpu.py and benchmarks/gpu_session.sh, checked on a machine without a GPU.

The session script runs on a CUDA machine with no network; what can be checked here is that it
parses, that it goes on after a failing step and summarises, that the carried wheels install for
that machine's Python (3.12) and that its install step builds and imports this package offline.
The benchmark runs end to end on CPU with ``--dry-run`` (Triton in its interpreter).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SESSION = REPO / "benchmarks" / "gpu_session.sh"
BENCH = REPO / "benchmarks" / "gpu.py"
WHEELS = REPO / "gpu-wheels"
#: The GPU machine's interpreter, which `make gpu-wheels` downloads binary wheels for.
GPU_PYTHON = ["--python-version", "3.12", "--implementation", "cp"]
GPU_PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64"]


def wheels() -> list[Path]:
    """The carried wheels, or a skip when `make gpu-wheels` has not filled the folder."""
    found = sorted(WHEELS.glob("*.whl"))
    if not found:
        pytest.skip("gpu-wheels/ is empty: run `make gpu-wheels` to check the offline install")
    return found


def run_session(tmp_path: Path, steps: str, **env: str) -> subprocess.CompletedProcess:
    out = tmp_path / "out"
    full_env = {
        **os.environ,
        "OUT": str(out),
        "STEPS": steps,
        "PYTHON": sys.executable,
        "RECON_GPU_WORK": str(tmp_path / "work"),
        **env,
    }
    return subprocess.run(
        ["bash", str(SESSION)],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_session_script_parses():
    subprocess.run(["bash", "-n", str(SESSION)], check=True)


def test_session_goes_on_after_a_failing_step_and_summarises(tmp_path):
    empty = tmp_path / "no-wheels"
    empty.mkdir()
    done = run_session(tmp_path, "install bogus", GPU_WHEELS=str(empty))
    assert done.returncode == 1, done.stdout + done.stderr
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "install: FAILED" in summary
    assert "no wheels in" in summary  # the log's last line, in the summary
    assert "bogus: unknown step" in summary  # the step after the failure still ran
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert len(files) <= 8  # what the device tool brings back


def test_wheels_install_for_the_gpu_machines_python(tmp_path):
    found = wheels()
    platforms = [arg for p in GPU_PLATFORMS for arg in ("--platform", p)]
    cmd = [
        *(sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"),
        *("--no-index", "--find-links", str(WHEELS), "--no-deps", "--only-binary=:all:"),
        *GPU_PYTHON,
        *platforms,
        *("--target", str(tmp_path / "site")),
        *map(str, found),
    ]
    subprocess.run(cmd, check=True, timeout=300)
    installed = {p.name.split("-")[0].lower() for p in (tmp_path / "site").glob("*.dist-info")}
    for wheel in found:
        assert wheel.name.split("-")[0].lower() in installed, wheel.name
    total = sum(p.stat().st_size for p in found)
    assert total < 40 * 2**20, f"gpu-wheels/ holds {total / 2**20:.1f} MiB"


def test_session_install_step_builds_and_imports_offline(tmp_path):
    """The script's own install step, with this interpreter: every carried wheel this Python can
    take (the CPython 3.12 builds cannot), our wheel built from the carried setuptools with no
    index, and the import check of hydra, open_clip, KeOps and the package's configs."""
    from packaging.tags import sys_tags
    from packaging.utils import parse_wheel_filename

    here = set(sys_tags())
    usable = tmp_path / "wheels"
    usable.mkdir()
    for wheel in wheels():
        if here & set(parse_wheel_filename(wheel.name)[3]):
            shutil.copy2(wheel, usable)
    done = run_session(tmp_path, "install", GPU_WHEELS=str(usable))
    log = (tmp_path / "out" / "install.log").read_text()
    assert done.returncode == 0, log[-3000:]
    site = tmp_path / "work" / "site"
    for name in ("recon_lightning.conf", "hydra", "omegaconf", "open_clip", "pykeops"):
        line = next(line for line in log.splitlines() if line.split()[1:2] == [name])
        assert line.startswith("ok") and str(site) in line, line


def test_benchmark_imports_no_optional_package_at_module_level():
    code = (
        "import sys; sys.path.insert(0, 'benchmarks'); import gpu; "
        "print([m for m in ('hydra', 'omegaconf', 'wandb', 'open_clip', 'pykeops') "
        "if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_dry_run_on_cpu_writes_every_section(tmp_path):
    report = tmp_path / "report.md"
    done = subprocess.run(
        [sys.executable, str(BENCH), "--device", "cpu", "--dry-run", "--out", str(report)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    text = report.read_text()
    for heading in ("## Goals", "## Point ops", "## Pretraining step", "## Fine-tuning step"):
        assert heading in text
    for op in ("| FPS |", "| kNN |", "| Chamfer-L2 |", "| 3-NN interp |"):
        assert op in text
    for config in ("on device", "cached features (host table)", "online", "torch.compile"):
        assert config in text
    assert "MISMATCH" not in text
    assert "failed:" not in text, [line for line in text.splitlines() if "failed:" in line]
    assert "reference |" in text  # every op has its reference row


def test_spent_budget_skips_rows_but_still_writes_the_report(tmp_path):
    report = tmp_path / "report.md"
    cmd = [sys.executable, str(BENCH), "--device", "cpu", "--dry-run", "--budget-s", "0"]
    subprocess.run([*cmd, "--out", str(report)], cwd=REPO, check=True, timeout=300)
    text = report.read_text()
    assert "skipped: --budget-s 0 spent" in text
    assert "## Pretraining step" in text
