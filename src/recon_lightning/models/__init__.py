"""Plain ``nn.Module`` ReCon models (no Lightning, no Hydra).

Building blocks: :class:`MiniPointNet`, :class:`PositionalMLP`, :class:`ReConBlock`,
:class:`ReConEncoder`, :class:`MaskedDecoder`, heads and :class:`PatchMasker`. Assembled models:
:class:`ReConPretrainer`, :class:`ReConClassifier`, :class:`ReConZeroShot`,
:class:`ReConPartSegmentation`, built from reference-style hyper-parameters by
:func:`build_pretrainer` / :func:`build_classifier` / :func:`build_partseg` or the size variants
:func:`recon_tiny` / :func:`recon_small` / :func:`recon_base` / :func:`recon_partseg`.
"""

from .attention import CrossAttention, SelfAttention
from .classification_head import HEAD_TYPES, ClassificationHead
from .classifier import ReConClassifier
from .decoder import MaskedDecoder
from .encoder import EncoderOutput, ReConEncoder, Tokens, select_visible
from .factory import (
    TEACHER_DIMS,
    VARIANTS,
    build_classifier,
    build_encoder,
    build_partseg,
    build_pretrainer,
    build_zeroshot,
    create_model,
    normalize_config,
    recon_base,
    recon_partseg,
    recon_small,
    recon_tiny,
)
from .loading import LoadReport, load_backbone
from .losses import distillation_loss, reconstruction_loss, smc_loss
from .masking import MASK_TYPES, PatchMasker
from .mlp import Mlp
from .patch_embed import MiniPointNet
from .pooling import classification_features, svm_features
from .pos_embed import PositionalMLP
from .pretrainer import PretrainOutput, ReConPretrainer, Reconstruction
from .projection import SMCProjection, teacher_projection
from .recon_block import ReConBlock
from .reconstruction_head import ReconstructionHead
from .segmentation import (
    FeaturePropagation,
    LabelEmbedding,
    ReConPartSegmentation,
    SegmentationFeatures,
    SegmentationHead,
    default_feature_blocks,
)
from .transformer_block import TransformerBlock
from .zeroshot import FEATURE_TYPES, ReConZeroShot

__all__ = [
    "FEATURE_TYPES",
    "HEAD_TYPES",
    "MASK_TYPES",
    "TEACHER_DIMS",
    "VARIANTS",
    "ClassificationHead",
    "CrossAttention",
    "EncoderOutput",
    "FeaturePropagation",
    "LabelEmbedding",
    "LoadReport",
    "MaskedDecoder",
    "MiniPointNet",
    "Mlp",
    "PatchMasker",
    "PositionalMLP",
    "PretrainOutput",
    "ReConBlock",
    "ReConClassifier",
    "ReConEncoder",
    "ReConPartSegmentation",
    "ReConPretrainer",
    "ReConZeroShot",
    "Reconstruction",
    "ReconstructionHead",
    "SMCProjection",
    "SegmentationFeatures",
    "SegmentationHead",
    "SelfAttention",
    "Tokens",
    "TransformerBlock",
    "build_classifier",
    "build_encoder",
    "build_partseg",
    "build_pretrainer",
    "build_zeroshot",
    "classification_features",
    "create_model",
    "default_feature_blocks",
    "distillation_loss",
    "load_backbone",
    "normalize_config",
    "recon_base",
    "recon_partseg",
    "recon_small",
    "recon_tiny",
    "reconstruction_loss",
    "select_visible",
    "smc_loss",
    "svm_features",
    "teacher_projection",
]
