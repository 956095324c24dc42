"""Sweep tables from runs' ``results.json`` files (``recon-report`` and notebooks).

Every run writes one ``results.json`` (:mod:`.results`); a sweep is a folder of them, e.g. a
Hydra multirun (``multiruns/<date>/<job>/results.json`` beside ``<job>/.hydra/overrides.yaml``).
Under DDP only rank 0 writes, so one run is one file whatever the device count. This module reads
them into pandas and aggregates per configuration:

- :func:`load_runs`: one row per run: ``config_name``, ``task``, ``seed``, the headline
  (``metric``, ``value``), ``setting.<key>`` (what the task records about the experiment),
  ``metrics.<name>`` (every scalar metric) and ``override.<key>`` (the Hydra command-line
  overrides of the run, from ``.hydra/overrides.yaml`` when present).
- :func:`summarise`: one row per configuration. A configuration is the config name, task and
  headline metric plus every ``setting.*`` / ``override.*`` value except those that only vary
  the repetition (seed, fold) or where output goes (:data:`IGNORED_KEYS`). Per configuration:
  mean ± std of the value over seeds, or over folds when the runs have a ``fold`` (runs of one
  fold are averaged first, so extra seeds do not weigh a fold more); the best of the N runs,
  which is how the reference reports seed sweeps (optimistic, labelled as such, not given for
  folds where the reference reports the mean); the number of runs; and ``differs_by``, the keys
  whose values tell this row apart from the other rows of the same config name.
- :func:`fewshot_table` / :func:`fewshot_markdown`: the paper's few-shot view of the same runs
  (way/shot columns, mean ± std over folds, last epoch and the reference's test-selected best).
- :func:`to_markdown`, :func:`plot_runs`, :func:`build_report`, :func:`write_report`: the
  outputs of ``recon-report`` (``report.md``, ``report.csv``, ``runs.csv``, ``fewshot.csv``,
  ``report.png``), written atomically.

Standard deviations use ``ddof`` (0 = population std, numpy's default; the reference does not
say which it used).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from .. import atomic_io
from .results import RESULTS_FILE, SCHEMA_VERSION, read_results

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Label of the best-of-N column: the reference's way of reporting a seed sweep.
BEST_LABEL = "best of N (reference convention)"

#: Keys (bare names, after ``setting.`` / ``override.``) that repeat a configuration rather than
#: change it, and override prefixes that only change where or how a run logs.
IGNORED_KEYS: tuple[str, ...] = ("seed", "fold")
IGNORED_OVERRIDE_PREFIXES: tuple[str, ...] = (
    "paths.",
    "hydra.",
    "logger",
    "callbacks",
    "resume",
    "trainer.enable_progress_bar",
    "data.num_workers",
)

#: Override names that repeat a recorded fact under another name (shown once, as the fact).
OVERRIDE_ALIASES: dict[str, str] = {"ckpt_path": "initialised_from", "experiment": "config_name"}

#: The paper's few-shot columns, in its order.
PAPER_SETTINGS: tuple[tuple[int, int], ...] = ((5, 10), (5, 20), (10, 10), (10, 20))

#: Few-shot rows: (metric key in results.json, row label).
FEWSHOT_METRICS: tuple[tuple[str, str], ...] = (
    ("last_epoch_acc", "last epoch"),
    ("best_epoch_acc_test_selected", "best epoch, test-selected (reference)"),
)

#: Folds of the paper's few-shot protocol.
FOLDS = 10

#: Hydra's record of a run's command-line overrides, relative to the run folder.
OVERRIDES_FILE = Path(".hydra") / "overrides.yaml"


class NoRunsError(FileNotFoundError):
    """A folder holds no ``results.json`` to report on."""


# ---------------------------------------------------------------------------------- loading


def _scalar(value: Any) -> Any:
    """A cell value: lists and dicts as compact JSON text (hashable, readable in a CSV)."""
    if isinstance(value, list | dict):
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    return value


def read_overrides(path: Path) -> dict[str, str]:
    """``key -> value`` of a Hydra ``overrides.yaml`` (``+``/``++`` dropped, ``~key`` deleted).

    Raises:
        ValueError: the file is not a YAML list of strings; the message names it.
    """
    import yaml

    try:
        items = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ValueError(f"cannot read Hydra overrides {path}: {err}") from err
    if items is None:
        return {}
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{path} is not a Hydra overrides list (a YAML list of 'key=value')")
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if key.startswith("~"):
            out[key[1:]] = "(deleted)"
        elif sep:
            out[key.lstrip("+")] = value
    return out


def _record_row(record: Mapping[str, Any], path: Path, root: Path) -> dict[str, Any]:
    """One run as a flat row (see :func:`load_runs`)."""
    schema = record.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise ValueError(
            f"{path} has results schema {schema!r}; this version reads schema <= "
            f"{SCHEMA_VERSION} (upgrade recon-lightning to read it)"
        )
    metrics = record.get("metrics")
    setting = record.get("setting") or {}
    headline = record.get("headline") or {}
    if not isinstance(metrics, dict) or not isinstance(setting, dict):
        raise ValueError(f"{path}: 'metrics' and 'setting' must be JSON objects")
    if not isinstance(headline, dict):
        raise ValueError(f"{path}: 'headline' must be a JSON object")
    value = headline.get("value")
    if value is not None and not isinstance(value, int | float):
        raise ValueError(f"{path}: headline value {value!r} is not a number")
    run_dir = path.parent
    row: dict[str, Any] = {
        "run": run_dir.relative_to(root).as_posix() if run_dir != root else ".",
        "path": str(path),
        "task": record.get("task"),
        "config_name": record.get("config_name"),
        "seed": record.get("seed"),
        "metric": headline.get("metric"),
        "value": math.nan if value is None else float(value),
        "checkpoint": record.get("checkpoint"),
        "wall_time_s": record.get("wall_time_s"),
    }
    row.update({f"setting.{k}": _scalar(v) for k, v in setting.items()})
    for name, v in metrics.items():
        # Scalars only: per-category dicts stay in the file (and in ``records``).
        if isinstance(v, int | float) and not isinstance(v, bool):
            row[f"metrics.{name}"] = float(v)
        elif v is None:
            row[f"metrics.{name}"] = math.nan
    overrides = run_dir / OVERRIDES_FILE
    if overrides.is_file():
        row.update({f"override.{k}": v for k, v in read_overrides(overrides).items()})
    return row


def incomplete_runs(root: str | os.PathLike[str]) -> list[str]:
    """Hydra run folders under ``root`` (with ``.hydra/config.yaml``) that hold no results file.

    A crashed or still running job; listed in the report so a short sweep is not mistaken for a
    complete one.
    """
    root = Path(root)
    return sorted(
        (p.parent.parent.relative_to(root).as_posix() or ".")
        for p in root.rglob("config.yaml")
        if p.parent.name == ".hydra" and not (p.parent.parent / RESULTS_FILE).is_file()
    )


def load_runs(
    root: str | os.PathLike[str], on_error: str = "raise", records: list | None = None
) -> pd.DataFrame:
    """Every ``results.json`` under ``root`` (recursively) as one DataFrame row per run.

    Columns: ``run`` (folder relative to ``root``), ``path``, ``task``, ``config_name``,
    ``seed``, ``metric`` / ``value`` (the headline; NaN when nothing was evaluated),
    ``checkpoint``, ``wall_time_s``, ``setting.<key>``, ``metrics.<name>`` (scalars) and
    ``override.<key>`` (Hydra overrides, when the run folder has ``.hydra/overrides.yaml``).
    ``df.attrs`` holds ``root``, ``skipped`` (``[(path, reason)]``) and ``incomplete``
    (see :func:`incomplete_runs`).

    Args:
        root: a run folder, a multirun folder, or any folder above them.
        on_error: ``"raise"`` (default) or ``"skip"`` files that are not results records
            (listed in ``df.attrs["skipped"]``).
        records: if given, the parsed records are appended to it (for per-category dicts).

    Raises:
        FileNotFoundError: ``root`` does not exist.
        NoRunsError: no readable ``results.json`` under ``root``.
        ValueError: a malformed ``results.json`` (with ``on_error="raise"``); names the file.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip'; got {on_error!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist or is not a folder")
    rows, skipped = [], []
    for path in sorted(root.rglob(RESULTS_FILE)):
        try:
            record = read_results(path)
            rows.append(_record_row(record, path, root))
        except ValueError as err:
            if on_error == "raise":
                raise ValueError(
                    f"{err} (use --skip-invalid / on_error='skip' to skip it)"
                ) from err
            skipped.append((str(path), str(err)))
            continue
        if records is not None:
            records.append({**record, "path": str(path)})
    incomplete = incomplete_runs(root)
    if not rows:
        found = f"; {len(skipped)} unreadable file(s) skipped" if skipped else ""
        pending = (
            f"; {len(incomplete)} Hydra run folder(s) without one (crashed or running?): "
            + ", ".join(incomplete[:5])
            if incomplete
            else ""
        )
        raise NoRunsError(
            f"no results.json found under {root} (searched recursively){found}{pending}"
        )
    df = pd.DataFrame(rows)
    # Facts keep their JSON types (an int way stays 5, not 5.0 beside a run that lacks it).
    for column in df.columns:
        if column not in ("value", "wall_time_s") and not column.startswith("metrics."):
            df[column] = pd.Series([row.get(column) for row in rows], dtype=object, index=df.index)
    # Run facts, then settings, overrides and metrics, each in the order the runs write them.
    prefixes = ("setting.", "override.", "metrics.")
    ordered = [c for c in df.columns if not c.startswith(prefixes)]
    for prefix in prefixes:
        ordered += [c for c in df.columns if c.startswith(prefix)]
    df = df[ordered]
    df.attrs.update(root=str(root), skipped=skipped, incomplete=incomplete)
    return df


