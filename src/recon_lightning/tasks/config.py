"""Config plumbing shared by the task modules and entry points: plain containers, instantiation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Encoder hyper-parameters (reference names) a downstream model accepts; the encoder group's
#: decoder keys (``decoder_depth``, ``decoder_num_heads``) only concern pretraining.
ENCODER_KEYS: tuple[str, ...] = (
    "trans_dim",
    "depth",
    "num_heads",
    "num_group",
    "group_size",
    "drop_path_rate",
    "mlp_ratio",
    "group_backend",
)


def plain(cfg: Any) -> Any:
    """DictConfig / ListConfig -> resolved plain containers; anything else unchanged.

    Hydra hands task constructors ``DictConfig`` objects when they are instantiated with
    ``_recursive_=False``; hyper-parameters saved into checkpoints must be plain.
    """
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(cfg, DictConfig | ListConfig):
        return OmegaConf.to_container(cfg, resolve=True)
    if isinstance(cfg, Mapping):
        return {k: plain(v) for k, v in cfg.items()}
    return cfg


def instantiate(cfg: Any, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that raises our own error, not Hydra's wrapper around it.

    Hydra wraps every exception raised inside a ``_target_`` (once per nesting level); a user who
    forgot a dataset or teacher weights should read our message, not a chain of wrappers.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate as hydra_instantiate

    try:
        return hydra_instantiate(cfg, **kwargs)
    except InstantiationException as err:
        cause: BaseException = err
        while isinstance(cause, InstantiationException) and cause.__cause__ is not None:
            cause = cause.__cause__
        if cause is err:
            raise
        raise cause from None


def encoder_kwargs(encoder: Mapping[str, Any] | None) -> dict[str, Any]:
    """The downstream-relevant part of an encoder config (``conf/encoder/*.yaml``).

    ``encoder_dims`` (the reference's alias of ``trans_dim``) is accepted and must agree.
    """
    cfg = dict(plain(encoder) or {})
    if "encoder_dims" in cfg:
        dims = cfg.pop("encoder_dims")
        if cfg.setdefault("trans_dim", dims) != dims:
            raise ValueError(f"encoder_dims={dims} must equal trans_dim={cfg['trans_dim']}")
    return {k: v for k, v in cfg.items() if k in ENCODER_KEYS}


def datamodule_of(module: Any) -> Any | None:
    """The DataModule attached to a LightningModule's trainer, or None."""
    trainer = getattr(module, "_trainer", None)
    return getattr(trainer, "datamodule", None) if trainer is not None else None


def compile_blocks(model: Any) -> int:
    """``torch.compile`` every transformer block of ``model`` in place (``task.compile=true``).

    Only the blocks (``*.blocks[i]`` of the encoder and decoder) are compiled: the point ops
    (FPS, kNN, Chamfer) stay outside the graph, and parameter names do not change, so
    checkpoints load either way. Returns the number of blocks compiled.
    """
    from torch import nn

    count = 0
    for name, module in model.named_modules():
        if name.split(".")[-1] == "blocks" and isinstance(module, nn.ModuleList):
            for block in module:
                block.compile()
                count += 1
    return count
