"""The downstream recipes compose from the real configs with the reference's hyper-parameters."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from recon_lightning.tasks.classification import ClassificationTask
from recon_lightning.tasks.optim import fit_schedule
from recon_lightning.tasks.svm import SVMTask
from recon_lightning.tasks.zeroshot import ZeroShotTask

CONF = Path(__file__).resolve().parents[2] / "conf"
TINY = ["encoder.trans_dim=32", "encoder.depth=2", "encoder.num_heads=2"]


def compose_cfg(root: str, overrides: list[str], hydra_cfg: bool = False):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=root, overrides=overrides, return_hydra_config=hydra_cfg)


# name: (data config target class, variant/num_category, npoints, num_group, cls_dim, lr)
FINETUNE = {
    "scan_objbg": ("ScanObjectNNDataModule", "obj_bg", 2048, 128, 15, 2e-5),
    "scan_objonly": ("ScanObjectNNDataModule", "obj_only", 2048, 128, 15, 2e-5),
    "scan_hardest": ("ScanObjectNNDataModule", "hardest", 2048, 128, 15, 2e-5),
    "modelnet": ("ModelNetDataModule", 40, 1024, 64, 40, 1e-5),
    "modelnet_8k": ("ModelNetDataModule", 40, 8192, 512, 40, 1e-5),
}
PROBE_LR = {"scan_objbg": 1e-4, "scan_objonly": 1e-4, "scan_hardest": 1e-4, "modelnet": 1e-4}
PROBE_LR |= {"modelnet_8k": 5e-5, "fewshot": 1e-3}


def check_base_recipe(cfg, npoints: int, num_group: int, drop_path: float) -> None:
    enc = cfg.encoder
    assert (enc.trans_dim, enc.depth, enc.num_heads) == (384, 12, 6)
    assert (enc.num_group, enc.group_size, enc.drop_path_rate) == (num_group, 32, drop_path)
    assert cfg.data.npoints == npoints and cfg.data.total_bs == 32
    assert cfg.trainer.gradient_clip_val == 10
    assert cfg.task.optimizer.weight_decay == 0.05 and cfg.task.optimizer.head_lr_mult == 10
    assert cfg.task.scheduler.warmup_epochs == 10
    assert cfg.task.ckpt_path == cfg.ckpt_path


@pytest.mark.parametrize("name", sorted(FINETUNE))
@pytest.mark.parametrize("protocol", ["full", "mlp3", "linear"])
def test_finetune_recipes_match_reference(name, protocol, tmp_path):
    target, variant, npoints, num_group, cls_dim, lr = FINETUNE[name]
    exp = f"finetune_{name}" if protocol == "full" else f"{protocol}_{name}"
    cfg = compose_cfg("train", [f"experiment={exp}", f"paths.output_dir={tmp_path}"])
    assert cfg.experiment_name == exp
    assert cfg.data._target_.endswith(target)
    assert cfg.data.get("variant", cfg.data.get("num_category")) == variant
    check_base_recipe(cfg, npoints, num_group, 0.2)
    assert cfg.task.protocol == protocol and cfg.task.model.cls_dim == cls_dim
    assert cfg.task.optimizer.lr == (lr if protocol == "full" else PROBE_LR[name])
    assert cfg.task.scheduler.epochs is None and cfg.trainer.max_epochs == 301
    fitted = fit_schedule(OmegaConf.to_container(cfg.task.scheduler), cfg.trainer.max_epochs)
    assert (fitted["epochs"], fitted["warmup_epochs"]) == (300, 10)  # the reference's, exactly
    assert cfg.test is True and cfg.task.vote.times == 10 and cfg.task.vote.reference_repeats == 0


@pytest.mark.parametrize("protocol", ["full", "mlp3", "linear"])
def test_fewshot_recipe_takes_way_shot_fold_and_sweeps_40_runs(protocol, tmp_path):
    exp = "fewshot" if protocol == "full" else f"{protocol}_fewshot"
    overrides = [f"experiment={exp}", "way=10", "shot=20", "fold=3", f"paths.output_dir={tmp_path}"]
    cfg = compose_cfg("train", overrides, hydra_cfg=True)
    check_base_recipe(cfg, 1024, 64, 0.1)
    assert cfg.data._target_.endswith("ModelNetFewshotDataModule")
    assert (cfg.data.way, cfg.data.shot, cfg.data.fold) == (10, 20, 3)
    assert OmegaConf.to_container(cfg.task.setting, resolve=True) == {
        "way": 10,
        "shot": 20,
        "fold": 3,
    }
    assert cfg.task.model.cls_dim == 40 and cfg.task.protocol == protocol
    assert cfg.task.optimizer.lr == (5e-4 if protocol == "full" else 1e-3)
    assert cfg.task.scheduler.epochs is None and cfg.trainer.max_epochs == 151
    fitted = fit_schedule(OmegaConf.to_container(cfg.task.scheduler), cfg.trainer.max_epochs)
    assert (fitted["epochs"], fitted["warmup_epochs"]) == (150, 10)  # the reference's, exactly
    sweep = cfg.hydra.sweeper.params
    assert (sweep.way, sweep.shot, sweep.fold) == ("5,10", "10,20", "range(0,10)")
    assert cfg.hydra.sweep.subdir == "10way_20shot/fold3"


def test_svm_recipe(tmp_path):
    cfg = compose_cfg("eval", ["experiment=svm_modelnet40", f"paths.output_dir={tmp_path}"])
    assert cfg.data._target_.endswith("ModelNetDataModule") and cfg.data.num_category == 40
    assert (cfg.data.npoints, cfg.data.total_bs) == (1024, 128)
    enc = cfg.encoder
    assert (enc.trans_dim, enc.depth, enc.num_heads, enc.num_group, enc.group_size) == (
        384,
        12,
        6,
        64,
        32,
    )
    assert cfg.task.c == 0.075 and cfg.ckpt_path is None and cfg.trainer.devices == 1


# name: (data config, npoints, num_group, group_size, ratio)
ZEROSHOT = {
    "modelnet40": ("modelnet40", 1024, 64, 32, 0.25),
    "modelnet10": ("modelnet10", 1024, 64, 32, 0.2),
    "scan_hardest": ("scan_hardest", 2048, 64, 64, 0.05),
    "scan_objbg": ("scan_objbg", 2048, 64, 64, 0.1),
    "scan_objonly": ("scan_objonly", 2048, 32, 128, 0.15),
}


@pytest.mark.parametrize("name", sorted(ZEROSHOT))
def test_zeroshot_recipes(name, tmp_path):
    data, npoints, num_group, group_size, ratio = ZEROSHOT[name]
    cfg = compose_cfg("eval", [f"experiment=zeroshot_{name}", f"paths.output_dir={tmp_path}"])
    reference_data = compose_cfg("eval", [f"data={data}", f"paths.output_dir={tmp_path}"]).data
    assert cfg.data._target_ == reference_data._target_
    assert cfg.data.get("variant") == reference_data.get("variant")
    assert cfg.data.get("num_category") == reference_data.get("num_category")
    assert (cfg.data.npoints, cfg.data.total_bs) == (npoints, 64)
    assert (cfg.encoder.num_group, cfg.encoder.group_size) == (num_group, group_size)
    assert cfg.task.model.feature_type == "full" and cfg.task.model.ratio == ratio
    assert cfg.task.split == "test"


def test_every_task_config_instantiates_tiny(tmp_path):
    base = [f"paths.output_dir={tmp_path}", *TINY]
    cfg = compose_cfg("train", ["experiment=linear_scan_hardest", *base])
    task = instantiate(cfg.task, _recursive_=False)
    assert isinstance(task, ClassificationTask) and task.model.head_type == "linear"
    assert task.model.cls_dim == 15 and task.model.encoder.num_group == 128
    cfg = compose_cfg("eval", ["experiment=svm_modelnet40", *base])
    assert isinstance(instantiate(cfg.task, _recursive_=False), SVMTask)
    cfg = compose_cfg("eval", ["experiment=zeroshot_scan_objonly", *base])
    task = instantiate(cfg.task, _recursive_=False)
    assert isinstance(task, ZeroShotTask) and task.model.ratio == 0.15
    assert task.text_teacher_cfg["name"] == "clip_b32" and task.split == "test"
