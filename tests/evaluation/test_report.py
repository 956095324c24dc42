"""results.json writing and the few-shot view of the report on known numbers."""

from __future__ import annotations

import json
import math
import os

import pytest

from recon_lightning.evaluation.report import (
    NoRunsError,
    build_report,
    fewshot_markdown,
    fewshot_table,
    fmt_mean_std,
    load_runs,
    summarise,
)
from recon_lightning.evaluation.results import build_results, read_results, write_json_atomic


def fewshot_record(way: int, shot: int, fold: int, last: float, best: float) -> dict:
    return build_results(
        "classification",
        {"config_name": "fewshot", "seed": 0},
        {"last_epoch_acc": last, "best_epoch_acc_test_selected": best},
        "last_epoch_acc",
        {"way": way, "shot": shot, "fold": fold},
    )


def test_write_json_atomic_replaces_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "run" / "results.json"
    write_json_atomic(path, {"a": 1, "nan": float("nan"), "p": tmp_path})
    write_json_atomic(path, {"a": 2})
    assert json.loads(path.read_text()) == {"a": 2}
    assert os.listdir(path.parent) == ["results.json"]
    write_json_atomic(path, {"nan": float("nan"), "p": tmp_path})
    assert json.loads(path.read_text()) == {"nan": None, "p": str(tmp_path)}


def test_build_results_requires_headline_and_round_trips(tmp_path):
    with pytest.raises(KeyError, match="headline"):
        build_results("svm", {}, {"svm_acc": 1.0}, "acc")
    record = build_results("svm", {"seed": 3}, {"svm_acc": 91.5}, "svm_acc", notes={"x": "y"})
    write_json_atomic(tmp_path / "results.json", record)
    back = read_results(tmp_path / "results.json")
    assert back["headline"] == {"metric": "svm_acc", "value": 91.5} and back["seed"] == 3
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="not a recon-lightning results"):
        read_results(tmp_path / "bad.json")


def test_fmt_mean_std():
    assert fmt_mean_std(93.0, math.sqrt(5.0), 4, 1) == "93.0 ± 2.2"
    assert fmt_mean_std(5.0, 0.0, 1, 1) == "5.0"  # one value: no spread to quote
    assert fmt_mean_std(math.nan, math.nan, 0) == "–"


def test_fewshot_mean_std_over_folds(tmp_path):
    # 5-way 10-shot: ten folds, last = 90..99 (mean 94.5, population std sqrt(8.25)).
    for fold in range(10):
        record = fewshot_record(5, 10, fold, 90.0 + fold, 100.0)
        write_json_atomic(tmp_path / f"5way_10shot/fold{fold}/results.json", record)
    # 10-way 20-shot: two folds, fold 1 run twice (two seeds) -> averaged within the fold first.
    for i, (fold, last) in enumerate([(0, 80.0), (1, 90.0), (1, 94.0)]):
        record = fewshot_record(10, 20, fold, last, last + 1)
        write_json_atomic(tmp_path / f"10way_20shot/run{i}/results.json", record)
    table = fewshot_table(load_runs(tmp_path))
    by = {(r.setting, r.metric): r for r in table.itertuples()}
    a = by[("5-way 10-shot", "last_epoch_acc")]
    assert (a.n_folds, a.n_runs) == (10, 10)
    assert a.mean == pytest.approx(94.5) and a.std == pytest.approx(math.sqrt(8.25))
    b = by[("10-way 20-shot", "last_epoch_acc")]
    assert (b.n_folds, b.n_runs) == (2, 3)
    assert b.mean == pytest.approx(86.0) and b.std == pytest.approx(6.0)
    assert by[("10-way 20-shot", "best_epoch_acc_test_selected")].mean == pytest.approx(87.0)
    assert (table["group"] == "").all()  # one configuration
    text = fewshot_markdown(table)
    assert text.splitlines()[0] == "| ModelNet40 few-shot | 5-way 10-shot | 10-way 20-shot |"
    assert "| last epoch | 94.5 ± 2.9 | 86.0 ± 6.0 (n=2/10) |" in text
    assert "best epoch, test-selected (reference)" in text


def test_paper_column_order_and_other_runs(tmp_path):
    for i, (w, s) in enumerate([(10, 20), (5, 20), (5, 10)]):
        write_json_atomic(tmp_path / f"fs{i}/results.json", fewshot_record(w, s, 0, 50.0, 60.0))
    for seed, v in enumerate((92.0, 94.0)):
        record = build_results(
            "svm", {"config_name": "svm_modelnet40", "seed": seed}, {"svm_acc": v}, "svm_acc"
        )
        write_json_atomic(tmp_path / f"svm{seed}/results.json", record)
    runs = load_runs(tmp_path)
    settings = list(dict.fromkeys(fewshot_table(runs)["setting"]))
    assert settings == ["5-way 10-shot", "5-way 20-shot", "10-way 20-shot"]
    summary = summarise(runs)
    (row,) = summary[summary.config_name == "svm_modelnet40"].itertuples()
    assert (row.metric, row.n_runs, row.over, row.seeds) == ("svm_acc", 2, "seeds", "0,1")
    assert row.mean == pytest.approx(93.0) and row.std == pytest.approx(1.0) and row.best == 94.0


def test_report_of_empty_and_missing_folders(tmp_path):
    with pytest.raises(NoRunsError, match="no results.json found under"):
        build_report(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_report(tmp_path / "nope")