# ------------------------------------------------------------------------------ aggregation


def _bare(column: str) -> str:
    """``setting.way`` -> ``way``; ``override.task.optimizer.lr`` -> ``task.optimizer.lr``."""
    return column.split(".", 1)[1] if column.startswith(("setting.", "override.")) else column


def config_keys(runs: pd.DataFrame, ignore: Iterable[str] = ()) -> list[str]:
    """The columns that identify a configuration (see the module docstring).

    Args:
        runs: output of :func:`load_runs`.
        ignore: more bare key names (``"trainer.devices"``) or column names to leave out.
    """
    ignore = set(ignore)
    keys = ["config_name", "task"]
    for column in runs.columns:
        if not column.startswith(("setting.", "override.")):
            continue
        bare = _bare(column)
        if bare in IGNORED_KEYS or bare in ignore or column in ignore:
            continue
        if column.startswith("override.") and bare.startswith(IGNORED_OVERRIDE_PREFIXES):
            continue
        keys.append(column)
    return keys


def _canon(value: Any) -> str:
    """Comparable text of a key value (NaN/None -> empty; 5 and "5" and 5.0 alike)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _fold_column(runs: pd.DataFrame) -> str | None:
    for column in ("setting.fold", "override.fold"):
        if column in runs.columns:
            return column
    return None


def _stats(values: np.ndarray, ddof: int) -> tuple[float, float]:
    """Mean and std (NaN where undefined) of finite ``values``."""
    if len(values) == 0:
        return math.nan, math.nan
    std = float(np.std(values, ddof=ddof)) if len(values) - ddof > 0 else math.nan
    return float(np.mean(values)), std


def _display_keys(keys: Sequence[str]) -> list[str]:
    """``keys`` without overrides that repeat a recorded fact (``way=5`` -> ``setting.way``,
    ``experiment=NAME`` -> ``config_name``), so each difference is shown once."""
    facts = {_bare(k) for k in keys if not k.startswith("override.")}
    return [
        k
        for k in keys
        if not (k.startswith("override.") and OVERRIDE_ALIASES.get(_bare(k), _bare(k)) in facts)
    ]


def _differs_by(summary: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Per row: ``k=v`` for the keys whose values differ among rows of its config name."""
    shown = [k for k in _display_keys(keys) if k not in ("config_name", "task")]
    out = [""] * len(summary)
    for _, idx in summary.groupby(["config_name", "task"], dropna=False, sort=False).groups.items():
        rows = summary.loc[idx]
        varying = [k for k in shown if rows[k].map(_canon).nunique(dropna=False) > 1]
        for i in idx:
            parts = []
            for k in varying:
                text = _canon(summary.at[i, k])
                default = "(default)" if k.startswith("override.") else "(none)"
                parts.append(f"{_bare(k)}={text or default}")
            out[summary.index.get_loc(i)] = ", ".join(parts)
    return out


