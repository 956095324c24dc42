"""Fixtures for the teacher tests: tiny random weights written in the real file layouts, fake
weight caches, and plain-torch reference computations written independently of the package."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIP
from safetensors.torch import save_file

from recon_lightning.teachers.image import TINY_VIT_B16, TINY_VIT_B16_POOLED, ViTSpec

# ---------------------------------------------------------------------------------------------
# Isolated caches


@pytest.fixture
def caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """Point every weight cache the teachers search (HF hub, torch hub, ~/.cache/clip) into
    tmp_path, so the user's real caches are never read. ``add_hub_file`` writes a file in the hub
    cache's real layout: blobs/<sha>, snapshots/<rev>/<name> -> blob, refs/main = <rev>."""
    hf = tmp_path / "hf_hub"
    home = tmp_path / "home"
    torch_home = tmp_path / "torch_home"
    for var in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    monkeypatch.setenv("HOME", str(home))

    def add_hub_file(repo_id: str, filename: str, write, revision: str = "0123abcd" * 5) -> Path:
        repo = hf / ("models--" + repo_id.replace("/", "--"))
        blob = repo / "blobs" / f"{abs(hash((repo_id, filename))):x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        write(blob)
        snap = repo / "snapshots" / revision / filename
        snap.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, snap.parent), snap)
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
        return snap

    return SimpleNamespace(
        hf=hf,
        torch_checkpoints=torch_home / "hub" / "checkpoints",
        clip=home / ".cache" / "clip",
        add_hub_file=add_hub_file,
    )


# ---------------------------------------------------------------------------------------------
# Tiny ViT-B/16 in21k weights in timm layout, and the other layouts written from it


