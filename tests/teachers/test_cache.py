"""The teacher feature cache: round trip, exactness of text, fidelity of image views, checks."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset

from recon_lightning.teachers import (
    CachedTeachers,
    CacheMismatchError,
    build_cache,
    build_teachers,
    read_meta,
)

DESCRIPTIONS = ("chair", "a lamp", "airplane,aeroplane,plane")
N = 5


class AugmentedShapes(Dataset):
    """Pretraining-style items whose image is re-augmented (random crop + flip, drawn from torch's
    global RNG as dataset transforms do) on every access; in-process accesses are logged."""

    def __init__(self, n: int = N) -> None:
        g = torch.Generator().manual_seed(0)
        self.base = torch.randint(0, 256, (n, 3, 256, 256), generator=g, dtype=torch.uint8)
        self.log: list[tuple[int, torch.Tensor]] = []

    def __len__(self) -> int:
        return self.base.shape[0]

    def __getitem__(self, i: int) -> dict:
        y, x = torch.randint(0, 33, (2,)).tolist()
        img = self.base[i, :, y : y + 224, x : x + 224]
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        img = img.contiguous()
        self.log.append((i, img))
        return {
            "image": img,
            "text": DESCRIPTIONS[i % len(DESCRIPTIONS)],
            "index": i,
            "label": i % len(DESCRIPTIONS),
            "points": torch.zeros(16, 3),
        }


@pytest.fixture(scope="module")
def teachers():
    torch.manual_seed(0)
    return build_teachers(mode="random", tiny=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory, teachers):
    ds = AugmentedShapes()
    out = build_cache(
        ds, teachers, tmp_path_factory.mktemp("cache"), views=3, batch_size=2, progress=False
    )
    return out, ds


def test_files_and_metadata(built, teachers):
    out, _ = built
    assert sorted(p.name for p in out.iterdir()) == [
        "image_features.npy",
        "meta.json",
        "text_features.npy",
        "text_index.json",
    ]
    meta = read_meta(out)
    assert meta["image_teacher"] == "vit_b16_in21k" and meta["text_teacher"] == "clip_b32"
    assert meta["preprocess"] == "reference" and meta["views"] == 3 and meta["num_shapes"] == N
    assert (meta["img_dim"], meta["text_dim"], meta["num_prompts"]) == (768, 512, 60)
    assert meta["image_source"] == "random" and meta["dataset"] == "AugmentedShapes"
    assert json.loads((out / "text_index.json").read_text()) == sorted(DESCRIPTIONS)
    assert np.load(out / "image_features.npy", mmap_mode="r").shape == (N, 3, 768)
    assert np.load(out / "text_features.npy", mmap_mode="r").shape == (3, 60, 512)


def test_image_views_are_the_online_features_of_the_views_seen(built, teachers):
    out, ds = built
    cached = CachedTeachers(out)
    assert len(ds.log) == 3 * N
    for k in range(3):
        seen = ds.log[k * N : (k + 1) * N]
        assert [i for i, _ in seen] == list(range(N))
        imgs = torch.stack([img for _, img in seen])
        # same batches as the caching pass (batch_size=2): bitwise equal
        online = torch.cat([teachers.image(imgs[s : s + 2]) for s in range(0, N, 2)])
        view = torch.full((N,), k)
        stored = cached.image_lookup(torch.arange(N), view)
        assert torch.equal(stored, online)
        # any other batching: equal up to float rounding
        torch.testing.assert_close(stored, teachers.image(imgs), atol=1e-5, rtol=1e-5)
    feats = cached.image_features
    assert not np.allclose(feats[:, 0], feats[:, 1])  # the views were augmented differently


def test_cached_prompt_equals_online_prompt_exactly(built, teachers):
    out, _ = built
    cached = CachedTeachers(out)
    # a new module with the same weights and nothing remembered
    fresh = build_teachers(mode="random", tiny=True)
    fresh.text.load_state_dict(teachers.text.state_dict())
    descs = [d for d in DESCRIPTIONS for _ in range(60)]
    idx = torch.arange(60).repeat(len(DESCRIPTIONS))
    assert torch.equal(cached.text_lookup(descs, idx), fresh.text(descs, idx))
    # and in a mixed batch, as a training step sees it
    g = torch.Generator().manual_seed(3)
    j = torch.randint(0, 60, (7,), generator=g)
    mixed = [DESCRIPTIONS[i % 3] for i in range(7)]
    assert torch.equal(cached.text_lookup(mixed, j), fresh.text(mixed, j))


def test_targets_draw_a_view_then_a_prompt(built):
    out, _ = built
    cached = CachedTeachers(out)
    batch = {
        "index": torch.tensor([4, 0, 2]),
        "text": ["a lamp", "chair", "airplane,aeroplane,plane"],
    }
    img, txt = cached.targets(batch, generator=torch.Generator().manual_seed(9))
    assert img.shape == (3, 768) and txt.shape == (3, 512)
    g = torch.Generator().manual_seed(9)
    view = torch.randint(0, 3, (3,), generator=g)
    prompt = torch.randint(0, 60, (3,), generator=g)
    assert torch.equal(img, cached.image_lookup(batch["index"], view))
    assert torch.equal(txt, cached.text_lookup(batch["text"], prompt))
    assert (cached.img_dim, cached.text_dim, cached.views) == (768, 512, 3)


def test_build_teachers_cached_mode_checks_the_config(built):
    out, _ = built
    t = build_teachers(mode="cached", cache_dir=out, image={"name": "vit_b16_in21k"}, num_shapes=N)
    assert isinstance(t, CachedTeachers) and t.img_dim == 768
    with pytest.raises(CacheMismatchError, match="image_teacher"):
        build_teachers(mode="cached", cache_dir=out, image="clip_b32")
    with pytest.raises(CacheMismatchError, match="preprocess"):
        build_teachers(mode="cached", cache_dir=out, preprocess="native")
    with pytest.raises(CacheMismatchError, match="holds 5 shapes"):
        build_teachers(mode="cached", cache_dir=out, num_shapes=6)


def test_lookups_outside_the_cache_fail_clearly(built, tmp_path):
    out, _ = built
    cached = CachedTeachers(out)
    with pytest.raises(CacheMismatchError, match="not in teacher cache"):
        cached.targets({"index": torch.tensor([0]), "text": ["sofa"]})
    with pytest.raises(CacheMismatchError, match="outside"):
        cached.targets({"index": torch.tensor([N]), "text": ["chair"]})
    with pytest.raises(CacheMismatchError, match="not in the cache"):
        cached.check_dataset(N, descriptions=["chair", "sofa"])
    with pytest.raises(FileNotFoundError, match="cache-teachers"):
        CachedTeachers(tmp_path)


def test_pickling_leaves_the_memmap_behind(built):
    out, _ = built
    cached = CachedTeachers(out)
    _ = cached.image_features  # open the memmap
    blob = pickle.dumps(cached)
    assert len(blob) < 4 * 3 * 60 * 512 + 100_000  # text table only, not the image file
    copy = pickle.loads(blob)
    idx, view = torch.tensor([1, 3]), torch.tensor([2, 0])
    assert torch.equal(copy.image_lookup(idx, view), cached.image_lookup(idx, view))
    assert cached.state_dict() == {}


def test_seeded_views_are_reproducible_and_leave_global_rng_alone(tmp_path, teachers):
    state = torch.random.get_rng_state()
    a = build_cache(AugmentedShapes(), teachers, tmp_path / "a", views=2, progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = build_cache(AugmentedShapes(), teachers, tmp_path / "b", views=2, progress=False)
    c = build_cache(AugmentedShapes(), teachers, tmp_path / "c", views=2, seed=1, progress=False)
    fa, fb, fc = (np.load(p / "image_features.npy") for p in (a, b, c))
    assert np.array_equal(fa, fb) and not np.allclose(fa, fc)


def test_worker_processes_are_seeded_too(tmp_path, teachers):
    a = build_cache(
        AugmentedShapes(), teachers, tmp_path / "a", views=1, num_workers=1, progress=False
    )
    b = build_cache(
        AugmentedShapes(), teachers, tmp_path / "b", views=1, num_workers=1, progress=False
    )
    assert np.array_equal(np.load(a / "image_features.npy"), np.load(b / "image_features.npy"))


def test_existing_cache_needs_overwrite_and_bad_index_is_caught(tmp_path, teachers):
    out = build_cache(AugmentedShapes(3), teachers, tmp_path, views=1, progress=True)
    with pytest.raises(FileExistsError, match="overwrite"):
        build_cache(AugmentedShapes(3), teachers, out, views=1, progress=False)
    build_cache(AugmentedShapes(), teachers, out, views=1, overwrite=True, progress=False)
    assert read_meta(out)["num_shapes"] == N
    with pytest.raises(ValueError, match="views"):
        build_cache(AugmentedShapes(), teachers, tmp_path / "v", views=0)


def test_indices_must_cover_the_dataset(tmp_path, teachers):
    class Repeats(AugmentedShapes):
        def __getitem__(self, i: int) -> dict:
            return dict(super().__getitem__(i), index=0)

    with pytest.raises(ValueError, match="never written"):
        build_cache(Repeats(), teachers, tmp_path, views=1, progress=False)
    assert not (tmp_path / "meta.json").exists()
