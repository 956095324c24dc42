"""Pixel normalisation: the reference's BGR + ImageNet statistics, or each teacher's own."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recon_lightning.teachers import build_image_teacher, normalize_images

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_reference_mode_is_bgr_with_imagenet_statistics(images):
    out = normalize_images(images, "reference", (0.5,) * 3, (0.5,) * 3)
    # What the reference computed: cv2's BGR array, ToTensor (/255), Normalize(ImageNet).
    bgr = images.numpy()[:, ::-1].astype(np.float64) / 255.0
    mean, std = (np.array(v).reshape(1, 3, 1, 1) for v in IMAGENET)
    expected = torch.from_numpy((bgr - mean) / std).float()
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-6)


def test_native_mode_is_rgb_with_the_teachers_statistics(images):
    out = normalize_images(images, "native", (0.5,) * 3, (0.5,) * 3)
    torch.testing.assert_close(out, images.float() / 127.5 - 1.0, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    ("name", "native"),
    [
        ("vit_b16_in21k", ((0.5,) * 3, (0.5,) * 3)),
        ("clip_b32", ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))),
    ],
)
def test_teacher_applies_its_mode(images, name, native):
    torch.manual_seed(0)
    ref = build_image_teacher(name, pretrained=False, tiny=True, preprocess="reference")
    nat = build_image_teacher(name, pretrained=False, tiny=True, preprocess="native")
    nat.load_state_dict(ref.state_dict())
    with torch.no_grad():
        expect_ref = ref.encoder(normalize_images(images, "reference", (0.0,) * 3, (1.0,) * 3))
        expect_nat = ref.encoder(normalize_images(images, "native", *native))
    torch.testing.assert_close(ref(images), expect_ref)
    torch.testing.assert_close(nat(images), expect_nat)
    assert not torch.allclose(ref(images), nat(images))


def test_rejects_unknown_mode_and_bad_input(images):
    with pytest.raises(ValueError, match="preprocess"):
        normalize_images(images, "imagenet", (0.5,) * 3, (0.5,) * 3)
    with pytest.raises(ValueError, match="preprocess"):
        build_image_teacher("clip_b32", pretrained=False, tiny=True, preprocess="rgb")
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        normalize_images(images[:, :1], "native", (0.5,) * 3, (0.5,) * 3)