def summarise(
    runs: pd.DataFrame,
    metric: str | None = None,
    ddof: int = 0,
    ignore: Iterable[str] = (),
) -> pd.DataFrame:
    """One row per configuration: mean ± std over seeds (or folds), best of N, run counts.

    Args:
        runs: output of :func:`load_runs`.
        metric: a metric name (``"best_epoch_acc_test_selected"``) to aggregate instead of each
            run's headline; runs without it count as missing.
        ddof: delta degrees of freedom of the std (0: population).
        ignore: more keys that do not tell configurations apart (see :func:`config_keys`).

    Returns:
        Columns ``config_name``, ``differs_by``, ``task``, ``metric``, ``over`` (``seeds`` or
        ``folds``), ``n`` (seeds or folds behind the statistic), ``n_runs`` (runs with a value),
        ``n_missing`` (runs without), ``mean``, ``std``, ``best`` (max over the runs; NaN for
        folds), ``seeds`` (text), then the configuration's key columns. Sorted by config name,
        then key values.
    """
    if runs.empty:
        raise ValueError("no runs to summarise (an empty selection?)")
    if metric is None:
        value_col, keys = "value", [*config_keys(runs, ignore), "metric"]
    else:
        value_col, keys = f"metrics.{metric}", config_keys(runs, ignore)
        if value_col not in runs.columns:
            raise KeyError(f"no run records metric {metric!r}")
    fold_col = _fold_column(runs)
    canon = runs[keys].map(_canon)
    rows = []
    for _, idx in canon.groupby(keys, sort=False, dropna=False).groups.items():
        group = runs.loc[idx]
        values = group[value_col].astype(float)
        have = group[values.notna()]
        folds = fold_col is not None and group[fold_col].notna().all()
        if folds:
            per_fold = have.groupby(have[fold_col].map(_canon))[value_col].mean()
            mean, std = _stats(per_fold.to_numpy(dtype=float), ddof)
            n, best = len(per_fold), math.nan
        else:
            mean, std = _stats(have[value_col].to_numpy(dtype=float), ddof)
            n = len(have)
            best = float(have[value_col].max()) if len(have) else math.nan
        seeds = sorted({_canon(s) for s in group["seed"]} - {""}, key=_natural)
        first = group.iloc[0]
        rows.append(
            {
                "config_name": first["config_name"],
                "differs_by": "",
                "task": first["task"],
                "metric": first["metric"] if metric is None else metric,
                "over": "folds" if folds else "seeds",
                "n": n,
                "n_runs": len(have),
                "n_missing": len(group) - len(have),
                "mean": mean,
                "std": std,
                "best": best,
                "seeds": ",".join(seeds),
                **{k: first[k] for k in keys if k not in ("config_name", "task", "metric")},
            }
        )
    summary = pd.DataFrame(rows)
    for column in summary.columns:
        if column.startswith(("setting.", "override.")):  # keep JSON types, as in load_runs
            summary[column] = pd.Series([r.get(column) for r in rows], dtype=object)
    # Natural order of the key values (way 5 before 10), config name first.
    order = sorted(
        range(len(summary)),
        key=lambda i: [_natural(_canon(summary.at[i, k])) for k in keys if k in summary.columns],
    )
    summary = summary.loc[order].reset_index(drop=True)
    summary["differs_by"] = _differs_by(summary, [k for k in keys if k != "metric"])
    return summary.reset_index(drop=True)