def _random_vit_state(spec: ViTSpec, seed: int, representation: bool) -> dict[str, torch.Tensor]:
    """timm-layout weights with no trivial values (LN weights near 1, nonzero biases)."""
    g = torch.Generator().manual_seed(seed)
    c, p = spec.embed_dim, spec.patch_size
    n_tok = 1 + (spec.img_size // p) ** 2

    def rnd(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd = {
        "cls_token": rnd(1, 1, c, scale=0.5),
        "pos_embed": rnd(1, n_tok, c, scale=0.5),
        "patch_embed.proj.weight": rnd(c, 3, p, p, scale=1 / math.sqrt(3 * p * p)),
        "patch_embed.proj.bias": rnd(c, scale=0.1),
        "norm.weight": 1 + rnd(c, scale=0.1),
        "norm.bias": rnd(c, scale=0.1),
    }
    for i in range(spec.depth):
        b = f"blocks.{i}."
        sd.update(
            {
                b + "norm1.weight": 1 + rnd(c, scale=0.1),
                b + "norm1.bias": rnd(c, scale=0.1),
                b + "attn.qkv.weight": rnd(3 * c, c, scale=1 / math.sqrt(c)),
                b + "attn.qkv.bias": rnd(3 * c, scale=0.1),
                b + "attn.proj.weight": rnd(c, c, scale=1 / math.sqrt(c)),
                b + "attn.proj.bias": rnd(c, scale=0.1),
                b + "norm2.weight": 1 + rnd(c, scale=0.1),
                b + "norm2.bias": rnd(c, scale=0.1),
                b + "mlp.fc1.weight": rnd(4 * c, c, scale=1 / math.sqrt(c)),
                b + "mlp.fc1.bias": rnd(4 * c, scale=0.1),
                b + "mlp.fc2.weight": rnd(c, 4 * c, scale=1 / math.sqrt(4 * c)),
                b + "mlp.fc2.bias": rnd(c, scale=0.1),
            }
        )
    if representation:
        sd["pre_logits.fc.weight"] = rnd(768, c, scale=1 / math.sqrt(c))
        sd["pre_logits.fc.bias"] = rnd(768, scale=0.1)
    return sd


def vit_reference(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """Plain-torch forward of the original ViT (LN eps 1e-6, exact GELU) from timm-layout
    weights: normalised (B, 3, H, W) -> tanh(pre_logits(LN(CLS))) or LN(CLS) without them."""
    eps = 1e-6
    w = sd
    patch = w["patch_embed.proj.weight"].shape[-1]
    t = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=patch)
    t = t.flatten(2).transpose(1, 2)
    b, _, c = t.shape
    t = torch.cat([w["cls_token"].expand(b, -1, -1), t], 1) + w["pos_embed"]
    n, hd = t.shape[1], c // heads
    depth = len({k.split(".")[1] for k in w if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(t, (c,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        qkv = (h @ w[p + "attn.qkv.weight"].T + w[p + "attn.qkv.bias"]).reshape(b, n, 3, heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-1, -2)) / math.sqrt(hd)).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(b, n, c)
        t = t + a @ w[p + "attn.proj.weight"].T + w[p + "attn.proj.bias"]
        h = F.layer_norm(t, (c,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        h = F.gelu(h @ w[p + "mlp.fc1.weight"].T + w[p + "mlp.fc1.bias"])
        t = t + h @ w[p + "mlp.fc2.weight"].T + w[p + "mlp.fc2.bias"]
    cls = F.layer_norm(t, (c,), w["norm.weight"], w["norm.bias"], eps)[:, 0]
    if "pre_logits.fc.weight" not in w:
        return cls
    return torch.tanh(cls @ w["pre_logits.fc.weight"].T + w["pre_logits.fc.bias"])


def timm_to_hf(sd: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Write timm-layout weights as Hugging Face ViT keys (q/k/v split), ``prefix`` e.g. 'vit.'."""
    c = sd["cls_token"].shape[-1]
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
        "pooler.dense.weight": sd["pre_logits.fc.weight"],
        "pooler.dense.bias": sd["pre_logits.fc.bias"],
    }
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        s, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for j, name in enumerate(("query", "key", "value")):
            out[h + f"attention.attention.{name}.weight"] = sd[s + "attn.qkv.weight"][
                j * c : (j + 1) * c
            ]
            out[h + f"attention.attention.{name}.bias"] = sd[s + "attn.qkv.bias"][
                j * c : (j + 1) * c
            ]
        for timm_name, hf_name in (
            ("norm1", "layernorm_before"),
            ("attn.proj", "attention.output.dense"),
            ("norm2", "layernorm_after"),
            ("mlp.fc1", "intermediate.dense"),
            ("mlp.fc2", "output.dense"),
        ):
            for param in ("weight", "bias"):
                out[h + f"{hf_name}.{param}"] = sd[s + f"{timm_name}.{param}"]
    return {prefix + k: v.clone().contiguous() for k, v in out.items()}


def timm_to_npz(sd: dict[str, torch.Tensor], heads: int) -> dict[str, np.ndarray]:
    """Write timm-layout weights as Google's JAX ``.npz`` (HWIO conv, (in, heads, hd) q/k/v)."""
    c = sd["cls_token"].shape[-1]
    hd = c // heads
    out = {
        "embedding/kernel": sd["patch_embed.proj.weight"].permute(2, 3, 1, 0),
        "embedding/bias": sd["patch_embed.proj.bias"],
        "cls": sd["cls_token"],
        "Transformer/posembed_input/pos_embedding": sd["pos_embed"],
        "Transformer/encoder_norm/scale": sd["norm.weight"],
        "Transformer/encoder_norm/bias": sd["norm.bias"],
        "pre_logits/kernel": sd["pre_logits.fc.weight"].T,
        "pre_logits/bias": sd["pre_logits.fc.bias"],
        "head/kernel": torch.zeros(768, 7),
        "head/bias": torch.zeros(7),
    }
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        s, b = f"blocks.{i}.", f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        for j, name in enumerate(("query", "key", "value")):
            wq = sd[s + "attn.qkv.weight"][j * c : (j + 1) * c]  # (out, in)
            out[mha + f"{name}/kernel"] = wq.T.reshape(c, heads, hd)
            out[mha + f"{name}/bias"] = sd[s + "attn.qkv.bias"][j * c : (j + 1) * c].reshape(
                heads, hd
            )
        out[mha + "out/kernel"] = sd[s + "attn.proj.weight"].T.reshape(heads, hd, c)
        out[mha + "out/bias"] = sd[s + "attn.proj.bias"]
        out[b + "LayerNorm_0/scale"] = sd[s + "norm1.weight"]
        out[b + "LayerNorm_0/bias"] = sd[s + "norm1.bias"]
        out[b + "LayerNorm_2/scale"] = sd[s + "norm2.weight"]
        out[b + "LayerNorm_2/bias"] = sd[s + "norm2.bias"]
        out[b + "MlpBlock_3/Dense_0/kernel"] = sd[s + "mlp.fc1.weight"].T
        out[b + "MlpBlock_3/Dense_0/bias"] = sd[s + "mlp.fc1.bias"]
        out[b + "MlpBlock_3/Dense_1/kernel"] = sd[s + "mlp.fc2.weight"].T
        out[b + "MlpBlock_3/Dense_1/bias"] = sd[s + "mlp.fc2.bias"]
    return {k: v.contiguous().numpy() for k, v in out.items()}


@pytest.fixture(scope="session")
def tiny_vit() -> SimpleNamespace:
    """Tiny in21k ViT weights (timm layout + representation layer) and their writers."""
    spec = TINY_VIT_B16
    sd = _random_vit_state(spec, seed=1, representation=True)

    def write_jx(path: Path) -> None:
        # timm 0.4.5's release: timm keys + pre_logits + a 21k-way head (here 7-way).
        full = dict(sd, **{"head.weight": torch.zeros(7, 768), "head.bias": torch.zeros(7)})
        torch.save(full, path)

    def write_hf_bin(path: Path) -> None:
        torch.save(timm_to_hf(sd, prefix=""), path)

    def write_hf_safetensors(path: Path) -> None:
        hf = timm_to_hf(sd, prefix="vit.")
        hf["classifier.weight"] = torch.zeros(3, spec.embed_dim)  # a fine-tuned head, ignored
        save_file(hf, str(path))

    def write_npz(path: Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, **timm_to_npz(sd, spec.num_heads))

    def write_reference_ckpt(path: Path) -> None:
        base = {f"module.img_encoder.{k}": v for k, v in sd.items()}
        base["module.img_proj.weight"] = torch.zeros(768, 384)
        torch.save({"base_model": base, "epoch": 3}, path)

    def write_timm_hub(path: Path) -> None:
        # timm's current orig_in21k entry: no representation layer, no head.
        save_file({k: v.contiguous() for k, v in sd.items() if "pre_logits" not in k}, str(path))

    return SimpleNamespace(
        spec=spec,
        state=sd,
        writers={
            "jx_pth": write_jx,
            "hf_bin": write_hf_bin,
            "hf_safetensors": write_hf_safetensors,
            "npz": write_npz,
            "reference_ckpt": write_reference_ckpt,
        },
        write_timm_hub=write_timm_hub,
        reference=lambda x: vit_reference(sd, x, spec.num_heads),
        reference_pooled=lambda x: vit_reference(
            {k: v for k, v in sd.items() if "pre_logits" not in k}, x, spec.num_heads
        ),
    )


@pytest.fixture(scope="session")
def tiny_pooled_vit() -> SimpleNamespace:
    """Weights of the tiny pooled architecture (width 768, no representation layer)."""
    spec = TINY_VIT_B16_POOLED
    sd = _random_vit_state(spec, seed=2, representation=False)

    def write(path: Path) -> None:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))

    return SimpleNamespace(spec=spec, write=write, reference=lambda x: vit_reference(sd, x, 12))


# ---------------------------------------------------------------------------------------------
# Tiny CLIP (open_clip's own CLIP class is the reference computation)


@pytest.fixture(scope="session")
def tiny_clip() -> SimpleNamespace:
    """A tiny open_clip ``CLIP`` (the teachers' tiny sizes) with perturbed weights + writers."""
    torch.manual_seed(3)
    model = CLIP(
        embed_dim=512,
        vision_cfg={
            "image_size": 224,
            "patch_size": 32,
            "width": 64,
            "layers": 2,
            "head_width": 32,
        },
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        quick_gelu=True,
    ).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(
                ("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "bias")
            ):
                p.add_(torch.randn_like(p) * 0.1)
    sd = {k: v.clone() for k, v in model.state_dict().items()}

    def write_safetensors(path: Path) -> None:
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))

    def write_bin(path: Path) -> None:
        torch.save(sd, path)

    def write_jit(path: Path) -> None:
        # OpenAI's ViT-B-32.pt is a TorchScript archive of the whole CLIP model.
        scripted = torch.jit.script(model)
        scripted.save(str(path))

    def write_reference_ckpt(path: Path) -> None:
        # The reference's ckpt-last.pth of the CLIP-teacher pretraining (spec key listing).
        base = {}
        for k, v in sd.items():
            if k.startswith("visual."):
                k = k[len("visual.") :]
                k = {"class_embedding": "cls_token", "positional_embedding": "pos_embed"}.get(k, k)
                k = k.replace("transformer.resblocks.", "blocks.")
                base["module.img_encoder." + k] = v
            elif k != "logit_scale":
                base["module.text_encoder." + k] = v
        torch.save({"base_model": base, "epoch": 300}, path)

    return SimpleNamespace(
        model=model,
        writers={
            "safetensors": write_safetensors,
            "bin": write_bin,
            "jit": write_jit,
            "reference_ckpt": write_reference_ckpt,
        },
    )


def uint8_images(n: int, seed: int, size: int = 224) -> torch.Tensor:
    """Random uint8 RGB images (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), generator=g, dtype=torch.uint8)


@pytest.fixture
def images() -> torch.Tensor:
    """Three random uint8 RGB 224x224 images."""
    return uint8_images(3, seed=7)
