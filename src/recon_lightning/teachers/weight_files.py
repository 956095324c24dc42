"""Finding teacher weight files on disk (never on the network) and reading them as state dicts.

Teacher weights come from, in order: an explicit path given in the config
(``teachers.image.checkpoint=PATH``), the user's Hugging Face hub cache, or the caches the
reference's own libraries downloaded into (torch hub for timm 0.4.5, ``~/.cache/clip`` for OpenAI
CLIP). Nothing is downloaded here: when no file is found, :class:`WeightsNotFoundError` says what to
download and where to put it.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import try_to_load_from_cache

StateDict = dict[str, torch.Tensor]


class WeightsNotFoundError(FileNotFoundError):
    """No weight file for a teacher was found in any of the places searched."""


def hf_hub_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved from the environment now (not at import time).

    Same precedence as ``huggingface_hub``: ``HF_HUB_CACHE``, the legacy ``HUGGINGFACE_HUB_CACHE``,
    then ``$HF_HOME/hub`` with ``HF_HOME`` defaulting to ``$XDG_CACHE_HOME/huggingface``.
    """
    env = os.environ
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(var):
            return Path(os.path.expandvars(env[var])).expanduser()
    xdg = env.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = env.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def torch_hub_checkpoints_dir() -> Path:
    """Where timm 0.4.5 (the reference's version) stored downloaded weights: torch hub's cache."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def openai_clip_cache_dir() -> Path:
    """Where the reference's vendored OpenAI ``clip.load`` stored its weights."""
    return Path("~/.cache/clip").expanduser()


@dataclass(frozen=True)
class HubFile:
    """A file of a Hugging Face hub repository, looked up in the local hub cache only."""

    repo_id: str
    filenames: tuple[str, ...]  # alternatives, most preferred first

    def find(self) -> Path | None:
        """The cached file, or ``None``. Reads the cache's ``refs/main`` -> snapshot layout."""
        cache = hf_hub_cache_dir()
        for name in self.filenames:
            hit = try_to_load_from_cache(self.repo_id, name, cache_dir=cache)
            if isinstance(hit, str) and os.path.isfile(hit):
                return Path(hit)
        return None

    def describe(self) -> str:
        """Where this was looked for, for error messages."""
        names = " or ".join(self.filenames)
        return f"Hugging Face hub cache {hf_hub_cache_dir()}: {self.repo_id} ({names})"

    def how_to_get(self) -> str:
        """A command that puts the file into the hub cache."""
        return f"hf download {self.repo_id} {self.filenames[0]}"


@dataclass(frozen=True)
class CacheFile:
    """A file at a fixed name inside a library cache folder (torch hub, ``~/.cache/clip``)."""

    folder: Callable[[], Path]
    filename: str
    url: str
    label: str

    def find(self) -> Path | None:
        """The file if it exists, else ``None``."""
        path = self.folder() / self.filename
        return path if path.is_file() else None

    def describe(self) -> str:
        """Where this was looked for, for error messages."""
        return f"{self.label}: {self.folder() / self.filename}"

    def how_to_get(self) -> str:
        """A command that puts the file where it is looked for."""
        return f"wget -P {self.folder()} {self.url}"


Source = HubFile | CacheFile


@dataclass(frozen=True)
class WeightSpec:
    """A teacher's weights: a human name, and the places they may be, in preference order."""

    what: str
    sources: tuple[Source, ...]
    #: File names recognised inside a folder given as the explicit checkpoint.
    folder_names: tuple[str, ...] = field(default=())

    def all_folder_names(self) -> tuple[str, ...]:
        """File names to look for when the explicit checkpoint is a folder."""
        names: list[str] = list(self.folder_names)
        for src in self.sources:
            names.extend(src.filenames if isinstance(src, HubFile) else (src.filename,))
        return tuple(dict.fromkeys(names))


