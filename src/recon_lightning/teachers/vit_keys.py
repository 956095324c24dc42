"""Key mapping of the ImageNet-21k ViT-B/16 weight files onto timm's ``VisionTransformer``.

Every function returns a state dict in current timm's layout (``cls_token``, ``pos_embed``,
``patch_embed.proj.*``, ``blocks.N.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}.*``,
``norm.*``) plus the representation layer as ``pre_logits.fc.{weight,bias}`` when the file has it.
Classifier heads are dropped. Supported layouts:

- ``timm``: timm's own layout. The original release file that timm 0.4.5 (the reference) loaded,
  ``jx_vit_base_patch16_224_in21k-e5005f0a.pth``, has ``pre_logits.fc.*`` and a 21843-way
  ``head.*``; the current hub entry ``timm/vit_base_patch16_224.orig_in21k`` has neither. A
  reference ``ckpt-last.pth`` holds the same layout under ``module.img_encoder.``.
- ``hf``: Hugging Face ``google/vit-base-patch16-224-in21k`` (``ViTModel``, keys with or without a
  ``vit.`` prefix): separate q/k/v (concatenated into timm's ``qkv``), ``pooler.dense`` = the
  representation layer (Hugging Face's timm conversion script maps ``pre_logits.fc`` onto it; that
  the hub file equals the release numerically is not checked here, no weights being at hand). Its
  config runs LayerNorm with eps 1e-12; loaded into timm's module it runs with the original 1e-6.
- ``npz``: Google's JAX release (``ViT-B_16.npz``): ``Transformer/encoderblock_N/...`` kernels in
  (in, out) / (in, heads, head_dim) order, ``pre_logits/{kernel,bias}``.
"""

from __future__ import annotations

import re

import torch

from .weight_files import StateDict, select_prefix, strip_prefix

#: The representation ("pre-logits") layer's key prefix in the timm-layout dicts returned here.
REPRESENTATION = "pre_logits.fc."


def detect_layout(sd: StateDict) -> str:
    """Which layout ``sd`` is in: ``"timm"``, ``"hf"`` or ``"npz"``; ``ValueError`` otherwise."""
    keys = set(sd)
    if any(k.endswith("embedding/kernel") for k in keys):
        return "npz"
    if any(k.endswith("embeddings.cls_token") for k in keys):
        return "hf"
    if "cls_token" in keys and any(k.startswith("blocks.0.attn.qkv") for k in keys):
        return "timm"
    sample = sorted(keys)[:6]
    raise ValueError(f"not a ViT-B/16 in21k weight file: unrecognised keys {sample} ...")


def to_timm(sd: StateDict) -> StateDict:
    """Any supported file's dict -> timm layout (+ ``pre_logits.fc.*`` when present)."""
    sd = strip_prefix(sd, ("module.",))
    # A reference ckpt-last.pth keeps its image teacher under img_encoder.
    sd = select_prefix(sd, "img_encoder.") or sd
    layout = detect_layout(sd)
    if layout == "npz":
        return from_npz(sd)
    if layout == "hf":
        return from_hf(sd)
    return from_timm(sd)


def from_timm(sd: StateDict) -> StateDict:
    """timm layout: drop the classifier ``head.*``; everything else is already in place."""
    return {k: v for k, v in sd.items() if not k.startswith("head.")}


_HF_BLOCK = re.compile(r"encoder\.layer\.(\d+)\.(.+)")
_HF_BLOCK_MAP = {
    "layernorm_before": "norm1",
    "attention.output.dense": "attn.proj",
    "layernorm_after": "norm2",
    "intermediate.dense": "mlp.fc1",
    "output.dense": "mlp.fc2",
}
_HF_TOP_MAP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
    "pooler.dense.weight": REPRESENTATION + "weight",
    "pooler.dense.bias": REPRESENTATION + "bias",
}


