"""Load checkpoints written by the reference code (qizekun/ReCon) into this package's models."""

from __future__ import annotations

import re
from collections.abc import Mapping
from os import PathLike
from typing import Any

import torch
from torch import nn

from ..models import (
    build_classifier,
    build_partseg,
    build_pretrainer,
    default_feature_blocks,
    normalize_config,
)
from .keymap import KINDS, TEACHER_PREFIXES, to_ours

#: Heads per width in the reference's size variants (head dim 64); used when not overridden.
DEFAULT_NUM_HEADS = {192: 3, 256: 4, 384: 6}

#: Reference defaults for what the weights cannot tell (cfgs/pretrain/base.yaml, cfgs/full/*).
DEFAULTS: dict[str, dict[str, Any]] = {
    "pretrain": {
        "num_group": 64,
        "drop_path_rate": 0.1,
        "mask_ratio": 0.6,
        "mask_type": "rand",
        "loss": "cdl2",
    },
    "classification": {"num_group": 64, "group_size": 32, "drop_path_rate": 0.2},
    # segmentation/models/pt.py hard-codes these
    "partseg": {"num_group": 128, "group_size": 32, "drop_path_rate": 0.1},
}

#: Our builder kind (models.factory) of each checkpoint kind.
_BUILDER_KIND = {"pretrain": "pretrainer", "classification": "classifier", "partseg": "partseg"}

_STATE_KEYS = ("base_model", "model_state_dict", "state_dict", "model")

Source = str | PathLike | Mapping[str, Any]


def read_state_dict(source: Source) -> dict[str, torch.Tensor]:
    """The model state dict inside a checkpoint file or dict, without wrapper prefixes.

    Accepts the reference's ``{"base_model": ...}`` files (with or without DataParallel's
    ``module.`` prefix; the legacy ``base_model.`` prefix is dropped too), a segmentation
    ``model_state_dict``, a Lightning ``state_dict``, or a plain state dict. Files are read with
    ``torch.load(..., weights_only=True)`` on the CPU.
    """
    ckpt = (
        source
        if isinstance(source, Mapping)
        else torch.load(source, map_location="cpu", weights_only=True)
    )
    for key in _STATE_KEYS:
        if isinstance(ckpt.get(key), Mapping):
            ckpt = ckpt[key]
            break
    state: dict[str, torch.Tensor] = {}
    for key, value in ckpt.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"entry {key!r} of the state dict is not a tensor ({type(value)})")
        key = re.sub(r"^(module\.)+", "", key)
        if key.startswith("base_model."):
            key = key[len("base_model.") :]
        state[key] = value
    return state


def infer_kind(state: Mapping[str, torch.Tensor]) -> str:
    """``pretrain``, ``classification`` or ``partseg`` from the keys of a reference state dict."""
    if any(k.startswith("MAE_encoder.") for k in state):
        return "pretrain"
    if any(k.startswith("cls_head_finetune.") for k in state):
        return "classification"
    if any(k.startswith("label_conv.") for k in state):
        return "partseg"
    raise ValueError(
        "cannot tell the checkpoint kind: no 'MAE_encoder.*' (pretrain), 'cls_head_finetune.*' "
        "(classification) or 'label_conv.*' (partseg) keys; pass kind= explicitly"
    )


