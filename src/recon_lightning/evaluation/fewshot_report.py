"""Aggregate runs' ``results.json`` files into tables (``recon-report``).

- Few-shot (spec §4.5): per ``way``-way ``shot``-shot setting, mean ± std over folds, for the
  last-epoch accuracy (headline) and, beside it, the reference's best epoch selected on the
  fold's test set. Several runs of one fold (e.g. seeds) are averaged within the fold first.
- Everything else: per config name (and dataset), mean ± std of the headline metric over runs.

Standard deviations use ``ddof`` (0 = population std, numpy's default; the reference does not
say which it used).
"""

from __future__ import annotations

import csv
import io
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .results import RESULTS_FILE, read_results

#: The paper's few-shot columns, in its order.
PAPER_SETTINGS: tuple[tuple[int, int], ...] = ((5, 10), (5, 20), (10, 10), (10, 20))

#: Few-shot rows: (metric key in results.json, row label).
FEWSHOT_METRICS: tuple[tuple[str, str], ...] = (
    ("last_epoch_acc", "last epoch"),
    ("best_epoch_acc_test_selected", "best epoch, test-selected (reference)"),
)

FOLDS = 10


@dataclass
class Stat:
    """Mean ± std of a list of values."""

    values: list[float] = field(default_factory=list)
    ddof: int = 0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n if self.n else math.nan

    @property
    def std(self) -> float:
        if self.n - self.ddof <= 0:
            return math.nan
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - self.ddof))

    def fmt(self, digits: int = 1) -> str:
        if not self.n:
            return "–"
        if math.isnan(self.std):
            return f"{self.mean:.{digits}f}"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


def collect(root: str | Path) -> list[dict[str, Any]]:
    """Every ``results.json`` under ``root`` (recursively), each with its ``path`` added."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root} does not exist")
    records = []
    for path in sorted(root.rglob(RESULTS_FILE)):
        record = read_results(path)
        record["path"] = str(path)
        records.append(record)
    return records


def is_fewshot(record: dict[str, Any]) -> bool:
    """A record of a few-shot run (its setting names way, shot and fold)."""
    setting = record.get("setting") or {}
    return all(setting.get(k) is not None for k in ("way", "shot", "fold"))


def fewshot_stats(
    records: Iterable[dict[str, Any]], metric: str, ddof: int = 0
) -> dict[tuple[int, int], tuple[Stat, int]]:
    """Per ``(way, shot)``: the fold statistic of ``metric`` and the number of runs behind it.

    Runs of the same fold are averaged before the statistic over folds.
    """
    per_fold: dict[tuple[int, int], dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for record in records:
        value = record["metrics"].get(metric)
        if value is None or not is_fewshot(record):
            continue
        s = record["setting"]
        per_fold[(int(s["way"]), int(s["shot"]))][int(s["fold"])].append(float(value))
    out = {}
    for key, folds in per_fold.items():
        fold_means = [sum(v) / len(v) for _, v in sorted(folds.items())]
        out[key] = (Stat(fold_means, ddof), sum(len(v) for v in folds.values()))
    return out


def fewshot_rows(records: Sequence[dict[str, Any]], ddof: int = 0) -> list[dict[str, Any]]:
    """Long-format rows: one per (setting, metric) with n_folds, n_runs, mean, std."""
    rows = []
    for metric, label in FEWSHOT_METRICS:
        stats = fewshot_stats(records, metric, ddof)
        settings = [s for s in PAPER_SETTINGS if s in stats]
        settings += sorted(s for s in stats if s not in PAPER_SETTINGS)
        for way, shot in settings:
            stat, runs = stats[(way, shot)]
            rows.append(
                {
                    "setting": f"{way}-way {shot}-shot",
                    "way": way,
                    "shot": shot,
                    "metric": metric,
                    "label": label,
                    "n_folds": stat.n,
                    "n_runs": runs,
                    "mean": stat.mean,
                    "std": stat.std,
                    "cell": stat.fmt(),
                }
            )
    return rows


def run_rows(records: Sequence[dict[str, Any]], ddof: int = 0) -> list[dict[str, Any]]:
    """Non-few-shot runs: per (config name, dataset, headline metric) the statistic over runs."""
    groups: dict[tuple[str, str, str], Stat] = {}
    for record in records:
        if is_fewshot(record):
            continue
        headline = record.get("headline") or {}
        if headline.get("value") is None:
            continue
        key = (
            str(record.get("config_name")),
            str((record.get("setting") or {}).get("dataset")),
            str(headline.get("metric")),
        )
        groups.setdefault(key, Stat(ddof=ddof)).values.append(float(headline["value"]))
    return [
        {
            "config_name": name,
            "dataset": dataset,
            "metric": metric,
            "n_runs": stat.n,
            "mean": stat.mean,
            "std": stat.std,
            "cell": stat.fmt(2),
        }
        for (name, dataset, metric), stat in sorted(groups.items())
    ]


def fewshot_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The paper's few-shot table: settings as columns, metrics as rows, ``mean ± std``."""
    settings = list(dict.fromkeys(r["setting"] for r in rows))
    header = "| ModelNet40 few-shot | " + " | ".join(settings) + " |"
    lines = [header, "|---" * (len(settings) + 1) + "|"]
    for metric, label in FEWSHOT_METRICS:
        cells = []
        for setting in settings:
            row = next((r for r in rows if r["setting"] == setting and r["metric"] == metric), None)
            if row is None:
                cells.append("–")
                continue
            folds = "" if row["n_folds"] == FOLDS else f" (n={row['n_folds']}/{FOLDS})"
            cells.append(row["cell"] + folds)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """One line per config: headline metric mean ± std over runs."""
    lines = ["| config | dataset | metric | runs | mean ± std |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['config_name']} | {r['dataset']} | {r['metric']} | {r['n_runs']} | {r['cell']} |"
        )
    return "\n".join(lines)


def to_csv(rows: Sequence[dict[str, Any]]) -> str:
    """Rows as CSV text (columns of the first row; the ``cell`` display column dropped)."""
    if not rows:
        return ""
    columns = [c for c in rows[0] if c != "cell"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def report(root: str | Path, ddof: int = 0) -> dict[str, Any]:
    """Collect ``root``'s runs and build both tables.

    Returns:
        ``{"records", "fewshot_rows", "run_rows", "markdown"}``; ``markdown`` holds whichever
        tables have rows, each under a heading.
    """
    records = collect(root)
    fs_rows = fewshot_rows(records, ddof)
    other_rows = run_rows(records, ddof)
    parts = [f"{len(records)} runs under {root}; std with ddof={ddof}"]
    if fs_rows:
        parts += ["## Few-shot (mean ± std over folds)", fewshot_markdown(fs_rows)]
    if other_rows:
        parts += ["## Runs (headline metric, mean ± std over runs)", runs_markdown(other_rows)]
    return {
        "records": records,
        "fewshot_rows": fs_rows,
        "run_rows": other_rows,
        "markdown": "\n\n".join(parts) + "\n",
    }