def _natural(text: str) -> tuple[int, float, str]:
    """Sort key: numbers by value, then other text, then unset values."""
    if not text:
        return (2, 0.0, "")
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


# ------------------------------------------------------------------------------ formatting


def fmt_mean_std(mean: float, std: float, n: int, digits: int = 2) -> str:
    """``mean ± std``; the mean alone for one value or an undefined std; ``–`` for none."""
    if n == 0 or math.isnan(mean):
        return "–"
    if n == 1 or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub pipe table (``|`` in cells escaped) without extra dependencies."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|---" * len(header) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _runs_cell(row: Mapping[str, Any]) -> str:
    text = str(row["n_runs"])
    if row["over"] == "folds":
        text += f" ({row['n']} folds)"
    if row["n_missing"]:
        text += f", {row['n_missing']} without a value"
    return text


def to_markdown(summary: pd.DataFrame, digits: int = 2) -> str:
    """The per-configuration table of :func:`summarise` as Markdown.

    Columns: config, differs by, metric, runs, mean ± std, best of N (reference convention).
    """
    rows = []
    for _, r in summary.iterrows():
        best = "–" if math.isnan(r["best"]) else f"{r['best']:.{digits}f} (N={r['n_runs']})"
        rows.append(
            (
                r["config_name"],
                r["differs_by"] or "–",
                r["metric"] if isinstance(r["metric"], str) else "–",
                _runs_cell(r),
                fmt_mean_std(r["mean"], r["std"], r["n"], digits),
                best,
            )
        )
    header = ("config", "differs by", "metric", "runs", "mean ± std", BEST_LABEL)
    return markdown_table(header, rows)


