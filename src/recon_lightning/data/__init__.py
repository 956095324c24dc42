"""Datasets, LightningDataModules and point/image transforms for ReCon.

One module per dataset, each with its DataModule; :mod:`.base` documents the batch contract
(pretrain: points/image/text/label/index; classification: points/label, resampled and augmented
on the device in ``on_after_batch_transfer``).
"""

from .base import PointCloudDataModule
from .errors import DatasetNotFoundError, MalformedDatasetError
from .image_transforms import EvalImageTransform, PretrainImageTransform
from .modelnet import ModelNet, ModelNetDataModule
from .modelnet_fewshot import ModelNetFewshot, ModelNetFewshotDataModule, make_fewshot_splits
from .point_folder import PointFolder, PointFolderDataModule, read_ply, read_point_file, write_ply
from .scanobjectnn import ScanObjectNN, ScanObjectNNDataModule
from .shapenet55 import ShapeNet55, ShapeNet55DataModule
from .shapenetpart import ShapeNetPart, ShapeNetPartDataModule
from .synthetic import SyntheticShapes, SyntheticShapesDataModule

__all__ = [
    "DatasetNotFoundError",
    "EvalImageTransform",
    "MalformedDatasetError",
    "ModelNet",
    "ModelNetDataModule",
    "ModelNetFewshot",
    "ModelNetFewshotDataModule",
    "PointCloudDataModule",
    "PointFolder",
    "PointFolderDataModule",
    "PretrainImageTransform",
    "ScanObjectNN",
    "ScanObjectNNDataModule",
    "ShapeNet55",
    "ShapeNet55DataModule",
    "ShapeNetPart",
    "ShapeNetPartDataModule",
    "SyntheticShapes",
    "SyntheticShapesDataModule",
    "make_fewshot_splits",
    "read_ply",
    "read_point_file",
    "write_ply",
]