def from_hf(sd: StateDict) -> StateDict:
    """Hugging Face ``ViTModel`` layout -> timm layout; q, k, v rows are stacked into ``qkv``."""
    # ViTModel saves bare names; models wrapping it (ViTForImageClassification) add "vit.".
    sd = {k.removeprefix("vit."): v for k, v in sd.items()}
    out: StateDict = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        if key in _HF_TOP_MAP:
            out[_HF_TOP_MAP[key]] = value
            continue
        m = _HF_BLOCK.fullmatch(key)
        if m is None:
            continue  # e.g. a classifier head of ViTForImageClassification
        i, rest = int(m.group(1)), m.group(2)
        qm = re.fullmatch(r"attention\.attention\.(query|key|value)\.(weight|bias)", rest)
        if qm is not None:
            qkv.setdefault((i, qm.group(2)), {})[qm.group(1)] = value
            continue
        module, _, param = rest.rpartition(".")
        if module in _HF_BLOCK_MAP:
            out[f"blocks.{i}.{_HF_BLOCK_MAP[module]}.{param}"] = value
    for (i, param), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"layer {i} {param}: q/k/v incomplete, found {sorted(parts)}")
        # timm's qkv output rows are [q; k; v], each in head-major order like HF's.
        out[f"blocks.{i}.attn.qkv.{param}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]], dim=0
        )
    return out


def from_npz(sd: StateDict) -> StateDict:
    """Google JAX ``.npz`` layout -> timm layout (transposes as timm's ``_load_weights`` does)."""
    prefix = ""
    for p in ("opt/target/", "params/"):
        if f"{p}embedding/kernel" in sd:
            prefix = p
    w = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    out: StateDict = {
        # conv kernel HWIO -> OIHW
        "patch_embed.proj.weight": w["embedding/kernel"].permute(3, 2, 0, 1),
        "patch_embed.proj.bias": w["embedding/bias"],
        "cls_token": w["cls"],
        "pos_embed": w["Transformer/posembed_input/pos_embedding"],
        "norm.weight": w["Transformer/encoder_norm/scale"],
        "norm.bias": w["Transformer/encoder_norm/bias"],
    }
    if "pre_logits/kernel" in w:
        out[REPRESENTATION + "weight"] = w["pre_logits/kernel"].t()
        out[REPRESENTATION + "bias"] = w["pre_logits/bias"]
    depth = len({k.split("/")[1] for k in w if k.startswith("Transformer/encoderblock_")})
    for i in range(depth):
        b = f"Transformer/encoderblock_{i}/"
        mha = b + "MultiHeadDotProductAttention_1/"
        t = f"blocks.{i}."
        out[t + "norm1.weight"] = w[b + "LayerNorm_0/scale"]
        out[t + "norm1.bias"] = w[b + "LayerNorm_0/bias"]
        # q/k/v kernels are (in, heads, head_dim): flatten the output dims, then (out, in)
        out[t + "attn.qkv.weight"] = torch.cat(
            [w[f"{mha}{n}/kernel"].flatten(1).t() for n in ("query", "key", "value")]
        )
        out[t + "attn.qkv.bias"] = torch.cat(
            [w[f"{mha}{n}/bias"].reshape(-1) for n in ("query", "key", "value")]
        )
        # out kernel is (heads, head_dim, out): flatten the input dims, then (out, in)
        out[t + "attn.proj.weight"] = w[mha + "out/kernel"].flatten(0, 1).t()
        out[t + "attn.proj.bias"] = w[mha + "out/bias"]
        out[t + "norm2.weight"] = w[b + "LayerNorm_2/scale"]
        out[t + "norm2.bias"] = w[b + "LayerNorm_2/bias"]
        for r in range(2):
            out[t + f"mlp.fc{r + 1}.weight"] = w[b + f"MlpBlock_3/Dense_{r}/kernel"].t()
            out[t + f"mlp.fc{r + 1}.bias"] = w[b + f"MlpBlock_3/Dense_{r}/bias"]
    return {k: v.contiguous() for k, v in out.items()}