def resolve_weights(spec: WeightSpec, checkpoint: str | os.PathLike[str] | None, key: str) -> Path:
    """The weight file to load for ``spec``.

    Args:
        spec: the teacher's weight description.
        checkpoint: an explicit file (or a folder holding one of the known file names); when given,
            nothing else is searched.
        key: the config key users set to point at a file (e.g. ``teachers.image.checkpoint``),
            quoted in the error message.

    Raises:
        FileNotFoundError: the explicit checkpoint does not exist.
        WeightsNotFoundError: nothing found in any cache.
    """
    if checkpoint is not None:
        path = Path(os.path.expandvars(str(checkpoint))).expanduser()
        if path.is_dir():
            for name in spec.all_folder_names():
                if (path / name).is_file():
                    return path / name
            raise FileNotFoundError(
                f"{key}={path} is a folder without any of {', '.join(spec.all_folder_names())}"
            )
        if not path.is_file():
            raise FileNotFoundError(f"{key}={path}: no such file")
        return path
    for src in spec.sources:
        found = src.find()
        if found is not None:
            return found
    looked = "\n".join(f"  - {src.describe()}" for src in spec.sources)
    get = "\n".join(f"  {src.how_to_get()}" for src in spec.sources)
    raise WeightsNotFoundError(
        f"No weights found for the {spec.what}. Looked in:\n{looked}\n"
        f"Download one of them on a machine with network access, e.g. (`hf` is huggingface_hub's "
        f"CLI; older releases call it `huggingface-cli`)\n{get}\n"
        "and copy it into the same cache here (HF_HUB_CACHE / HF_HOME, TORCH_HOME), or point at "
        f"the file directly: {key}=/path/to/file. For a run without pretrained weights use "
        "teachers=random."
    )


def _is_torchscript_archive(path: Path) -> bool:
    """True for TorchScript zips (OpenAI's ``ViT-B-32.pt``), which ``torch.load`` cannot read."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") for n in zf.namelist())


def read_state_dict(path: Path) -> StateDict:
    """Read a weight file into a flat ``{name: tensor}`` dict on the CPU.

    Handles ``.safetensors``, ``.npz`` (Google's JAX release; ``/``-separated names kept), pickled
    torch files (loaded with ``weights_only=True``, unwrapping a ``state_dict``/``model``/
    ``base_model`` entry) and TorchScript archives (OpenAI's CLIP release; only tensors are read).
    """
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: torch.from_numpy(np.array(npz[k])) for k in npz.files}
    if _is_torchscript_archive(path):
        with warnings.catch_warnings():
            # torch.jit is deprecated; we only take the tensors out of the archive.
            warnings.simplefilter("ignore", FutureWarning)
            module = torch.jit.load(str(path), map_location="cpu")
        return {k: v.detach().clone() for k, v in module.state_dict().items()}
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("state_dict", "model", "base_model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(obj).__name__})")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def strip_prefix(sd: StateDict, prefixes: Sequence[str]) -> StateDict:
    """Remove the first of ``prefixes`` that every key starts with, if any (e.g. ``module.``)."""
    for p in prefixes:
        if sd and all(k.startswith(p) for k in sd):
            return {k[len(p) :]: v for k, v in sd.items()}
    return sd


def select_prefix(sd: StateDict, prefix: str) -> StateDict | None:
    """The entries under ``prefix`` with the prefix removed, or ``None`` if there are none."""
    out = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}
    return out or None


def load_exact(module: torch.nn.Module, sd: StateDict, source: str) -> None:
    """``load_state_dict(strict=True)`` with an error that names the file and the mismatch."""
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if own[k].shape != sd[k].shape)
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}")
        if wrong:
            shapes = [f"{k}: file {tuple(sd[k].shape)}, model {tuple(own[k].shape)}" for k in wrong]
            parts.append(f"shape mismatch {shapes[:4]}")
        what = type(module).__name__
        raise ValueError(f"weights in {source} do not fit {what}: " + "; ".join(parts))
    module.load_state_dict(sd, strict=True)
