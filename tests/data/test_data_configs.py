"""conf/data/*.yaml: each composes with the real root config and instantiates its DataModule."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import open_dict

from recon_lightning.data import (
    ModelNetDataModule,
    ModelNetFewshotDataModule,
    PointFolderDataModule,
    ScanObjectNNDataModule,
    ShapeNet55DataModule,
    ShapeNetPartDataModule,
    SyntheticShapesDataModule,
)

CONF = Path(__file__).resolve().parents[2] / "conf"

# name -> (DataModule class, reference folder under paths.data_dir or None, key settings)
EXPECTED = {
    "synthetic": (SyntheticShapesDataModule, None, {"mode": "pretrain", "npoints": 1024}),
    "synthetic_cls": (SyntheticShapesDataModule, None, {"mode": "classification"}),
    "shapenet55": (ShapeNet55DataModule, "ShapeNet55-34", {"npoints": 1024, "whole": True}),
    "modelnet40": (
        ModelNetDataModule,
        "ModelNet/modelnet40_normal_resampled",
        {"npoints": 1024, "num_category": 40, "train_transform_name": "scale_and_translate"},
    ),
    "modelnet40_8k": (
        ModelNetDataModule,
        "ModelNet/modelnet40_normal_resampled",
        {"npoints": 8192, "vote_transform_name": "scale"},
    ),
    "modelnet10": (
        ModelNetDataModule,
        "ModelNet/modelnet40_normal_resampled",
        {"num_category": 10},
    ),
    "scan_objbg": (ScanObjectNNDataModule, "ScanObjectNN", {"variant": "obj_bg", "npoints": 2048}),
    "scan_objonly": (ScanObjectNNDataModule, "ScanObjectNN", {"variant": "obj_only"}),
    "scan_hardest": (
        ScanObjectNNDataModule,
        "ScanObjectNN",
        {"variant": "hardest", "vote_transform_name": "rotate_y"},
    ),
    "modelnet_fewshot": (
        ModelNetFewshotDataModule,
        "ModelNetFewshot",
        {"way": 10, "shot": 20, "fold": 3, "npoints": 1024},
    ),
    "shapenetpart": (
        ShapeNetPartDataModule,
        "shapenetcore_partanno_segmentation_benchmark_v0_normal",
        {"npoints": 2048},
    ),
    "point_folder": (PointFolderDataModule, "point_folder", {"npoints": 1024}),
}
#: The reference's total_bs per dataset.
TOTAL_BS = {"shapenet55": 128, "shapenetpart": 16}


def test_every_data_config_is_covered() -> None:
    assert {p.stem for p in (CONF / "data").glob("*.yaml")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_config_composes_and_instantiates(name: str, tmp_path: Path) -> None:
    cls, folder, settings = EXPECTED[name]
    overrides = [f"data={name}", f"paths.data_dir={tmp_path}"]
    if name == "modelnet_fewshot":
        overrides += ["+way=10", "+shot=20", "+fold=3"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    data_cfg = cfg.data.copy()
    assert data_cfg.total_bs == TOTAL_BS.get(name, 32)
    with open_dict(data_cfg):  # what recon-train does with the global batch on one device
        data_cfg.batch_size = data_cfg.pop("total_bs")
    dm = instantiate(data_cfg)
    assert type(dm) is cls
    if folder is not None:
        assert Path(dm.root) == tmp_path / folder
    for key, value in settings.items():
        assert getattr(dm, key) == value, key
    assert dm.batch_size == TOTAL_BS.get(name, 32)
