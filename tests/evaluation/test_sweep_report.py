"""Sweep tables (`recon-report`) from hand-written results.json files: configs x seeds, few-shot
folds, Hydra overrides, malformed and missing files."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pandas as pd
import pytest

from recon_lightning.cli import report as report_cli
from recon_lightning.evaluation.report import (
    BEST_LABEL,
    NoRunsError,
    build_report,
    config_keys,
    fewshot_markdown,
    fewshot_table,
    load_runs,
    plot_runs,
    read_overrides,
    summarise,
    to_markdown,
    write_report,
)
from recon_lightning.evaluation.results import build_results, write_json_atomic

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(
    folder: Path,
    config: str,
    seed: int,
    metrics: dict,
    headline: str | None,
    setting: dict | None = None,
    overrides: list[str] | None = None,
    task: str = "classification",
) -> Path:
    """One run folder as Hydra leaves it: results.json, and .hydra/ when overrides are given."""
    record = build_results(task, {"config_name": config, "seed": seed}, metrics, headline, setting)
    write_json_atomic(folder / "results.json", record)
    if overrides is not None:
        (folder / ".hydra").mkdir(parents=True, exist_ok=True)
        (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
        lines = "".join(f"- {o}\n" for o in overrides)
        (folder / ".hydra" / "overrides.yaml").write_text(lines)
    return folder / "results.json"


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """An lr x seed multirun of one fine-tune config (3 seeds each) plus two SVM runs."""
    root = tmp_path / "multiruns" / "2024-01-01_00-00-00"
    accs = {"1e-4": [90.0, 91.0, 92.0], "5e-4": [85.0, 89.0]}
    job = 0
    for lr, values in accs.items():
        for seed, acc in enumerate(values):
            write_run(
                root / str(job),
                "finetune_scan_objbg",
                seed,
                {"test_acc": acc, "last_epoch_acc": acc - 1, "vote_acc": acc + 0.5},
                "test_acc",
                {"dataset": "scanobjectnn_objbg", "protocol": "full", "random_init_entries": []},
                [
                    "experiment=finetune_scan_objbg",
                    f"task.optimizer.lr={lr}",
                    f"seed={seed}",
                    f"paths.log_dir=/somewhere/{job}",  # where it logs: no new configuration
                    "++trainer.enable_progress_bar=false",
                    "~callbacks.lr_monitor",
                ],
            )
            job += 1
    for seed, acc in enumerate([91.0, 93.0]):
        write_run(
            tmp_path / "svm" / f"s{seed}",
            "svm_modelnet40",
            seed,
            {"svm_acc": acc},
            "svm_acc",
            {"dataset": "modelnet40", "c": 0.075},
            task="svm",
        )
    return tmp_path


def test_load_runs_one_row_per_run_with_settings_metrics_and_overrides(sweep):
    runs = load_runs(sweep)
    assert len(runs) == 7
    assert runs["run"].tolist()[0] == "multiruns/2024-01-01_00-00-00/0"
    ft = runs[runs.config_name == "finetune_scan_objbg"]
    assert ft["override.task.optimizer.lr"].tolist() == ["1e-4"] * 3 + ["5e-4"] * 2
    assert ft["metrics.vote_acc"].tolist() == [90.5, 91.5, 92.5, 85.5, 89.5]
    assert ft["setting.random_init_entries"].iloc[0] == "[]"  # lists as JSON text
    assert ft["override.callbacks.lr_monitor"].iloc[0] == "(deleted)"
    svm = runs[runs.task == "svm"]
    assert svm["override.task.optimizer.lr"].isna().all()  # no .hydra folder there
    assert svm["setting.c"].tolist() == [0.075, 0.075]
    assert runs.attrs["skipped"] == [] and runs.attrs["incomplete"] == []


def test_summarise_groups_configs_over_seeds(sweep):
    runs = load_runs(sweep)
    keys = config_keys(runs)
    assert "override.task.optimizer.lr" in keys
    assert not any(k.endswith(("seed", "log_dir", "progress_bar", "lr_monitor")) for k in keys)
    summary = summarise(runs)
    assert summary["config_name"].tolist() == ["finetune_scan_objbg"] * 2 + ["svm_modelnet40"]
    a, b, svm = summary.itertuples()
    assert (a.differs_by, a.metric, a.over, a.n, a.n_runs, a.seeds) == (
        "task.optimizer.lr=1e-4",
        "test_acc",
        "seeds",
        3,
        3,
        "0,1,2",
    )
    assert a.mean == pytest.approx(91.0) and a.std == pytest.approx(math.sqrt(2 / 3))
    assert a.best == 92.0
    assert b.differs_by == "task.optimizer.lr=5e-4" and b.n_runs == 2
    assert b.mean == pytest.approx(87.0) and b.std == pytest.approx(2.0) and b.best == 89.0
    assert svm.differs_by == "" and svm.mean == pytest.approx(92.0) and svm.best == 93.0
    sample = summarise(runs, ddof=1)
    assert sample["std"].iloc[0] == pytest.approx(1.0)
    votes = summarise(runs, metric="vote_acc")
    assert votes["mean"].tolist()[:2] == [pytest.approx(91.5), pytest.approx(87.5)]
    assert votes["n_missing"].tolist() == [0, 0, 2]  # the SVM runs have no vote_acc
    with pytest.raises(KeyError, match="no run records metric"):
        summarise(runs, metric="nope")
    # A key declared irrelevant merges the rows.
    merged = summarise(runs, ignore=["task.optimizer.lr"])
    assert merged["n_runs"].tolist() == [5, 2]


def test_markdown_names_the_reference_best_of_n(sweep):
    text = to_markdown(summarise(load_runs(sweep)))
    lines = text.splitlines()
    assert lines[0] == f"| config | differs by | metric | runs | mean ± std | {BEST_LABEL} |"
    assert "| finetune_scan_objbg | task.optimizer.lr=1e-4 | test_acc | 3 | 91.00 ± 0.82 " in text
    assert "| 92.00 (N=3) |" in text
    assert "| svm_modelnet40 | – | svm_acc | 2 | 92.00 ± 1.00 | 93.00 (N=2) |" in text


def test_write_report_files_are_complete_and_atomic(sweep, tmp_path):
    report = build_report(sweep)
    out = tmp_path / "out"
    written = write_report(report, out)
    assert sorted(p.name for p in written) == ["report.csv", "report.md", "report.png", "runs.csv"]
    assert sorted(os.listdir(out)) == sorted(p.name for p in written)  # no temporary left
    assert (out / "report.png").read_bytes()[:8] == PNG_MAGIC
    per_config = pd.read_csv(out / "report.csv")
    assert len(per_config) == 3 and {"mean", "std", "best", "n_runs"} <= set(per_config)
    raw = pd.read_csv(out / "runs.csv")
    assert len(raw) == 7 and "override.task.optimizer.lr" in raw
    md = (out / "report.md").read_text()
    assert md.startswith("# recon-report: 7 runs under") and "Few-shot" not in md


def fewshot_run(root: Path, config: str, way: int, shot: int, fold: int, last: float) -> None:
    write_run(
        root / config / f"{way}way_{shot}shot" / f"fold{fold}",
        config,
        0,
        {"last_epoch_acc": last, "best_epoch_acc_test_selected": last + 2},
        "last_epoch_acc",
        {"way": way, "shot": shot, "fold": fold, "dataset": "modelnet40_fewshot"},
        [f"experiment={config}", f"way={way}", f"shot={shot}", f"fold={fold}"],
    )


def test_fewshot_sweep_in_both_views(tmp_path):
    for fold, last in enumerate([80.0, 84.0]):
        for way, shot in [(5, 10), (10, 20)]:
            fewshot_run(tmp_path, "fewshot", way, shot, fold, last + way)
            fewshot_run(tmp_path, "mlp3_fewshot", way, shot, fold, last - 10)
    runs = load_runs(tmp_path)
    summary = summarise(runs)
    assert len(summary) == 4 and set(summary["over"]) == {"folds"}
    row = summary.iloc[0]
    assert (row["config_name"], row["differs_by"], row["n"]) == ("fewshot", "way=5, shot=10", 2)
    # The reference reports folds as mean ± std: no best-of-N for them.
    assert row["mean"] == 87.0 and math.isnan(row["best"])
    assert "| fewshot | way=5, shot=10 | last_epoch_acc | 2 (2 folds) | 87.00 ± 2.00 | – |" in (
        to_markdown(summary)
    )
    table = fewshot_table(runs)
    assert set(table["group"]) == {"config_name=fewshot", "config_name=mlp3_fewshot"}
    text = fewshot_markdown(table)
    assert "### config_name=mlp3_fewshot" in text
    assert "| last epoch | 72.0 ± 2.0 (n=2/10) | 72.0 ± 2.0 (n=2/10) |" in text
    assert "| best epoch, test-selected (reference) | 89.0 ± 2.0 (n=2/10) |" in text
    out = tmp_path / "out"
    write_report(build_report(tmp_path), out, plot=False)
    assert pd.read_csv(out / "fewshot.csv").columns[0] == "group"  # two configurations
    assert not (out / "report.png").exists()


def test_malformed_file_is_named_or_skipped(sweep):
    bad = sweep / "demo" / "results.json"
    bad.parent.mkdir()
    bad.write_text(json.dumps({"pretrained_acc": 0.9}))  # e.g. recon-demo's own summary
    with pytest.raises(ValueError, match=f"{bad}.*not a recon-lightning results.json"):
        load_runs(sweep)
    broken = sweep / "broken" / "results.json"
    broken.parent.mkdir()
    broken.write_text('{"schema": 1, "metrics": ')
    runs = load_runs(sweep, on_error="skip")
    assert len(runs) == 7 and [p for p, _ in runs.attrs["skipped"]] == [str(broken), str(bad)]
    report = build_report(sweep, on_error="skip")
    assert "## Skipped files" in report.markdown and str(broken) in report.markdown


def test_newer_schema_and_bad_headline_are_named(tmp_path):
    path = write_run(tmp_path / "a", "x", 0, {"acc": 1.0}, "acc")
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "schema": 99}))
    with pytest.raises(ValueError, match=f"{path} has results schema 99"):
        load_runs(tmp_path)
    path.write_text(json.dumps({**record, "headline": {"metric": "acc", "value": "high"}}))
    with pytest.raises(ValueError, match=f"{path}: headline value 'high' is not a number"):
        load_runs(tmp_path)
    overrides = tmp_path / "o.yaml"
    overrides.write_text("a: 1\n")
    with pytest.raises(ValueError, match="not a Hydra overrides list"):
        read_overrides(overrides)


def test_empty_folder_and_unfinished_runs(tmp_path):
    with pytest.raises(NoRunsError, match=f"no results.json found under {tmp_path}"):
        load_runs(tmp_path)
    (tmp_path / "0" / ".hydra").mkdir(parents=True)
    (tmp_path / "0" / ".hydra" / "config.yaml").write_text("seed: 0\n")
    with pytest.raises(NoRunsError, match="1 Hydra run folder.*without one.*: 0"):
        load_runs(tmp_path)
    # DDP: rank 0 wrote the record; other ranks leave logs but no .hydra/ and no results.json.
    write_run(tmp_path / "1", "x", 0, {"acc": 1.0}, "acc", overrides=["seed=0"])
    (tmp_path / "1" / "train_ddp_process_1.log").write_text("rank 1\n")
    runs = load_runs(tmp_path)
    assert len(runs) == 1 and runs.attrs["incomplete"] == ["0"]
    assert "- `0`" in build_report(tmp_path).markdown


def test_run_without_headline_value_counts_as_missing(tmp_path):
    write_run(tmp_path / "a", "x", 0, {"acc": 90.0}, "acc")
    write_run(tmp_path / "b", "x", 1, {"acc": 92.0}, "acc")
    write_run(tmp_path / "c", "x", 2, {}, None)  # nothing evaluated (val and test off)
    summary = summarise(load_runs(tmp_path))
    # The headline metric is part of the configuration: the run without one is its own row.
    assert summary["metric"].iloc[0] == "acc" and pd.isna(summary["metric"].iloc[1])
    assert summary[["n_runs", "n_missing"]].values.tolist() == [[2, 0], [0, 1]]
    assert "| x | – | – | 0, 1 without a value | – | – |" in to_markdown(summary)


def test_plot_runs_is_a_headless_figure(sweep):
    runs = load_runs(sweep)
    fig = plot_runs(runs)
    (ax,) = fig.axes
    assert len(ax.get_yticklabels()) == 3
    assert "task.optimizer.lr=1e-4" in ax.get_yticklabels()[0].get_text()
    fig = plot_runs(runs, metric="vote_acc")
    assert "vote_acc" in fig.axes[0].get_xlabel()


def test_cli_writes_tables_and_fails_clearly(sweep, tmp_path, capsys):
    report_cli.main([str(sweep), "--out", str(tmp_path / "r"), "--ddof", "1", "--no-plot"])
    printed = capsys.readouterr().out
    assert "std with ddof=1" in printed and (tmp_path / "r" / "report.md").read_text() == printed
    assert not (tmp_path / "r" / "report.png").exists()
    report_cli.main([str(sweep), "--out", str(tmp_path / "m"), "--metric", "vote_acc"])
    assert "## Per configuration (`vote_acc`)" in capsys.readouterr().out
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in ([str(empty)], [str(tmp_path / "nope")], [str(sweep), "--metric", "nope"]):
        with pytest.raises(SystemExit) as info:
            report_cli.main(argv)
        assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"no results.json found under {empty}" in err and "does not exist" in err
    assert "no run records metric 'nope'" in err