# ---------------------------------------------------------------------------- few-shot view


def is_fewshot(runs: pd.DataFrame) -> pd.Series:
    """Which runs are few-shot runs (their setting names way, shot and fold)."""
    columns = ("setting.way", "setting.shot", "setting.fold")
    if not all(c in runs.columns for c in columns):
        return pd.Series(False, index=runs.index)
    return runs[list(columns)].notna().all(axis=1)


def fewshot_table(runs: pd.DataFrame, ddof: int = 0, ignore: Iterable[str] = ()) -> pd.DataFrame:
    """The paper's few-shot numbers: per configuration, way/shot and metric, over folds.

    Returns:
        Long format, one row per (configuration, setting, metric): ``group`` (the configuration
        without way/shot, as ``differs_by`` text; empty when there is one), ``setting``
        (``"5-way 10-shot"``), ``way``, ``shot``, ``metric``, ``label``, ``n_folds``,
        ``n_runs``, ``mean``, ``std``. Paper settings first, in the paper's order.
    """
    fs = runs[is_fewshot(runs)]
    columns = ["group", "setting", "way", "shot", "metric", "label", "n_folds", "n_runs"]
    empty = pd.DataFrame(columns=[*columns, "mean", "std"])
    if fs.empty:
        return empty
    ignore = {*ignore, "way", "shot"}
    parts = []
    for metric, label in FEWSHOT_METRICS:
        if f"metrics.{metric}" not in fs.columns:
            continue
        # way/shot are ignored as keys and become columns: one summary per (way, shot) slice.
        for (way, shot), sub in fs.groupby(["setting.way", "setting.shot"]):
            s = summarise(sub, metric=metric, ddof=ddof, ignore=ignore)
            s["way"], s["shot"], s["label"] = int(way), int(shot), label
            parts.append(s)
    if not parts:  # few-shot runs without the few-shot metrics
        return empty
    table = pd.concat(parts, ignore_index=True)
    # Name each configuration by its keys that vary across the whole few-shot view.
    keys = _display_keys(config_keys(fs, ignore))
    group_rows = table[keys].map(_canon)
    varying = [k for k in keys if group_rows[k].nunique() > 1]
    table["group"] = [
        ", ".join(f"{_bare(k)}={_canon(row[k]) or '(default)'}" for k in varying)
        for _, row in table.iterrows()
    ]
    order = {s: i for i, s in enumerate(PAPER_SETTINGS)}
    table["_order"] = [
        order.get((w, s), len(order)) for w, s in zip(table.way, table.shot, strict=True)
    ]
    metric_order = {m: i for i, (m, _) in enumerate(FEWSHOT_METRICS)}
    table["_metric"] = table["metric"].map(metric_order)
    table = table.sort_values(["group", "_metric", "_order", "way", "shot"], kind="stable")
    table["setting"] = [f"{w}-way {s}-shot" for w, s in zip(table.way, table.shot, strict=True)]
    table = table.rename(columns={"n": "n_folds"})
    return table[[*columns, "mean", "std"]].reset_index(drop=True)


