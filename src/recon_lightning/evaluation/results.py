"""``results.json``: the one record every run writes, and its atomic writer.

Every task writes the same top-level layout so that ``recon-report`` can read any run:

.. code-block:: json

    {
      "schema": 1,
      "task": "classification",
      "config_name": "finetune_scan_objbg", "seed": 0, "checkpoint": "...", "wall_time_s": 12.3,
      "setting": {"protocol": "full", "dataset": "scanobjectnn_objbg", ...},
      "headline": {"metric": "last_epoch_acc", "value": 93.1},
      "metrics": {"last_epoch_acc": 93.1, "best_epoch_acc_test_selected": 94.0, ...},
      "notes": {"best_epoch_acc_test_selected": "..."}
    }

Accuracies are percentages (0-100), as the reference prints them. ``headline`` names the metric a
table should quote by default; the reference's optimistic selections (best epoch picked on the
test split, max over voting repeats) are kept as their own, labelled entries, never as the
headline.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import atomic_io

#: Version of the layout above; bump when a key changes meaning.
SCHEMA_VERSION = 1

#: File name every run writes into its output directory.
RESULTS_FILE = "results.json"


def _jsonable(value: Any) -> Any:
    """Plain JSON types: tensors / numpy scalars -> Python numbers, paths -> str, NaN -> None."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN/inf; a missing value is the honest rendering
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def write_json_atomic(path: str | os.PathLike[str], data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON (tensors, numpy scalars and paths made plain) atomically.

    Returns:
        The written path.
    """
    return atomic_io.write_json_atomic(path, _jsonable(data))


def build_results(
    task: str,
    info: Mapping[str, Any],
    metrics: Mapping[str, Any],
    headline: str | None,
    setting: Mapping[str, Any] | None = None,
    notes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Assemble one run's record in the layout of the module docstring.

    Args:
        task: ``classification`` | ``svm`` | ``zeroshot`` | ...
        info: run facts from the CLI: ``config_name``, ``seed``, ``checkpoint``, ``wall_time_s``.
        metrics: name -> value (accuracies in percent).
        headline: the key of ``metrics`` a table quotes by default; must be present. None when
            nothing was evaluated (e.g. a run with validation and test switched off).
        setting: what identifies the experiment beyond the config name (protocol, dataset, way,
            shot, fold, ...).
        notes: name -> explanation for metrics that need one (how it was selected).

    Raises:
        KeyError: ``headline`` is not one of ``metrics``.
    """
    if headline is not None and headline not in metrics:
        raise KeyError(f"headline metric {headline!r} not among {sorted(metrics)}")
    return {
        "schema": SCHEMA_VERSION,
        "task": task,
        "config_name": info.get("config_name"),
        "seed": info.get("seed"),
        "checkpoint": info.get("checkpoint"),
        "wall_time_s": info.get("wall_time_s"),
        "setting": dict(setting or {}),
        "headline": {"metric": headline, "value": None if headline is None else metrics[headline]},
        "metrics": dict(metrics),
        "notes": dict(notes or {}),
    }


def read_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read one ``results.json``; raise naming the file if it is not a results record."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read results file {path}: {err}") from err
    if not isinstance(data, dict) or "metrics" not in data or "schema" not in data:
        raise ValueError(f"{path} is not a recon-lightning results.json (no schema / metrics)")
    return data
