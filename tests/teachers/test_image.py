"""Image teachers built through the real loaders from tiny weights saved in each file layout."""

from __future__ import annotations

import warnings

import pytest
import torch

from recon_lightning.teachers import WeightsNotFoundError, build_image_teacher, normalize_images
from recon_lightning.teachers.image import In21kViT
from recon_lightning.teachers.preprocess import (
    INCEPTION_MEAN,
    INCEPTION_STD,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
)
from recon_lightning.teachers.weight_files import read_state_dict

LAYOUT_FILES = {
    "jx_pth": "jx_vit_base_patch16_224_in21k-e5005f0a.pth",
    "hf_bin": "pytorch_model.bin",
    "hf_safetensors": "model.safetensors",
    "npz": "ViT-B_16.npz",
    "reference_ckpt": "ckpt-last.pth",
}


def _native_in21k(images: torch.Tensor) -> torch.Tensor:
    return normalize_images(images, "native", INCEPTION_MEAN, INCEPTION_STD)


@pytest.mark.parametrize("layout", sorted(LAYOUT_FILES))
def test_in21k_layouts_give_the_reference_feature(tmp_path, tiny_vit, images, layout):
    path = tmp_path / LAYOUT_FILES[layout]
    tiny_vit.writers[layout](path)
    teacher = build_image_teacher("vit_b16_in21k", checkpoint=path, tiny=True, preprocess="native")
    out = teacher(images)
    expected = tiny_vit.reference(_native_in21k(images))
    assert out.shape == (3, 768) and teacher.out_dim == 768
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)
    assert out.abs().max() < 1  # tanh range, as the reference's pre-logits
    assert teacher.source == str(path)


def test_in21k_rejects_a_file_without_the_representation_layer(tmp_path, tiny_vit):
    path = tmp_path / "model.safetensors"
    tiny_vit.write_timm_hub(path)
    with pytest.raises(ValueError, match="vit_b16_in21k_pooled"):
        build_image_teacher("vit_b16_in21k", checkpoint=path, tiny=True)


def test_pooled_variant_is_plain_ln_cls(caches, tiny_pooled_vit, images):
    caches.add_hub_file(
        "timm/vit_base_patch16_224.orig_in21k", "model.safetensors", tiny_pooled_vit.write
    )
    teacher = build_image_teacher("vit_b16_in21k_pooled", tiny=True, preprocess="native")
    assert teacher.out_dim == 768 and teacher.encoder.pre_logits is None
    out = teacher(images)
    torch.testing.assert_close(
        out, tiny_pooled_vit.reference(_native_in21k(images)), atol=2e-5, rtol=1e-4
    )
    assert str(caches.hf) in teacher.source


def test_pooled_loader_ignores_the_representation_layer(tmp_path, tiny_vit, images):
    # The original release file also serves the pooled variant: its backbone part.
    path = tmp_path / LAYOUT_FILES["jx_pth"]
    tiny_vit.writers["jx_pth"](path)
    pooled = In21kViT(tiny_vit.spec, None)
    pooled.load_weights(read_state_dict(path), str(path))
    x = _native_in21k(images)
    with torch.no_grad():
        torch.testing.assert_close(pooled(x), tiny_vit.reference_pooled(x), atol=2e-5, rtol=1e-4)


def test_hub_cache_discovery_prefers_the_original_release(caches, tiny_vit, images):
    caches.add_hub_file(
        "google/vit-base-patch16-224-in21k", "model.safetensors", tiny_vit.writers["hf_safetensors"]
    )
    teacher = build_image_teacher("vit_b16_in21k", tiny=True)
    assert teacher.source.startswith(
        str(caches.hf / "models--google--vit-base-patch16-224-in21k" / "snapshots")
    )
    # once the timm 0.4.5 download sits in torch hub's cache, that file is used
    caches.torch_checkpoints.mkdir(parents=True)
    jx = caches.torch_checkpoints / LAYOUT_FILES["jx_pth"]
    tiny_vit.writers["jx_pth"](jx)
    again = build_image_teacher("vit_b16_in21k", tiny=True)
    assert again.source == str(jx)
    torch.testing.assert_close(again(images), teacher(images), atol=1e-5, rtol=1e-5)


def test_checkpoint_may_be_a_downloaded_folder(tmp_path, tiny_vit, images):
    folder = tmp_path / "vit-base-patch16-224-in21k"
    folder.mkdir()
    tiny_vit.writers["hf_bin"](folder / "pytorch_model.bin")
    teacher = build_image_teacher("vit_b16_in21k", checkpoint=folder, tiny=True)
    assert teacher.source == str(folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="teachers.image.checkpoint"):
        build_image_teacher("vit_b16_in21k", checkpoint=tmp_path / "nope.pth", tiny=True)
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        build_image_teacher("vit_b16_in21k", checkpoint=tmp_path, tiny=True)


def test_missing_weights_say_what_to_download_and_where(caches):
    with pytest.raises(WeightsNotFoundError) as err:
        build_image_teacher("vit_b16_in21k", tiny=True)
    msg = str(err.value)
    for needle in (
        "google/vit-base-patch16-224-in21k",
        "jx_vit_base_patch16_224_in21k-e5005f0a.pth",
        str(caches.hf),
        str(caches.torch_checkpoints),
        "hf download",
        "teachers.image.checkpoint=",
        "teachers=random",
    ):
        assert needle in msg, needle
    with pytest.raises(WeightsNotFoundError, match="timm/vit_base_patch32_clip_224.openai") as err:
        build_image_teacher("clip_b32", tiny=True)
    assert "ViT-B-32.pt" in str(err.value) and str(caches.clip) in str(err.value)


@pytest.mark.parametrize("layout", ["safetensors", "bin", "jit", "reference_ckpt"])
def test_clip_image_teacher_matches_open_clip(tmp_path, tiny_clip, images, layout):
    path = tmp_path / ("clip.safetensors" if layout == "safetensors" else f"clip_{layout}.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        tiny_clip.writers[layout](path)
    teacher = build_image_teacher("clip_b32", checkpoint=path, tiny=True, preprocess="native")
    assert teacher.out_dim == 512
    x = normalize_images(images, "native", OPENAI_CLIP_MEAN, OPENAI_CLIP_STD)
    with torch.no_grad():
        expected = tiny_clip.model.encode_image(x)
    torch.testing.assert_close(teacher(images), expected, atol=2e-5, rtol=1e-4)


def test_clip_from_the_openai_cache(caches, tiny_clip, images):
    caches.clip.mkdir(parents=True)
    tiny_clip.writers["bin"](caches.clip / "ViT-B-32.pt")
    teacher = build_image_teacher("clip_b32", tiny=True)
    assert teacher.source == str(caches.clip / "ViT-B-32.pt")


def test_unknown_name_and_wrong_input(images):
    with pytest.raises(ValueError, match="unknown image teacher"):
        build_image_teacher("resnet50", pretrained=False)
    teacher = build_image_teacher("clip_b32", pretrained=False, tiny=True)
    with pytest.raises(ValueError, match="224x224"):
        teacher(images[:, :, :112, :112])
    with pytest.raises(TypeError, match="uint8"):
        teacher(images.float())
