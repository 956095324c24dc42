"""The CLIP text teacher built through the real loader from a tiny CLIP saved locally."""

from __future__ import annotations

import warnings

import open_clip
import pytest
import torch

from recon_lightning.teachers import WeightsNotFoundError, build_text_teacher
from recon_lightning.teachers.prompts import all_prompts, build_prompts

DESCRIPTIONS = ["airplane,aeroplane,plane", "chair", "airplane,aeroplane,plane", "a lamp"]


def _encode(model, prompts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(open_clip.tokenize(prompts))


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory, tiny_clip):
    path = tmp_path_factory.mktemp("clip") / "open_clip_pytorch_model.bin"
    tiny_clip.writers["bin"](path)
    return path


@pytest.fixture(scope="module")
def teacher(clip_file):
    return build_text_teacher("clip_b32", checkpoint=clip_file, tiny=True)


def test_features_equal_open_clip_encode_text(teacher, tiny_clip):
    idx = torch.tensor([0, 17, 59, 33])
    out = teacher(DESCRIPTIONS, idx)
    assert out.shape == (4, 512) and teacher.out_dim == 512
    expected = _encode(tiny_clip.model, build_prompts(DESCRIPTIONS, idx))
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)
    # the same description with the same prompt index gives the same vector in any batch
    assert torch.equal(out[0], teacher(["airplane,aeroplane,plane"], torch.tensor([0]))[0])
    assert not torch.allclose(out[0], teacher(DESCRIPTIONS[:1], torch.tensor([1]))[0])


def test_tokenizer_is_clip_bpe_with_context_77(teacher):
    tokens = teacher.tokenize(["A 3D model of a chair."])
    assert tokens.shape == (1, 77)
    assert torch.equal(tokens, open_clip.tokenize(["A 3D model of a chair."]))
    assert tokens[0, 0] == 49406 and tokens[0].argmax() == (tokens[0] > 0).sum() - 1  # SOT, EOT


def test_random_prompt_draw_follows_the_generator(teacher):
    a = teacher(DESCRIPTIONS, generator=torch.Generator().manual_seed(5))
    drawn = torch.randint(0, 60, (4,), generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, teacher(DESCRIPTIONS, drawn))
    with pytest.raises(IndexError):
        teacher(DESCRIPTIONS, torch.tensor([0, 1, 2, 60]))
    with pytest.raises(ValueError, match="shape"):
        teacher(DESCRIPTIONS, torch.tensor([0, 1]))


def test_class_prototypes_sum_the_60_prompts(teacher, tiny_clip):
    protos = teacher.class_prototypes(["night_stand", "sofa"])
    assert protos.shape == (2, 512)
    for row, name in enumerate(["night_stand", "sofa"]):
        expected = _encode(tiny_clip.model, all_prompts(name)).sum(0)
        torch.testing.assert_close(protos[row], expected, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("layout", ["safetensors", "jit", "reference_ckpt"])
def test_other_clip_layouts(tmp_path, tiny_clip, teacher, layout):
    path = tmp_path / ("w.safetensors" if layout == "safetensors" else "w.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.script's deprecation notice
        tiny_clip.writers[layout](path)
    other = build_text_teacher(checkpoint=path, tiny=True)
    idx = torch.tensor([3, 4, 5, 6])
    torch.testing.assert_close(other(DESCRIPTIONS, idx), teacher(DESCRIPTIONS, idx))


def test_hub_cache_discovery_and_missing_weights(caches, tiny_clip):
    with pytest.raises(WeightsNotFoundError) as err:
        build_text_teacher(tiny=True)
    msg = str(err.value)
    assert "timm/vit_base_patch32_clip_224.openai" in msg and "teachers.text.checkpoint=" in msg
    snap = caches.add_hub_file(
        "timm/vit_base_patch32_clip_224.openai",
        "open_clip_model.safetensors",
        tiny_clip.writers["safetensors"],
    )
    assert build_text_teacher(tiny=True).source == str(snap)


def test_new_weights_forget_remembered_features(teacher):
    fresh = build_text_teacher(pretrained=False, tiny=True)
    before = fresh(["chair"], torch.tensor([2]))
    fresh.load_state_dict(teacher.state_dict())
    torch.testing.assert_close(
        fresh(["chair"], torch.tensor([2])), teacher(["chair"], torch.tensor([2]))
    )
    assert not torch.allclose(before, fresh(["chair"], torch.tensor([2])))
