"""Every Hydra config composes and every group option instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import open_dict

CONF = Path(__file__).resolve().parents[1] / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
# Shrinks any recipe to a CPU-sized model; the recipe's own sizes are checked by composing.
TINY = [
    "encoder.trans_dim=32",
    "encoder.depth=2",
    "encoder.num_heads=2",
    "++encoder.decoder_depth=1",
    "++encoder.decoder_num_heads=2",
]


def _compose(config_name: str, overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=False)


def _group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes(experiment, tmp_path):
    root = "eval" if (CONF / "eval.yaml").exists() and _is_eval(experiment) else "train"
    cfg = _compose(root, [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    assert cfg.task._target_
    assert cfg.data._target_
    # Every interpolation resolves (paths, way/shot/fold, ...).
    from omegaconf import OmegaConf

    OmegaConf.to_container(cfg, resolve=True)


def _is_eval(experiment: str) -> bool:
    return experiment.startswith(("svm_", "zeroshot_"))


@pytest.mark.parametrize("option", _group_options("trainer"))
def test_trainer_options_instantiate(option, tmp_path):
    cfg = _compose("train", [f"trainer={option}", f"paths.output_dir={tmp_path}"])
    if cfg.trainer.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
    trainer = instantiate(cfg.trainer, logger=False)
    assert trainer.max_epochs == cfg.trainer.max_epochs


@pytest.mark.parametrize("group", ["logger", "callbacks"])
def test_logger_and_callback_options_instantiate(group, tmp_path):
    from recon_lightning.cli._hydra import instantiate_group

    for option in _group_options(group):
        if option == "wandb":
            pytest.importorskip("wandb")
        cfg = _compose("train", [f"{group}={option}", f"paths.output_dir={tmp_path}"])
        with open_dict(cfg):
            if option == "wandb":
                cfg.logger.wandb.offline = True
        objs = instantiate_group(cfg[group])
        assert len(objs) == len([v for v in cfg[group].values() if v is not None])


@pytest.mark.parametrize("option", _group_options("teachers"))
def test_teacher_options_compose(option, tmp_path):
    cfg = _compose("train", [f"teachers={option}", f"paths.output_dir={tmp_path}"])
    assert cfg.teachers._target_ == "recon_lightning.teachers.build_teachers"


@pytest.mark.parametrize("option", _group_options("data"))
def test_data_options_instantiate(option, tmp_path):
    overrides = [f"data={option}", f"paths.output_dir={tmp_path}"]
    if option == "modelnet_fewshot":  # way/shot/fold are top-level keys, as the reference's flags
        overrides += ["+way=5", "+shot=10", "+fold=0"]
    cfg = _compose("train", overrides)
    data_cfg = cfg.data.copy()
    with open_dict(data_cfg):
        data_cfg.pop("total_bs", None)
    dm = instantiate(data_cfg)
    assert dm.npoints == cfg.data.npoints


@pytest.mark.parametrize("encoder", _group_options("encoder"))
@pytest.mark.parametrize("masking", _group_options("masking"))
def test_pretrain_task_instantiates(encoder, masking, tmp_path):
    cfg = _compose(
        "train",
        [
            f"encoder={encoder}",
            f"masking={masking}",
            "teachers=random",
            f"paths.output_dir={tmp_path}",
            *TINY,
        ],
    )
    task = instantiate(cfg.task, _recursive_=False)
    assert task.model.masker.mask_type == masking
    assert task.hparams["model"]["trans_dim"] == 32
