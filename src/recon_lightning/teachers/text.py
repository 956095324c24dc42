"""Frozen text teacher: OpenAI CLIP ViT-B/32 text tower on the reference's prompts.

A category description becomes one of 60 prompts (``prompts.py``), is BPE-tokenised to 77 tokens
(open_clip's tokenizer ships the vocabulary, so this works offline), and the tower returns the
EOT token's feature projected to 512-d, as ``clip.encode_text`` does.

The tower is frozen and deterministic, so a description's 60 prompt features are computed once, as
one batch, and kept (``prompt_features``); ``forward`` picks the sampled prompt's row. This is the
same function as encoding the sampled prompt every step, far cheaper (ShapeNet-55 has 55
descriptions), and bitwise equal to the feature cache, which stores the same 60-prompt blocks.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Sequence

import torch
from open_clip.tokenizer import SimpleTokenizer

from .clip import CLIP_B32_TEXT, CLIP_B32_WEIGHTS, TINY_CLIP_TEXT, build_clip_text, clip_text_state
from .frozen import FrozenModule
from .prompts import NUM_PROMPTS, all_prompts, sample_prompt_indices
from .weight_files import load_exact, read_state_dict, resolve_weights

TEXT_TEACHERS: tuple[str, ...] = ("clip_b32",)


class TextTeacher(FrozenModule):
    """A frozen CLIP text tower: descriptions -> (B, 512) prompt features.

    Attributes:
        name: the variant (``clip_b32``).
        out_dim: 512.
        context_length: 77 BPE tokens (longer prompts are truncated, EOT kept last).
        source: the weight file loaded, or ``"random"``.
        max_memo: how many descriptions' (60, 512) prompt features are kept (least recently used
            dropped first; 4096 x 120 KiB = 480 MiB at most).
    """

    def __init__(
        self,
        tiny: bool = False,
        name: str = "clip_b32",
        source: str = "random",
        max_memo: int = 4096,
    ) -> None:
        super().__init__()
        spec = TINY_CLIP_TEXT if tiny else CLIP_B32_TEXT
        self.name = name
        self.text = build_clip_text(spec)
        self.out_dim: int = spec.output_dim
        self.context_length: int = spec.context_length
        self.tokenizer = SimpleTokenizer(context_length=spec.context_length)
        self.source = source
        self.max_memo = max_memo
        self._memo: OrderedDict[str, torch.Tensor] = OrderedDict()
        # New weights (a state dict loaded later) invalidate the remembered features.
        self.register_load_state_dict_post_hook(_forget_features)
        self.freeze()

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> int64 (B, 77) BPE ids: [SOT] tokens [EOT] then zero padding."""
        return self.tokenizer(list(texts), context_length=self.context_length)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        """Full prompt strings -> (B, 512) features (no normalisation).

        Runs outside any autocast region, in the tower's own dtype (fp32 as in the reference), so
        remembered features do not depend on where they were first asked for.
        """
        device = self.text.token_embedding.weight.device
        with torch.autocast(device.type, enabled=False):
            return self.text(self.tokenize(texts).to(device))

    def forward(
        self,
        descriptions: Sequence[str],
        prompt_idx: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Features of one prompt per description.

        Args:
            descriptions: B category descriptions.
            prompt_idx: int64 (B,) prompt numbers in 0..59; drawn uniformly with ``generator``
                (or torch's global RNG) when ``None``, as the reference's random prefix/suffix.
            generator: CPU generator for the draw.

        Returns:
            (B, 512) features.
        """
        descriptions = list(descriptions)
        if prompt_idx is None:
            prompt_idx = sample_prompt_indices(len(descriptions), generator)
        if prompt_idx.shape != (len(descriptions),):
            raise ValueError(
                f"prompt_idx must have shape ({len(descriptions)},), got {tuple(prompt_idx.shape)}"
            )
        if prompt_idx.numel() and (prompt_idx.min() < 0 or prompt_idx.max() >= NUM_PROMPTS):
            raise IndexError(f"prompt indices must lie in 0..{NUM_PROMPTS - 1}")
        unique = list(dict.fromkeys(descriptions))
        row = {d: i for i, d in enumerate(unique)}
        tables = torch.stack([self.prompt_features(d) for d in unique])  # (U, 60, 512)
        which = torch.tensor([row[d] for d in descriptions], device=tables.device)
        return tables[which, prompt_idx.to(tables.device).long()]

    def prompt_features(self, description: str) -> torch.Tensor:
        """(60, 512) features of all prompts of one description, in prompt-index order.

        Computed as one batch of 60 on first use and remembered (see the module docstring).
        """
        weight = self.text.token_embedding.weight
        hit = self._memo.get(description)
        if hit is not None and hit.device == weight.device and hit.dtype == weight.dtype:
            self._memo.move_to_end(description)
            return hit
        feats = self.encode(all_prompts(description))
        self._memo[description] = feats
        while len(self._memo) > self.max_memo:
            self._memo.popitem(last=False)
        return feats

    def class_prototypes(self, names: Sequence[str]) -> torch.Tensor:
        """Zero-shot class embeddings (spec §4.6): (K, 512), per class the plain sum (no
        normalisation) of its 60 prompt features."""
        protos = [self.prompt_features(n).sum(0) for n in names]
        return torch.stack(protos) if protos else torch.empty(0, self.out_dim)

    def extra_repr(self) -> str:
        return f"name={self.name}, out_dim={self.out_dim}, prompts={NUM_PROMPTS}"


def _forget_features(module: TextTeacher, incompatible_keys: object) -> None:
    """Load post hook: remembered prompt features belong to the old weights."""
    module._memo.clear()


def build_text_teacher(
    name: str = "clip_b32",
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    tiny: bool = False,
) -> TextTeacher:
    """Build a frozen text teacher.

    Args:
        name: ``clip_b32`` (the only text teacher of the reference).
        checkpoint: OpenAI/open_clip CLIP file (or folder holding one); ``None`` searches the
            caches.
        pretrained: ``False`` keeps the random initialisation.
        tiny: small tower with the real 512-d output and tokenizer (tests, CPU demos).

    Raises:
        WeightsNotFoundError: ``pretrained`` and no weight file was found.
    """
    if name not in TEXT_TEACHERS:
        raise ValueError(f"unknown text teacher {name!r}; choose one of {TEXT_TEACHERS}")
    teacher = TextTeacher(tiny=tiny, name=name)
    if pretrained:
        path = resolve_weights(CLIP_B32_WEIGHTS, checkpoint, "teachers.text.checkpoint")
        sd = clip_text_state(read_state_dict(path))
        if sd is None:
            raise ValueError(f"{path} holds no CLIP text tower (no token_embedding.weight)")
        load_exact(teacher.text, sd, str(path))
        teacher.source = str(path)
    return teacher
