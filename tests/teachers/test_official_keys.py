"""Full-size teachers against the reference's own teacher entries (names, shapes, counts).

The reference's ``ckpt-last.pth`` keeps its teachers under ``module.img_encoder.`` and
``module.text_encoder.``; the shared fixture lists every entry with its shape. The full-size
architectures are built on the meta device, so no weights are allocated.
"""

from __future__ import annotations

import json

import torch

from recon_lightning.teachers.clip import clip_text_state, clip_visual_state
from recon_lightning.teachers.image import VIT_B16, ClipVisual, In21kViT
from recon_lightning.teachers.text import TextTeacher
from recon_lightning.teachers.vit_keys import REPRESENTATION, to_timm


def _reference_entries(official_dir, case: str) -> dict[str, torch.Tensor]:
    keys = json.loads((official_dir / "g_base_keys" / "checkpoint_keys.json").read_text())
    return {
        name: torch.empty(shape, device="meta")
        for name, shape, _ in keys[case]["base_model"]
        if name.startswith(("module.img_encoder.", "module.text_encoder."))
    }


def _shapes(sd: dict[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in sd.items()}


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_in21k_teacher_matches_the_reference_entries(official_dir):
    entries = _reference_entries(official_dir, "pretrain_in21k_ckpt-last")
    with torch.device("meta"):
        model = In21kViT(VIT_B16, 768)
    mapped = to_timm(entries)
    own = {k: v for k, v in mapped.items() if not k.startswith(REPRESENTATION)}
    rep = {k[len(REPRESENTATION) :]: v for k, v in mapped.items() if k.startswith(REPRESENTATION)}
    assert _shapes(own) == _shapes(model.vit.state_dict())
    assert _shapes(rep) == _shapes(model.pre_logits.state_dict())
    assert _count(model) == 86_389_248  # teacher_img_params of the reference


def test_clip_teachers_match_the_reference_entries(official_dir):
    entries = _reference_entries(official_dir, "pretrain_clip_ckpt-last")
    with torch.device("meta"):
        visual = ClipVisual(tiny=False)
        text = TextTeacher(tiny=False)
    assert _shapes(clip_visual_state(entries)) == _shapes(visual.visual.state_dict())
    assert _shapes(clip_text_state(entries)) == _shapes(text.text.state_dict())
    assert _count(visual) == 87_849_216 and _count(text) == 63_428_096
