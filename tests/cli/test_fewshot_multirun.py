"""`recon-train -m experiment=fewshot` as a real Hydra multirun, then `recon-report` (slow)."""

from __future__ import annotations

import subprocess
import sys

import pytest

TINY = [
    "trainer=cpu",
    "logger=none",
    "~callbacks.progress_bar",
    "~callbacks.lr_monitor",
    "++trainer.enable_progress_bar=false",
    "trainer.max_epochs=1",
    "encoder.trans_dim=32",
    "encoder.depth=2",
    "encoder.num_heads=2",
    "encoder.num_group=8",
    "encoder.group_size=8",
    # SyntheticShapes stands in for the ModelNet few-shot pickles; the sweep machinery is the same.
    "data=synthetic_cls",
    "data.num_classes=4",
    "data.num_points=80",
    "data.npoints=64",
    "data.num_workers=0",
    "data.train_size=16",
    "data.val_size=8",
    "data.test_size=8",
    "data.total_bs=8",
]


@pytest.mark.slow
def test_fewshot_sweep_writes_one_results_per_fold_and_reports(tmp_path):
    cmd = [sys.executable, "-m", "recon_lightning.cli.train", "-m", "experiment=fewshot"]
    cmd += ["way=5,10", "shot=10", "fold=0,1", f"paths.log_dir={tmp_path}", *TINY]
    subprocess.run(cmd, check=True, capture_output=True, cwd=tmp_path)
    (sweep,) = (tmp_path / "fewshot" / "multiruns").iterdir()
    found = sorted(str(p.relative_to(sweep)) for p in sweep.rglob("results.json"))
    assert found == [
        "10way_10shot/fold0/results.json",
        "10way_10shot/fold1/results.json",
        "5way_10shot/fold0/results.json",
        "5way_10shot/fold1/results.json",
    ]
    report = subprocess.run(
        [sys.executable, "-m", "recon_lightning.cli.report", str(sweep)],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "| ModelNet40 few-shot | 5-way 10-shot | 10-way 10-shot |" in report.stdout
    assert (sweep / "report.md").is_file() and (sweep / "fewshot.csv").is_file()
