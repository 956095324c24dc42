"""The teachers container: frozen behaviour, targets, checkpoints, and the Hydra configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from recon_lightning.teachers import Teachers, build_teachers

CONF = Path(__file__).resolve().parents[2] / "conf"


class Student(nn.Module):
    """A stand-in for the pretraining task: trainable layers next to the teachers."""

    def __init__(self, teachers: nn.Module) -> None:
        super().__init__()
        self.proj = nn.Linear(4, teachers.img_dim)
        self.teachers = teachers


@pytest.fixture(scope="module")
def teachers() -> Teachers:
    torch.manual_seed(0)
    return build_teachers(mode="random", tiny=True)


def _batch(images: torch.Tensor) -> dict:
    return {
        "image": images,
        "text": ["chair", "a lamp", "chair"],
        "label": torch.tensor([0, 1, 0]),
        "index": torch.tensor([4, 0, 2]),
    }


def test_targets_shapes_and_no_gradient(teachers, images):
    img, txt = teachers.targets(_batch(images), generator=torch.Generator().manual_seed(1))
    assert img.shape == (3, 768) and txt.shape == (3, 512)
    assert (teachers.img_dim, teachers.text_dim) == (768, 512)
    assert not img.requires_grad and not txt.requires_grad
    with torch.enable_grad():
        img2, _ = teachers.targets(_batch(images))
    assert img2.grad_fn is None
    assert torch.equal(img, img2)
    # the prompt draw follows the generator
    _, again = teachers.targets(_batch(images), generator=torch.Generator().manual_seed(1))
    assert torch.equal(txt, again)


def test_frozen_and_always_eval(teachers):
    student = Student(teachers)
    student.train()
    assert student.training and student.proj.training
    assert all(not m.training for m in teachers.image.modules())
    assert all(not m.training for m in teachers.text.modules())
    assert all(not p.requires_grad for p in teachers.parameters())
    assert all(p.requires_grad for p in student.proj.parameters())


@pytest.mark.parametrize(
    ("image", "dim"), [("vit_b16_in21k", 768), ("vit_b16_in21k_pooled", 768), ("clip_b32", 512)]
)
def test_image_dim_follows_the_teacher(image, dim):
    t = build_teachers(image=image, mode="random", tiny=True)
    assert t.img_dim == dim and t.image.out_dim == dim and t.text_dim == 512


def test_teacher_weights_stay_out_of_checkpoints(teachers):
    student = Student(teachers)
    sd = student.state_dict()
    assert set(sd) == {"proj.weight", "proj.bias"}
    before = teachers.image.encoder.vit.cls_token.clone()
    other = Student(build_teachers(mode="random", tiny=True))
    other.load_state_dict(sd, strict=True)  # loads although no teacher entry is in sd
    torch.testing.assert_close(other.proj.weight, student.proj.weight)
    assert not torch.equal(other.teachers.image.encoder.vit.cls_token, before)
    kept = build_teachers(mode="random", tiny=True, persist_weights=True)
    assert any(k.startswith("image.encoder.vit.") for k in kept.state_dict())


def test_options_accept_names_mappings_and_dictconfigs():
    cfg = OmegaConf.create({"name": "clip_b32", "checkpoint": None})
    t = build_teachers(image=cfg, text="clip_b32", mode="random", tiny=True)
    assert t.image.name == "clip_b32"
    with pytest.raises(ValueError, match="unknown teacher options"):
        build_teachers(image={"name": "clip_b32", "ckpt": "x"}, mode="random", tiny=True)
    with pytest.raises(ValueError, match="mode"):
        build_teachers(mode="frozen")
    with pytest.raises(ValueError, match="cache_dir"):
        build_teachers(mode="cached")


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name=None, overrides=list(overrides))


def test_hydra_group_configs(tmp_path):
    default = _compose("+teachers=default").teachers
    assert default.mode == "pretrained" and default.preprocess == "reference"
    assert default.image.name == "vit_b16_in21k" and default.text.name == "clip_b32"
    assert default.image.checkpoint is None and default.text.checkpoint is None
    clip = _compose("+teachers=clip").teachers
    assert clip.image.name == "clip_b32" and clip.mode == "pretrained"
    cached = _compose("+teachers=cached", f"teachers.cache_dir={tmp_path}").teachers
    assert cached.mode == "cached" and cached.cache_dir == str(tmp_path)
    random_cfg = _compose("+teachers=random", "teachers.image.name=clip_b32").teachers
    built = instantiate(random_cfg)
    assert isinstance(built, Teachers) and built.img_dim == 512
    assert built.image.source == "random"
