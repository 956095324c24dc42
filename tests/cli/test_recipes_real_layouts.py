"""Every downstream recipe in conf/experiment/ on tiny folders in the reference's real layouts.

recon-train recipes run one ``fast_dev_run`` step (fit + test/vote where the recipe tests);
recon-eval recipes (``svm_modelnet40``, ``zeroshot_*``) run their one evaluation pass. The data
lives under ``paths.data_dir`` exactly as the reference lays it out: ScanObjectNN h5 files,
``ModelNet/modelnet40_normal_resampled`` (shape names, split lists, per-shape ``x,y,z,nx,ny,nz``
txt files and the ``*_8192pts_fps.dat`` pickle caches) and ``ModelNetFewshot/5way_10shot/0.pkl``.
Only the model is shrunk; each recipe keeps its own npoints, head size and data pipeline.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from recon_lightning.cli.eval import run_eval
from recon_lightning.cli.train import run
from recon_lightning.data.modelnet import MODELNET40_CLASSES
from recon_lightning.models import build_pretrainer

CONF = Path(__file__).resolve().parents[2] / "conf"
MODELNET10_CLASSES = [
    "bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table",
    "toilet",
]  # fmt: skip
ENCODER = dict(trans_dim=32, depth=2, num_heads=2, num_group=16, group_size=16)
TINY = [f"encoder.{k}={v}" for k, v in ENCODER.items()] + [
    "data.total_bs=4",
    "data.num_workers=0",
    "logger=none",
    "trainer.accelerator=cpu",
    "trainer.devices=1",
    "++trainer.enable_progress_bar=false",
]

EXPERIMENTS = sorted(
    p.stem
    for p in (CONF / "experiment").glob("*.yaml")
    # Part segmentation has its own CLI tests (tests/cli/test_partseg_cli.py).
    if not p.stem.startswith(("pretrain_", "partseg_")) and p.stem != "demo"
)
EVAL_ONLY = {name for name in EXPERIMENTS if name == "svm_modelnet40" or "zeroshot" in name}


def test_every_downstream_recipe_is_covered():
    assert len(EXPERIMENTS) == 24 and len(EVAL_ONLY) == 6
    assert "fewshot" in EXPERIMENTS and "svm_modelnet40" in EVAL_ONLY


# ----------------------------------------------------------------------------- writers


def _shape(rng: np.random.Generator, n: int) -> np.ndarray:
    xyz = rng.normal(size=(n, 3)) * 2.0 + 1.0
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    return np.concatenate([xyz, normals], axis=1).astype(np.float32)


def write_scanobjectnn(data_dir: Path, per_split: tuple[int, int] = (6, 4)) -> None:
    """``ScanObjectNN/main_split{,_nobg}/*.h5``: data (M, 2048, 3) float32, label (M,)."""
    rng = np.random.default_rng(2)
    root = data_dir / "ScanObjectNN"
    for folder, stem in (
        ("main_split", "objectdataset"),
        ("main_split_nobg", "objectdataset"),
        ("main_split", "objectdataset_augmentedrot_scale75"),
    ):
        for split, m in zip(("training", "test"), per_split, strict=True):
            path = root / folder / f"{split}_{stem}.h5"
            path.parent.mkdir(parents=True, exist_ok=True)
            with h5py.File(path, "w") as f:
                f["data"] = rng.normal(size=(m, 2048, 3)).astype(np.float32)
                f["label"] = (np.arange(m) % 15).astype(np.int64)


def write_modelnet(data_dir: Path, per_class: tuple[int, int] = (2, 1), classes: int = 3) -> None:
    """``ModelNet/modelnet40_normal_resampled``: names, lists, txt shapes and .dat caches.

    ModelNet10 shares the folder (its own names, lists and caches, labels in its own order), as
    in the reference. Shapes hold 8192 points, the caches' ``N_POINTS``.
    """
    rng = np.random.default_rng(1)
    root = data_dir / "ModelNet" / "modelnet40_normal_resampled"
    root.mkdir(parents=True)
    for n, names in ((40, MODELNET40_CLASSES), (10, MODELNET10_CLASSES)):
        (root / f"modelnet{n}_shape_names.txt").write_text("\n".join(names) + "\n")
    shapes: dict[str, dict[str, np.ndarray]] = {"train": {}, "test": {}}
    picked = MODELNET40_CLASSES[:classes] + MODELNET10_CLASSES[:classes]
    for name in dict.fromkeys(picked):
        (root / name).mkdir()
        counter = 1
        for split, count in zip(("train", "test"), per_class, strict=True):
            for _ in range(count):
                shape_id = f"{name}_{counter:04d}"
                counter += 1
                pts = _shape(rng, 8192)
                shapes[split][shape_id] = pts
                # The raw per-shape file (10k rows in the reference; 8192 is enough here).
                np.savetxt(root / name / f"{shape_id}.txt", pts, fmt="%.6f", delimiter=",")
    for n, names in ((40, MODELNET40_CLASSES), (10, MODELNET10_CLASSES)):
        for split, table in shapes.items():
            ids = [i for i in table if i.rsplit("_", 1)[0] in names]
            (root / f"modelnet{n}_{split}.txt").write_text("\n".join(ids) + "\n")
            points = [table[i] for i in ids]
            labels = [np.array([names.index(i.rsplit("_", 1)[0])], dtype=np.int32) for i in ids]
            with open(root / f"modelnet{n}_{split}_8192pts_fps.dat", "wb") as fh:
                pickle.dump([points, labels], fh)


def write_fewshot(data_dir: Path, way: int = 5, shot: int = 2, test_per_class: int = 1) -> None:
    """``ModelNetFewshot/5way_10shot/0.pkl``: dict of (points 8192x6, label, original label)."""
    rng = np.random.default_rng(3)
    originals = [7, 2, 30, 12, 25][:way]
    episode = {
        split: [
            (_shape(rng, 8192), label, orig)
            for label, orig in enumerate(originals)
            for _ in range(count)
        ]
        for split, count in (("train", shot), ("test", test_per_class))
    }
    path = data_dir / "ModelNetFewshot" / "5way_10shot" / "0.pkl"
    path.parent.mkdir(parents=True)
    with open(path, "wb") as fh:
        pickle.dump(episode, fh)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_scanobjectnn(root)
    write_modelnet(root)
    write_fewshot(root)
    return root


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pretraining checkpoint with the CLIP image/text projections zero-shot requires."""
    torch.manual_seed(0)
    pre = build_pretrainer(**ENCODER, img_dim=512, text_dim=512)
    ckpt = tmp_path_factory.mktemp("ckpt") / "clip_pre.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in pre.state_dict().items()}}, ckpt)
    return ckpt


def compose_cfg(root: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=root, overrides=overrides)


def expected_dataset(data_cfg) -> str:
    target = data_cfg._target_.rsplit(".", 1)[-1]
    if target == "ScanObjectNNDataModule":
        return f"scanobjectnn_{data_cfg.variant}"
    if target == "ModelNetDataModule":
        return f"modelnet{data_cfg.num_category}"
    assert target == "ModelNetFewshotDataModule", target
    return "modelnet_fewshot"


def results(folder: Path) -> dict:
    return json.loads((folder / "results.json").read_text())


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_recipe_runs_on_real_layout(name, data_dir, clip_checkpoint, tmp_path):
    common = [
        f"experiment={name}",
        f"paths.data_dir={data_dir}",
        f"paths.output_dir={tmp_path / 'out'}",
        *TINY,
    ]
    if name in EVAL_ONLY:
        overrides = [*common]
        if "zeroshot" in name:
            overrides += [
                f"ckpt_path={clip_checkpoint}",
                "task.text_teacher.pretrained=false",
                "task.text_teacher.tiny=true",
            ]
        else:
            overrides += ["ckpt_path=null"]
        cfg = compose_cfg("eval", overrides)
        assert cfg.data.root.startswith(str(data_dir))
        metrics = run_eval(cfg)
        key = "svm_acc" if name == "svm_modelnet40" else "zeroshot_acc"
        assert 0.0 <= metrics[key] <= 100.0
    else:
        cfg = compose_cfg(
            "train",
            [*common, "callbacks=none", "++trainer.fast_dev_run=true", "task.vote.times=2"],
        )
        assert cfg.data.root.startswith(str(data_dir))
        metrics = run(cfg)
        assert cfg.task.model.cls_dim == (15 if "scan" in name else 40)
        assert "train/loss" in metrics and "val/acc" in metrics
        if cfg.get("test"):  # fit, then plain test and voting on the last weights
            assert {"test/acc", "test/vote_acc"} <= set(metrics)
            assert results(tmp_path / "out")["metrics"]["vote_times"] == 2
    record = results(tmp_path / "out")
    assert record["config_name"] == name
    assert record["setting"]["dataset"] == expected_dataset(cfg.data)
