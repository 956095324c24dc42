"""results.json writing and the few-shot / per-config aggregation on known numbers."""

from __future__ import annotations

import json
import math
import os

import pytest

from recon_lightning.evaluation.fewshot_report import (
    Stat,
    collect,
    fewshot_markdown,
    fewshot_rows,
    report,
    run_rows,
    to_csv,
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


def test_stat_mean_and_std():
    s = Stat([90.0, 92.0, 94.0, 96.0])
    assert s.mean == 93.0
    assert s.std == pytest.approx(math.sqrt(5.0))  # population std (ddof 0)
    assert Stat([90.0, 92.0, 94.0, 96.0], ddof=1).std == pytest.approx(math.sqrt(20 / 3))
    assert s.fmt() == "93.0 ± 2.2"
    assert Stat([]).fmt() == "–" and Stat([5.0], ddof=1).fmt() == "5.0"


def test_fewshot_mean_std_over_folds(tmp_path):
    # 5-way 10-shot: ten folds, last = 90..99 (mean 94.5, population std sqrt(8.25)).
    for fold in range(10):
        record = fewshot_record(5, 10, fold, 90.0 + fold, 100.0)
        write_json_atomic(tmp_path / f"5way_10shot/fold{fold}/results.json", record)
    # 10-way 20-shot: two folds, fold 1 run twice (two seeds) -> averaged within the fold first.
    for i, (fold, last) in enumerate([(0, 80.0), (1, 90.0), (1, 94.0)]):
        record = fewshot_record(10, 20, fold, last, last + 1)
        write_json_atomic(tmp_path / f"10way_20shot/run{i}/results.json", record)
    rows = fewshot_rows(collect(tmp_path))
    by = {(r["setting"], r["metric"]): r for r in rows}
    a = by[("5-way 10-shot", "last_epoch_acc")]
    assert (a["n_folds"], a["n_runs"]) == (10, 10)
    assert a["mean"] == pytest.approx(94.5) and a["std"] == pytest.approx(math.sqrt(8.25))
    b = by[("10-way 20-shot", "last_epoch_acc")]
    assert (b["n_folds"], b["n_runs"]) == (2, 3)
    assert b["mean"] == pytest.approx(86.0) and b["std"] == pytest.approx(6.0)
    assert by[("10-way 20-shot", "best_epoch_acc_test_selected")]["mean"] == pytest.approx(87.0)
    table = fewshot_markdown(rows)
    assert table.splitlines()[0] == "| ModelNet40 few-shot | 5-way 10-shot | 10-way 20-shot |"
    assert "| last epoch | 94.5 ± 2.9 | 86.0 ± 6.0 (n=2/10) |" in table
    assert "best epoch, test-selected (reference)" in table
    csv_text = to_csv(rows)
    assert csv_text.splitlines()[0] == "setting,way,shot,metric,label,n_folds,n_runs,mean,std"
    assert len(csv_text.splitlines()) == 1 + len(rows)


def test_paper_column_order_and_other_runs(tmp_path):
    records = [fewshot_record(w, s, 0, 50.0, 60.0) for w, s in [(10, 20), (5, 20), (5, 10)]]
    settings = list(dict.fromkeys(r["setting"] for r in fewshot_rows(records)))
    assert settings == ["5-way 10-shot", "5-way 20-shot", "10-way 20-shot"]
    svm = [
        build_results("svm", {"config_name": "svm_modelnet40"}, {"svm_acc": v}, "svm_acc")
        for v in (92.0, 94.0)
    ]
    (row,) = run_rows(records + svm)
    assert (row["config_name"], row["metric"], row["n_runs"]) == ("svm_modelnet40", "svm_acc", 2)
    assert row["mean"] == pytest.approx(93.0) and row["cell"] == "93.00 ± 1.00"


def test_report_of_empty_and_missing_folders(tmp_path):
    out = report(tmp_path)
    assert out["records"] == [] and out["fewshot_rows"] == [] and out["run_rows"] == []
    with pytest.raises(FileNotFoundError):
        report(tmp_path / "nope")
