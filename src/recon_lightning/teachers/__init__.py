"""Frozen cross-modal teachers of ReCon: image and text feature targets for distillation.

- ``build_teachers(...)``: the config entry point (``conf/teachers/*.yaml``); returns ``Teachers``
  (online networks) or ``CachedTeachers`` (features from ``build_cache``), both with
  ``targets(batch) -> (img_target, text_target)`` and ``img_dim`` / ``text_dim``.
- ``ImageTeacher`` / ``build_image_teacher``: ``vit_b16_in21k`` (reference),
  ``vit_b16_in21k_pooled`` (approximation), ``clip_b32`` (zero-shot setting).
- ``TextTeacher`` / ``build_text_teacher``: CLIP ViT-B/32 text tower on the reference's 60 prompts;
  ``class_prototypes(names)`` for zero-shot.
- ``build_cache`` / ``CachedTeachers``: the memory-mapped feature cache.
"""

from .cache import CachedTeachers, CacheMismatchError, build_cache, read_meta
from .image import IMAGE_TEACHERS, ImageTeacher, build_image_teacher
from .preprocess import PREPROCESS_MODES, normalize_images
from .prompts import NUM_PROMPTS, PREFIXES, SUFFIXES, all_prompts, prompt, sample_prompt_indices
from .teachers import TEACHER_MODES, Teachers, build_teachers
from .text import TEXT_TEACHERS, TextTeacher, build_text_teacher
from .weight_files import WeightsNotFoundError, hf_hub_cache_dir

__all__ = [
    "IMAGE_TEACHERS",
    "NUM_PROMPTS",
    "PREFIXES",
    "PREPROCESS_MODES",
    "SUFFIXES",
    "TEACHER_MODES",
    "TEXT_TEACHERS",
    "CacheMismatchError",
    "CachedTeachers",
    "ImageTeacher",
    "Teachers",
    "TextTeacher",
    "WeightsNotFoundError",
    "all_prompts",
    "build_cache",
    "build_image_teacher",
    "build_teachers",
    "build_text_teacher",
    "hf_hub_cache_dir",
    "normalize_images",
    "prompt",
    "read_meta",
    "sample_prompt_indices",
]