def fewshot_markdown(table: pd.DataFrame, digits: int = 1) -> str:
    """The paper's few-shot table(s): settings as columns, metrics as rows, ``mean ± std``.

    One table per configuration, under a ``###`` heading when there are several.
    """
    out = []
    for group, sub in table.groupby("group", sort=False):
        settings = list(dict.fromkeys(sub["setting"]))
        rows = []
        for metric, label in FEWSHOT_METRICS:
            cells = [label]
            for setting in settings:
                hit = sub[(sub["setting"] == setting) & (sub["metric"] == metric)]
                if hit.empty:
                    cells.append("–")
                    continue
                r = hit.iloc[0]
                folds = "" if r["n_folds"] == FOLDS else f" (n={r['n_folds']}/{FOLDS})"
                cells.append(fmt_mean_std(r["mean"], r["std"], r["n_folds"], digits) + folds)
            rows.append(cells)
        text = markdown_table(["ModelNet40 few-shot", *settings], rows)
        out.append(f"### {group}\n\n{text}" if group else text)
    return "\n\n".join(out)


# ----------------------------------------------------------------------------------- plot


def _horizontal() -> dict[str, Any]:
    """``boxplot`` keyword for horizontal boxes: ``orientation`` from matplotlib 3.10 on (where
    ``vert`` is deprecated), ``vert`` before."""
    import matplotlib

    version = tuple(int(p) for p in matplotlib.__version__.split(".")[:2] if p.isdigit())
    return {"orientation": "horizontal"} if version >= (3, 10) else {"vert": False}


def plot_runs(
    runs: pd.DataFrame,
    summary: pd.DataFrame | None = None,
    metric: str | None = None,
    **kwargs: Any,
) -> Figure:
    """Per-configuration distribution of the headline: a box per row of the summary, every run
    as a dot, the mean as a diamond.

    Uses a bare :class:`~matplotlib.figure.Figure` (no pyplot state), so it works headless and
    displays inline in a notebook.

    Args:
        runs: output of :func:`load_runs`.
        summary: :func:`summarise` of ``runs`` with the same ``metric`` (computed when omitted).
        metric: plot this metric instead of each run's headline.
        kwargs: passed to :func:`summarise` when it is computed here (e.g. ``ignore``).
    """
    from matplotlib.figure import Figure

    if summary is None:
        summary = summarise(runs, metric=metric, **kwargs)
    value_col = "value" if metric is None else f"metrics.{metric}"
    keys = [c for c in summary.columns if c.startswith(("setting.", "override."))]
    keys = ["config_name", "task", *[k for k in keys if k in runs.columns]]
    if metric is None:
        keys.append("metric")
    canon_runs = runs[keys].map(_canon)
    labels, data = [], []
    for _, row in summary.iterrows():
        match = np.ones(len(runs), dtype=bool)
        for k in keys:
            match &= (canon_runs[k] == _canon(row[k])).to_numpy()
        values = runs.loc[match, value_col].dropna().to_numpy(dtype=float)
        data.append(values)
        label = str(row["config_name"])
        if row["differs_by"]:
            label += "\n" + str(row["differs_by"])
        labels.append(f"{label}\n[{row['metric']}]")
    height = 1.0 + 0.6 * max(len(labels), 1)
    fig = Figure(figsize=(8, height), layout="constrained")
    ax = fig.add_subplot()
    positions = np.arange(1, len(data) + 1)
    box = {"positions": positions, "widths": 0.5, "showfliers": False, **_horizontal()}
    # An empty box (a configuration without values) is drawn as nothing.
    ax.boxplot([v if len(v) else [np.nan] for v in data], **box)
    rng = np.random.default_rng(0)  # jitter only: fixed so the picture is reproducible
    for pos, values in zip(positions, data, strict=True):
        jitter = rng.uniform(-0.12, 0.12, len(values))
        ax.scatter(values, pos + jitter, s=14, alpha=0.7, color="tab:blue", zorder=3)
        if len(values):
            ax.scatter([values.mean()], [pos], marker="D", s=30, color="tab:red", zorder=4)
    ax.set_yticks(positions, labels, fontsize=7)
    ax.invert_yaxis()
    what = "headline value" if metric is None else metric
    ax.set_xlabel(f"{what} per run (box: quartiles and median, dots: runs, diamond: mean)")
    ax.grid(axis="x", alpha=0.3)
    return fig


