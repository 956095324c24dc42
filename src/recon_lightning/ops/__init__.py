"""Point-cloud ops: FPS, kNN, grouping, Chamfer and 3-NN interpolation.

Each op has a pure-torch reference path and fast paths (numba on CPU, a KD-tree from pykdtree,
KeOps and Triton for the GPU) picked by ``backend="auto"``; see docs/benchmarks-ops.md for what
``auto`` chooses and the measurements behind it. The ops compute distances in float32 (or float64)
under autocast.
"""

from ._keops import KeOpsUnavailableError
from ._triton import TritonUnavailableError
from .chamfer import chamfer_l1, chamfer_l2, nearest_sq_dists
from .fps import furthest_point_sample, gather_points
from .group import group
from .interpolation import three_nn_interpolate
from .knn import knn

fps = furthest_point_sample

__all__ = [
    "KeOpsUnavailableError",
    "TritonUnavailableError",
    "chamfer_l1",
    "chamfer_l2",
    "fps",
    "furthest_point_sample",
    "gather_points",
    "group",
    "knn",
    "nearest_sq_dists",
    "three_nn_interpolate",
]
