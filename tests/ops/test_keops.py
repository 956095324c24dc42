"""The KeOps backend: results on CPU (few compiles in the fast suite), and the behaviour when
pykeops cannot load or compile."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

from ops.ops_cases import DTYPES, blobs, load_ops
from recon_lightning import ops
from recon_lightning.ops import _keops
from recon_lightning.ops._backend import with_keops_fallback
from recon_lightning.ops._keops import KeOpsUnavailableError


@pytest.fixture
def fresh_keops_state(monkeypatch):
    """A clean loader state for this test only; the real one is restored afterwards."""
    monkeypatch.setattr(
        _keops, "_state", {"module": None, "error": None, "warned": False, "compiled": set()}
    )


def keops_usable() -> bool:
    return _keops.keops_error() is None


def test_official_knn_vectors_keops(official_dir):
    """One compile (float64, k=8): the official kNN sets."""
    data = load_ops(official_dir)["knn"]
    _, idx = ops.knn(data["new_xyz"], data["xyz"], data["k"], backend="keops")
    assert torch.equal(idx.sort(-1).values, data["idx_sorted"].sort(-1).values)


def test_official_chamfer_keops(official_dir):
    """One compile (float64, k=1): the official Chamfer-L2 value and gradients."""
    data = load_ops(official_dir)["chamfer"]
    x = data["xyz1"].clone().requires_grad_()
    y = data["xyz2"].clone().requires_grad_()
    value = ops.chamfer_l2(x, y, backend="keops")
    gx, gy = torch.autograd.grad(value, (x, y))
    torch.testing.assert_close(value, data["l2"]["value"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, data["l2"]["grad_xyz1"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gy, data["l2"]["grad_xyz2"], rtol=1e-10, atol=1e-10)


def test_explicit_keops_raises_when_pykeops_cannot_load(fresh_keops_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "pykeops", None)  # makes `import pykeops` fail
    x = torch.rand(1, 10, 3)
    with pytest.raises(KeOpsUnavailableError, match="pykeops could not be imported"):
        ops.knn(x, x, 2, backend="keops")
    with pytest.raises(KeOpsUnavailableError, match="pykeops could not be imported"):
        ops.chamfer_l2(x, x, backend="keops")


def test_compile_failure_is_reported_and_remembered(fresh_keops_state, monkeypatch):
    """A formula that fails to build turns KeOps off for the process, with the reason."""
    if _keops._load() is None:
        pytest.skip("pykeops does not import here")

    class Broken:
        def __init__(self, *args):
            pass

        def __sub__(self, other):
            raise OSError("g++: not found")

    monkeypatch.setattr(_keops._state["module"], "LazyTensor", Broken)
    x = torch.rand(1, 10, 3)
    with pytest.raises(KeOpsUnavailableError, match="g\\+\\+: not found"):
        ops.knn(x, x, 2, backend="keops")
    assert "g++: not found" in _keops.keops_error()


def test_auto_falls_back_with_one_warning(fresh_keops_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "pykeops", None)
    x = torch.rand(1, 10, 3)

    def keops_call():
        return ops.knn(x, x, 2, backend="keops")

    with pytest.warns(RuntimeWarning, match="KeOps is unavailable"):
        d, idx = with_keops_fallback("knn", keops_call, lambda: ops.knn(x, x, 2, "torch"))
    assert torch.equal(idx[..., 0], torch.arange(10).view(1, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second fallback stays silent
        with_keops_fallback("knn", keops_call, lambda: ops.knn(x, x, 2, "torch"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_cuda_uses_keops_or_falls_back():
    pts = blobs(2, 500, torch.float32, seed=1).cuda()
    d, idx = ops.knn(pts[:, :50], pts, 8)
    want_d, _ = ops.knn(pts[:, :50], pts, 8, backend="torch")
    torch.testing.assert_close(d, want_d, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 16])
def test_keops_knn_matches_torch(dtype, k):
    points = blobs(3, 400, dtype, seed=k)
    query = blobs(3, 60, dtype, seed=k + 1)
    d, idx = ops.knn(query, points, k, backend="keops")
    want_d, want_idx = ops.knn(query, points, k, backend="torch")
    t = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(d, want_d, **t)
    if dtype == torch.float64:
        assert torch.equal(idx.sort(-1).values, want_idx.sort(-1).values)


@pytest.mark.slow
def test_keops_chamfer_float32_and_interpolation():
    x = blobs(8, 64, torch.float32, seed=3).requires_grad_()
    y = blobs(8, 50, torch.float32, seed=4)
    got = ops.chamfer_l1(x, y, backend="keops")
    (g,) = torch.autograd.grad(got, x)
    want = ops.chamfer_l1(x, y, backend="torch")
    (w,) = torch.autograd.grad(want, x)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(g, w)
    feat = torch.randn(8, 50, 5)
    out = ops.three_nn_interpolate(x.detach(), y, feat, backend="keops")
    torch.testing.assert_close(out, ops.three_nn_interpolate(x.detach(), y, feat, "torch"))
