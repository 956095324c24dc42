"""``recon-convert SRC DST``: an official ReCon checkpoint -> a Lightning ``.ckpt`` of our task.

The reference's ``ckpt-best.pth`` (classification full / mlp3 / linear) becomes a
:class:`~recon_lightning.tasks.classification.ClassificationTask` checkpoint, its
``ckpt-epoch-*.pth`` / ``ckpt-last.pth`` (pretraining) a
:class:`~recon_lightning.tasks.pretrain.PretrainTask` one, and the segmentation
``best_model.pth`` a :class:`~recon_lightning.tasks.segmentation.PartSegmentationTask` one. All
load with ``Task.load_from_checkpoint(DST)`` and work as ``ckpt_path=`` of any recipe. What the
weights do not fix comes from ``--set`` (reference names)::

    recon-convert ckpt-best.pth scan_hardest.ckpt --set type=mlp3 num_group=128
    recon-convert best_model.pth partseg.ckpt            # --kind partseg, inferred from the keys
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml

from ..atomic_io import write_with_atomic


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["num_heads=6", "type=mlp3"]`` -> ``{"num_heads": 6, "type": "mlp3"}`` (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set takes key=value pairs; got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def build_task(kind: str, config: Mapping[str, Any], converted: Mapping[str, torch.Tensor]):
    """The task module of a converted checkpoint with every weight loaded strictly."""
    from ..checkpoints import check_fits

    if kind == "classification":
        from ..tasks.classification import ClassificationTask

        task = ClassificationTask(model=dict(config), protocol=config["head_type"])
    elif kind == "partseg":
        from ..tasks.segmentation import PartSegmentationTask

        task = PartSegmentationTask(model=dict(config))
    else:
        from ..tasks.pretrain import PretrainTask

        task = PretrainTask(model=dict(config), teachers=None)
    check_fits(task.model, converted)
    task.model.load_state_dict(dict(converted), strict=True)
    return task


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    kind: str | None = None,
    **overrides: Any,
) -> Path:
    """Write the Lightning checkpoint of the official checkpoint ``src`` to ``dst``.

    Returns:
        The written path.
    """
    import lightning

    from ..checkpoints import convert_official, read_state_dict

    raw = torch.load(src, map_location="cpu", weights_only=True)
    kind, config, converted = convert_official(read_state_dict(raw), kind, **overrides)
    task = build_task(kind, config, converted)
    ckpt = {
        "state_dict": task.state_dict(),
        "hyper_parameters": dict(task.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "epoch": raw["epoch"] if isinstance(raw.get("epoch"), int) else 0,
        "global_step": 0,
        "converted_from": {"path": os.fspath(src), "kind": kind, "overrides": overrides},
    }
    return write_with_atomic(dst, lambda handle: torch.save(ckpt, handle))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="recon-convert",
        description="Convert an official ReCon checkpoint into a Lightning .ckpt of our task.",
    )
    parser.add_argument(
        "src", help="official checkpoint (ckpt-best.pth, ckpt-epoch-300.pth, best_model.pth, ...)"
    )
    parser.add_argument("dst", help="output .ckpt path")
    parser.add_argument(
        "--kind",
        choices=("pretrain", "classification", "partseg"),
        default=None,
        help="default: inferred from the keys",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="hyper-parameters the weights do not fix: num_heads, num_group, group_size, "
        "type (mlp3), drop_path_rate, feature_blocks (partseg), ...",
    )
    args = parser.parse_args(argv)
    path = convert(args.src, args.dst, args.kind, **parse_overrides(args.overrides))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
