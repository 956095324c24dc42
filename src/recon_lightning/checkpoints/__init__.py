"""Checkpoints: the reference code's files <-> this package's models.

- :func:`load_official` builds and fills a ``ReConPretrainer`` / ``ReConClassifier`` from a
  checkpoint the reference wrote, inferring sizes from the weights.
- :func:`load_pretrained` initialises a downstream model's encoder from a pretraining checkpoint
  (ours or the reference's) and reports what stays randomly initialised.
- :mod:`.keymap` holds the key renaming both ways.
"""

from .keymap import official_names, rules_for, to_official, to_ours
from .official import (
    build_model,
    check_fits,
    convert_official,
    infer_config,
    infer_kind,
    load_official,
    read_state_dict,
)
from .pretrained import is_official, load_pretrained, official_report

__all__ = [
    "build_model",
    "check_fits",
    "convert_official",
    "infer_config",
    "infer_kind",
    "is_official",
    "load_official",
    "load_pretrained",
    "official_names",
    "official_report",
    "read_state_dict",
    "rules_for",
    "to_official",
    "to_ours",
]