def _count_indexed(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _shape(state: Mapping[str, torch.Tensor], key: str) -> torch.Size:
    if key not in state:
        raise ValueError(f"the checkpoint lacks {key!r}, needed to infer the model size")
    return state[key].shape


def infer_config(state: Mapping[str, torch.Tensor], kind: str) -> dict[str, Any]:
    """Every hyper-parameter the weights determine (reference names).

    Pretrain: ``trans_dim``, ``depth``, ``mlp_ratio``, ``decoder_depth``, ``group_size``,
    ``img_dim``, ``text_dim``, ``self_contrastive``. Classification: ``trans_dim``, ``depth``,
    ``mlp_ratio``, ``cls_dim``, ``head_type`` (``full`` for the MLP head; ``mlp3`` builds the same
    layers and may be requested). Partseg: ``trans_dim``, ``depth``, ``mlp_ratio``,
    ``num_parts``, ``num_categories``, ``label_dim``, ``propagation_dims``, ``head_dims`` and
    ``num_feature_blocks`` (how many blocks feed the head; which ones the weights cannot tell).
    """
    if kind == "partseg":
        try:
            return _infer_partseg(state)
        except ValueError as err:
            raise ValueError(f"part-segmentation checkpoint: {err}") from err
    root = "MAE_encoder." if kind == "pretrain" else ""
    dim = _shape(state, f"{root}cls_token")[-1]
    if _shape(state, f"{root}encoder.second_conv.3.weight")[0] != dim:
        raise ValueError("the mini-PointNet output size differs from trans_dim (encoder_dims)")
    cfg: dict[str, Any] = {
        "trans_dim": dim,
        "depth": _count_indexed(state, f"{root}blocks.blocks."),
        "mlp_ratio": _shape(state, f"{root}blocks.blocks.0.mlp.fc1.weight")[0] / dim,
    }
    if kind == "pretrain":
        cfg["decoder_depth"] = _count_indexed(state, "MAE_decoder.blocks.")
        cfg["group_size"] = _shape(state, "increase_dim.0.weight")[0] // 3
        cfg["img_dim"] = state["img_proj.weight"].shape[0] if "img_proj.weight" in state else None
        cfg["text_dim"] = (
            state["text_proj.weight"].shape[0] if "text_proj.weight" in state else None
        )
        cfg["self_contrastive"] = "cls_proj.0.weight" in state
    else:
        linear = "cls_head_finetune.8.weight" not in state
        cfg["head_type"] = "linear" if linear else "full"
        last = "cls_head_finetune.0.weight" if linear else "cls_head_finetune.8.weight"
        cfg["cls_dim"] = _shape(state, last)[0]
    return cfg


def _infer_partseg(state: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    dim = _shape(state, "cls_token")[-1]
    if _shape(state, "encoder.second_conv.3.weight")[0] != dim:
        raise ValueError("the mini-PointNet output size differs from trans_dim (encoder_dims)")
    label = _shape(state, "label_conv.0.weight")
    n_prop = _count_indexed(state, "propagation_0.mlp_convs.")
    if n_prop == 0:
        raise ValueError("the checkpoint has no 'propagation_0.mlp_convs.*' layers")
    prop_dims = tuple(
        _shape(state, f"propagation_0.mlp_convs.{i}.weight")[0] for i in range(n_prop)
    )
    local = _shape(state, "propagation_0.mlp_convs.0.weight")[1] - 3
    if local <= 0 or local % dim:
        raise ValueError(
            f"the propagation input ({local} + 3 channels) is not a multiple of trans_dim={dim}"
        )
    cfg: dict[str, Any] = {
        "trans_dim": dim,
        "depth": _count_indexed(state, "blocks.blocks."),
        "mlp_ratio": _shape(state, "blocks.blocks.0.mlp.fc1.weight")[0] / dim,
        "num_parts": _shape(state, "convs3.weight")[0],
        "num_categories": label[1],
        "label_dim": label[0],
        "propagation_dims": prop_dims,
        "head_dims": (_shape(state, "convs1.weight")[0], _shape(state, "convs2.weight")[0]),
        "num_feature_blocks": local // dim,
    }
    head_in = _shape(state, "convs1.weight")[1]
    expected = prop_dims[-1] + (2 * (local // dim) + 1) * dim + label[0]
    if head_in != expected:
        raise ValueError(
            f"convs1 takes {head_in} channels; this layout gives {expected} (propagation "
            f"{prop_dims[-1]} + max/mean {2 * local} + queries {dim} + label {label[0]})"
        )
    return cfg


def _feature_blocks(cfg: dict[str, Any]) -> None:
    """Check (or pick) ``feature_blocks`` against the number of blocks the weights imply."""
    count = cfg.pop("num_feature_blocks")
    if cfg.get("feature_blocks") is None:
        try:
            cfg["feature_blocks"] = default_feature_blocks(cfg["depth"])
        except ValueError:
            cfg["feature_blocks"] = ()
    if len(cfg["feature_blocks"]) != count:
        raise ValueError(
            f"the weights take the local tokens of {count} blocks but feature_blocks="
            f"{tuple(cfg['feature_blocks'])}; pass feature_blocks=(...) with {count} indices"
        )


def _merge(kind: str, inferred: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    given = normalize_config(_BUILDER_KIND[kind], overrides)
    for name, value in given.items():
        if isinstance(value, list):  # YAML / CLI sequences against inferred tuples
            value = tuple(value)
        if name not in inferred or inferred[name] == value:
            continue
        if name == "head_type" and {value, inferred[name]} == {"full", "mlp3"}:
            continue  # same layers; the override picks the recipe name
        raise ValueError(
            f"override {name}={value!r} contradicts the checkpoint's weights ({inferred[name]!r})"
        )
    cfg = {**DEFAULTS[kind], **inferred, **given}
    if "num_heads" not in cfg:
        if cfg["trans_dim"] not in DEFAULT_NUM_HEADS:
            raise ValueError(
                f"num_heads cannot be read from the weights and trans_dim={cfg['trans_dim']} is "
                "not a reference size; pass num_heads="
            )
        cfg["num_heads"] = DEFAULT_NUM_HEADS[cfg["trans_dim"]]
    if kind == "partseg":
        _feature_blocks(cfg)
    return cfg


def convert_official(
    state: Mapping[str, torch.Tensor], kind: str | None = None, **overrides: Any
) -> tuple[str, dict[str, Any], dict[str, torch.Tensor]]:
    """Rename a reference state dict and work out the model that takes it.

    Args:
        state: output of :func:`read_state_dict`.
        kind: ``pretrain`` | ``classification`` | ``partseg``; inferred from the keys when None.
        overrides: hyper-parameters the weights do not fix (reference names).

    Returns:
        ``(kind, config, converted)``: config = kwargs of :func:`build_pretrainer` /
        :func:`build_classifier` / :func:`build_partseg`; converted = the tensors under our
        names (teachers dropped).

    Raises:
        ValueError: naming every key no rule places.
    """
    kind = kind or infer_kind(state)
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
    config = _merge(kind, infer_config(state, kind), overrides)
    converted: dict[str, torch.Tensor] = {}
    unplaced: list[str] = []
    for key, value in state.items():
        if kind == "pretrain" and key.startswith(TEACHER_PREFIXES):
            continue  # frozen teachers live outside the model (ckpt-last.pth keeps them)
        ours = to_ours(key, kind, config.get("head_type"))
        if ours is None:
            unplaced.append(key)
        else:
            converted[ours] = value
    if unplaced:
        raise ValueError(f"cannot place {len(unplaced)} checkpoint keys: {unplaced}")
    return kind, config, converted


def build_model(kind: str, config: Mapping[str, Any]) -> nn.Module:
    """The empty model of a converted checkpoint (``ReConPretrainer`` / ``ReConClassifier`` /
    ``ReConPartSegmentation``)."""
    if kind == "partseg":
        return build_partseg(**config)
    return build_pretrainer(**config) if kind == "pretrain" else build_classifier(**config)


def check_fits(model: nn.Module, converted: Mapping[str, torch.Tensor]) -> None:
    """Raise naming every converted key the model lacks, every shape that differs, and every
    model entry the checkpoint does not fill."""
    target = model.state_dict()
    problems = [f"no place for {k!r}" for k in converted if k not in target]
    problems += [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in converted.items()
        if k in target and v.shape != target[k].shape
    ]
    problems += [f"not in the checkpoint: {k!r}" for k in target if k not in converted]
    if problems:
        raise ValueError("checkpoint does not fit the model:\n  " + "\n  ".join(problems))


def load_official(path: Source, kind: str | None = None, **overrides: Any) -> nn.Module:
    """Build the model of a reference checkpoint and load every weight, in eval mode.

    Args:
        path: a ``.pth`` written by the reference (``ckpt-epoch-*.pth``, ``ckpt-last.pth``,
            ``ckpt-best.pth``, the segmentation ``best_model.pth`` with its
            ``model_state_dict``), a bare state dict, or an already loaded checkpoint dict.
        kind: ``pretrain`` (returns :class:`ReConPretrainer`), ``classification``
            (:class:`ReConClassifier`) or ``partseg`` (:class:`ReConPartSegmentation`);
            inferred from the keys when None.
        overrides: what the weights do not fix, under the reference's names: ``num_heads``
            (default: 3/4/6 for widths 192/256/384), ``num_group`` (64; partseg 128),
            ``group_size`` (classification, partseg: 32), ``decoder_num_heads`` (= num_heads),
            ``drop_path_rate``, ``mask_ratio``, ``mask_type``, ``loss``, ``type``/``head_type``
            (``mlp3``), ``feature_blocks`` (partseg: default (3, 7, 11) at depth 12) ...

    Raises:
        ValueError: a key without a place, a shape that does not fit, or a contradicting
            override.
    """
    kind, config, converted = convert_official(read_state_dict(path), kind, **overrides)
    model = build_model(kind, config)
    check_fits(model, converted)
    model.load_state_dict(converted, strict=True)
    return model.eval()
