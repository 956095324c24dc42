"""``recon-data``: prepare data and caches.

Subcommands:
- ``cache-teachers [OVERRIDES...]``: store the teachers' features of a pretraining dataset
  (the ``data`` and ``teachers`` groups of ``conf/train.yaml``, e.g. ``data=shapenet55
  paths.data_dir=/datasets``) for ``teachers=cached``.
- ``make-fewshot``: regenerate the ModelNet40 few-shot splits from the ModelNet40 cache.
- ``modelnet-cache``: build the ``modelnet{40,10}_{train,test}_8192pts_fps.dat`` caches.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def cache_teachers(args: argparse.Namespace) -> Path:
    """Build the teacher feature cache for the configured pretraining dataset."""
    import torch
    from omegaconf import open_dict

    from ..teachers.cache import build_cache
    from ._hydra import compose_train, instantiate

    cfg = compose_train(args.overrides)
    teachers_cfg = cfg.teachers.copy()
    with open_dict(teachers_cfg):
        if teachers_cfg.get("mode") == "cached":
            teachers_cfg.mode = "pretrained"
        teachers_cfg.pop("cache_dir", None)
    data_cfg = cfg.data.copy()
    with open_dict(data_cfg):
        data_cfg.pop("total_bs", None)
    datamodule = instantiate(data_cfg)
    dataset = datamodule.dataset("train")
    device = torch.device(args.device)
    teachers = instantiate(teachers_cfg).to(device)
    out = Path(args.out or cfg.teachers.get("cache_dir") or "teacher_cache")
    return build_cache(
        dataset,
        teachers,
        out,
        views=args.views,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        dataset_id=f"{type(datamodule).__name__}:{len(dataset)}",
        overwrite=args.overwrite,
    )


def make_fewshot(args: argparse.Namespace) -> None:
    """Regenerate ``ModelNetFewshot/{way}way_{shot}shot/{fold}.pkl`` from ModelNet40."""
    from ..data.modelnet_fewshot import make_fewshot_splits

    written = make_fewshot_splits(args.modelnet_root, args.out, seed=args.seed)
    print(f"wrote {len(written)} split files under {args.out}")


def modelnet_cache(args: argparse.Namespace) -> None:
    """Build the 8192-point FPS caches of ModelNet40 or ModelNet10 from the per-shape txt files."""
    from ..data.modelnet import build_cache as build_modelnet_cache

    for split in ("train", "test"):
        path = build_modelnet_cache(Path(args.root), args.num_category, split)
        print(f"wrote {path}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="recon-data", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("cache-teachers", help="store teacher features for teachers=cached")
    p.add_argument("--views", type=int, default=10, help="augmented image views per shape (K)")
    p.add_argument("--out", default=None, help="cache folder (default: teachers.cache_dir)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-workers", type=int, default=4)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. data=shapenet55")
    p.set_defaults(func=cache_teachers)

    p = sub.add_parser("make-fewshot", help="regenerate the ModelNet40 few-shot splits")
    p.add_argument("--modelnet-root", default="data/ModelNet/modelnet40_normal_resampled")
    p.add_argument("--out", default="data/ModelNetFewshot")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=make_fewshot)

    p = sub.add_parser("modelnet-cache", help="build the ModelNet 8192-point FPS caches")
    p.add_argument("--root", default="data/ModelNet/modelnet40_normal_resampled")
    p.add_argument("--num-category", type=int, choices=(10, 40), default=40)
    p.set_defaults(func=modelnet_cache)

    args = parser.parse_args(argv)
    args.func(args)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    main()