# --------------------------------------------------------------------------------- report


@dataclass
class Report:
    """Everything ``recon-report`` writes, built by :func:`build_report`."""

    root: Path
    runs: pd.DataFrame
    summary: pd.DataFrame
    fewshot: pd.DataFrame
    markdown: str
    ddof: int = 0
    metric: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)


def build_report(
    root: str | os.PathLike[str],
    ddof: int = 0,
    metric: str | None = None,
    on_error: str = "raise",
    ignore: Iterable[str] = (),
) -> Report:
    """Load ``root``'s runs and build the per-configuration and few-shot tables.

    Args:
        root: folder searched recursively for ``results.json``.
        ddof: std degrees of freedom.
        metric: aggregate this metric instead of each run's headline.
        on_error: ``"raise"`` or ``"skip"`` malformed results files.
        ignore: more keys that do not tell configurations apart.

    Raises:
        NoRunsError, FileNotFoundError, ValueError: see :func:`load_runs`.
    """
    records: list[dict[str, Any]] = []
    ignore = tuple(ignore)
    runs = load_runs(root, on_error=on_error, records=records)
    summary = summarise(runs, metric=metric, ddof=ddof, ignore=ignore)
    fewshot = fewshot_table(runs, ddof=ddof, ignore=ignore)
    what = "each run's headline metric" if metric is None else f"`{metric}`"
    parts = [
        f"# recon-report: {len(runs)} runs under `{root}`",
        f"## Per configuration ({what})",
        to_markdown(summary),
        (
            "mean ± std: over seeds, or over folds where runs have one (runs of a fold averaged "
            f"first); std with ddof={ddof}. {BEST_LABEL}: the maximum over the N runs, as the "
            "reference reports a seed sweep (optimistic; not given for folds). differs by: the "
            "keys that tell the row apart from other rows of the same config."
        ),
    ]
    if not fewshot.empty:
        parts += ["## Few-shot (mean ± std over folds)", fewshot_markdown(fewshot)]
    skipped, incomplete = runs.attrs["skipped"], runs.attrs["incomplete"]
    if skipped:
        parts += ["## Skipped files", "\n".join(f"- `{p}`: {why}" for p, why in skipped)]
    if incomplete:
        parts += [
            "## Run folders without results.json (crashed or still running?)",
            "\n".join(f"- `{p}`" for p in incomplete),
        ]
    return Report(
        root=Path(root),
        runs=runs,
        summary=summary,
        fewshot=fewshot,
        markdown="\n\n".join(parts) + "\n",
        ddof=ddof,
        metric=metric,
        records=records,
    )


def write_report(report: Report, out: str | os.PathLike[str], plot: bool = True) -> list[Path]:
    """Write ``report.md``, ``report.csv`` (per configuration), ``runs.csv`` (every run),
    ``fewshot.csv`` (when there are few-shot runs) and ``report.png`` into ``out``, atomically.

    Returns:
        The written paths.
    """
    out = Path(out)
    written = [
        atomic_io.write_text_atomic(out / "report.md", report.markdown),
        atomic_io.write_text_atomic(out / "report.csv", report.summary.to_csv(index=False)),
        atomic_io.write_text_atomic(out / "runs.csv", report.runs.to_csv(index=False)),
    ]
    if not report.fewshot.empty:
        fewshot = report.fewshot
        if not fewshot["group"].astype(bool).any():  # one configuration: the paper's columns
            fewshot = fewshot.drop(columns="group")
        text = fewshot.to_csv(index=False)
        written.append(atomic_io.write_text_atomic(out / "fewshot.csv", text))
    if plot:
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        fig = plot_runs(report.runs, report.summary, metric=report.metric)
        FigureCanvasAgg(fig)  # headless: render with Agg whatever backend is configured
        written.append(
            atomic_io.write_with_atomic(
                out / "report.png", lambda f: fig.savefig(f, format="png", dpi=110)
            )
        )
    return written
