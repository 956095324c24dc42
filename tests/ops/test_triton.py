"""The Triton backend: results against the reference paths, under Triton's interpreter on CPU
(small inputs: the interpreter runs the kernels in numpy), the errors when Triton cannot run, and
GPU comparisons at realistic sizes (skipped without a device).

The interpreter is switched per test with ``monkeypatch.setenv``: the kernels decide between
compiling and interpreting at each launch (``_triton.Kernel``), so these tests pass in one process
whether or not ``TRITON_INTERPRET`` is set outside.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest
import torch

from ops.ops_cases import DTYPES, blobs, grid_points, load_ops, on_cuda
from ops.test_fps import OFFICIAL_CASES, naive_fps
from recon_lightning import ops
from recon_lightning.ops import _triton
from recon_lightning.ops._backend import with_triton_fallback
from recon_lightning.ops.fps import furthest_point_sample_numba, furthest_point_sample_torch
from recon_lightning.ops.knn import knn_indices_numba

needs_triton = pytest.mark.skipif(
    _triton.triton_error() is not None, reason="triton is not importable here"
)
#: The GPU tests compare compiled kernels; with TRITON_INTERPRET set they would be interpreted
#: (and triton's own helpers, decorated at import, could not be compiled).
compiled = pytest.mark.skipif(
    os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"),
    reason="TRITON_INTERPRET is set: no compiled kernels",
)


def fps_triton(xyz: torch.Tensor, n: int, skip_origin: bool = True, stream_block=None):
    from recon_lightning.ops._triton_fps import furthest_point_sample_triton

    return furthest_point_sample_triton(xyz, n, skip_origin, stream_block=stream_block)


def stable_knn(query: torch.Tensor, points: torch.Tensor, k: int) -> torch.Tensor:
    """(distance, index) order from the full matrix of coordinate differences."""
    d = ((query[:, :, None, :] - points[:, None, :, :]) ** 2).sum(-1)
    return torch.sort(d, dim=-1, stable=True).indices[..., :k]


def assert_same_grads(got: torch.Tensor, want: torch.Tensor, inputs: tuple, **tol) -> None:
    """The gradients of two scalars with respect to ``inputs`` agree."""
    grads = zip(torch.autograd.grad(got, inputs), torch.autograd.grad(want, inputs), strict=True)
    for g, w in grads:
        torch.testing.assert_close(g, w, **tol)


# --- furthest point sampling -------------------------------------------------------------------

#: Register mode (the whole cloud in one block) and the streaming sweep with blocks that do not
#: divide N.
FPS_MODES = [None, 64]


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", OFFICIAL_CASES)
def test_fps_official_vectors(official_dir, case, dtype):
    data = load_ops(official_dir)["fps"][case]
    pts = data["points"].to(dtype)
    got = ops.fps(pts, data["npoint"], backend="triton")
    assert torch.equal(got, data["fps_idx"])
    plain = ops.fps(pts, data["npoint"], skip_origin=False, backend="triton")
    assert torch.equal(plain, data["fps_idx_plain_argmax"])


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("stream_block", FPS_MODES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("skip_origin", [True, False])
def test_fps_matches_reference_and_naive_loop(stream_block, dtype, skip_origin):
    pts = blobs(3, 300, dtype, seed=1)
    # Padding-like points at the origin and a few inside the skip radius, point 0 among them.
    pts[0, :40] = 0.0
    pts[1, 5:15] = 0.01 * pts[1, 5:15]
    pts[2, 0] = torch.tensor([0.02, 0.0, 0.0], dtype=dtype)
    got = fps_triton(pts, 48, skip_origin, stream_block)
    assert torch.equal(got, furthest_point_sample_torch(pts, 48, skip_origin))
    assert torch.equal(got, furthest_point_sample_numba(pts, 48, skip_origin))
    for b in range(3):
        np.testing.assert_array_equal(got[b].numpy(), naive_fps(pts[b].numpy(), 48, skip_origin))


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("stream_block", FPS_MODES)
def test_fps_all_points_skipped_gives_zeros(stream_block):
    pts = torch.zeros(2, 100, 3)
    pts[1] = 1e-3 * torch.randn(100, 3, generator=torch.Generator().manual_seed(0))
    got = fps_triton(pts, 7, stream_block=stream_block)
    assert torch.equal(got, torch.zeros(2, 7, dtype=torch.long))


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("stream_block", FPS_MODES)
def test_fps_ties_go_to_the_lowest_index(stream_block):
    """An integer grid: nearly every step is an exact tie, broken by the lowest index (across
    blocks in the streaming sweep)."""
    pts = grid_points(5, seed=2).expand(2, -1, -1).contiguous()
    pts[1] = pts[1].flip(0)
    for dtype in DTYPES:
        x = pts.to(dtype)
        got = fps_triton(x, 40, stream_block=stream_block)
        assert torch.equal(got, furthest_point_sample_torch(x, 40))


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("stream_block", FPS_MODES)
def test_fps_n_equals_n_points(stream_block):
    """n = N: every eligible point once, then the lowest eligible index, as the reference."""
    pts = blobs(1, 90, seed=3)
    pts[0, 10:20] = 0.0
    got = fps_triton(pts, 90, stream_block=stream_block)
    assert torch.equal(got, furthest_point_sample_torch(pts, 90))
    assert torch.equal(fps_triton(pts, 1, stream_block=stream_block), torch.zeros(1, 1).long())


@pytest.mark.usefixtures("interpret")
def test_fps_half_precision_and_strided_input_search_in_float32():
    pts = blobs(2, 200, torch.float32, seed=4)
    strided = torch.cat([pts, pts], dim=-1)[..., :3]
    assert torch.equal(ops.fps(strided, 32, backend="triton"), ops.fps(pts, 32, backend="torch"))
    half = pts.half()
    want = furthest_point_sample_numba(half, 32)  # numba searches half in float32 too
    assert torch.equal(ops.fps(half, 32, backend="triton"), want)


# --- kNN -----------------------------------------------------------------------------------------


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("b", "m", "n", "k"), [(2, 40, 150, 1), (2, 17, 100, 32), (1, 5, 7, 3)])
def test_knn_matches_reference(dtype, b, m, n, k):
    points = blobs(b, n, dtype, seed=n)
    query = blobs(b, m, dtype, seed=m + 1) * 1.1
    d, idx = ops.knn(query, points, k, backend="triton")
    assert idx.shape == (b, m, k) and idx.dtype == torch.long and d.dtype == dtype
    # The same float expression as the naive sort and numba: the exact (distance, index) order.
    assert torch.equal(idx, stable_knn(query, points, k))
    assert torch.equal(idx, knn_indices_numba(query, points, k))
    want_d, _ = ops.knn(query, points, k, backend="torch")
    torch.testing.assert_close(d, want_d, rtol=0, atol=0)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("k", [1, 7])
def test_knn_ties_follow_distance_then_index(k):
    points = grid_points(5)
    query = points[:, ::5] + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)
    _, idx = ops.knn(query, points, k, backend="triton")
    assert torch.equal(idx, stable_knn(query, points, k))


@pytest.mark.usefixtures("interpret")
def test_knn_duplicate_points_tie_to_lower_index_first():
    points = torch.tensor([[[1.0, 0, 0], [0, 0, 0], [1.0, 0, 0], [5.0, 0, 0]]]).double()
    d, idx = ops.knn(points[:, :1], points, 3, backend="triton")
    assert idx[0, 0].tolist() == [0, 2, 1]
    assert d[0, 0].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.usefixtures("interpret")
def test_knn_gradients_equal_the_torch_path():
    points = blobs(2, 64, seed=7).requires_grad_()
    query = (blobs(2, 16, seed=8) * 0.9).requires_grad_()
    w = torch.rand(2, 16, 5, dtype=torch.float64)
    got, want = ((ops.knn(query, points, 5, b)[0] * w).sum() for b in ("triton", "torch"))
    assert_same_grads(got, want, (query, points), rtol=0, atol=0)


@pytest.mark.usefixtures("interpret")
def test_knn_official_vectors(official_dir):
    data = load_ops(official_dir)["knn"]
    _, idx = ops.knn(data["new_xyz"], data["xyz"], data["k"], backend="triton")
    assert torch.equal(idx.sort(-1).values, data["idx_sorted"].sort(-1).values)


@pytest.mark.usefixtures("interpret")
def test_knn_k_above_the_register_list_is_refused():
    x = torch.rand(1, _triton.KNN_MAX_K + 1, 3)
    with pytest.raises(ValueError, match=f"supports k <= {_triton.KNN_MAX_K}"):
        ops.knn(x[:, :2], x, _triton.KNN_MAX_K + 1, backend="triton")


# --- Chamfer, interpolation, grouping ---------------------------------------------------------


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("dtype", DTYPES)
def test_chamfer_values_and_gradients_equal_the_torch_path(dtype):
    x = blobs(4, 70, dtype, seed=1).requires_grad_()
    y = (blobs(4, 45, dtype, seed=2) * 0.8).requires_grad_()
    for fn in (ops.chamfer_l2, ops.chamfer_l1):
        got = fn(x, y, backend="triton")
        want = fn(x, y, backend="torch")
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        assert_same_grads(got, want, (x, y), rtol=0, atol=0)


@pytest.mark.usefixtures("interpret")
def test_chamfer_gradcheck():
    x = blobs(2, 6, seed=1).requires_grad_()
    y = blobs(2, 5, seed=2).requires_grad_()
    # fast_mode: a few random directions instead of one search per coordinate (interpreter time).
    for fn in (ops.chamfer_l2, ops.chamfer_l1):
        assert torch.autograd.gradcheck(
            lambda a, c, f=fn: f(a, c, "triton"), (x, y), fast_mode=True
        )


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_chamfer_official_vectors(official_dir, dtype, kind):
    data = load_ops(official_dir)["chamfer"]
    x = data["xyz1"].to(dtype).requires_grad_()
    y = data["xyz2"].to(dtype).requires_grad_()
    value = (ops.chamfer_l2 if kind == "l2" else ops.chamfer_l1)(x, y, backend="triton")
    gx, gy = torch.autograd.grad(value, (x, y))
    t = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-4, "atol": 1e-5}
    torch.testing.assert_close(value.double(), data[kind]["value"], **t)
    torch.testing.assert_close(gx.double(), data[kind]["grad_xyz1"], **t)
    torch.testing.assert_close(gy.double(), data[kind]["grad_xyz2"], **t)


@pytest.mark.usefixtures("interpret")
def test_chamfer_exact_ties_take_the_lowest_index():
    """Points half-way between two grid points: the gradient goes to the lower index."""
    grid = grid_points(4, seed=1)
    x = (grid[:, ::3] + torch.tensor([0.5, 0.0, 0.0], dtype=torch.float64)).requires_grad_()
    y = grid.clone().requires_grad_()
    got = torch.autograd.grad(ops.chamfer_l2(x, y, "triton"), (x, y))
    i1 = stable_knn(x.detach(), y.detach(), 1)[0, :, 0]
    i2 = stable_knn(y.detach(), x.detach(), 1)[0, :, 0]
    want_loss = ((x - y[:, i1]) ** 2).sum(-1).mean() + ((y - x[:, i2]) ** 2).sum(-1).mean()
    want = torch.autograd.grad(want_loss, (x, y))
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


@pytest.mark.usefixtures("interpret")
@pytest.mark.parametrize("dtype", DTYPES)
def test_three_nn_interpolate_values_and_gradients(dtype):
    dst = blobs(2, 100, dtype, seed=1)
    src = blobs(2, 20, dtype, seed=2)
    feat = torch.randn(2, 20, 7, dtype=dtype, requires_grad=True)
    out = ops.three_nn_interpolate(dst, src, feat, backend="triton")
    want = ops.three_nn_interpolate(dst, src, feat, backend="torch")
    torch.testing.assert_close(out, want, rtol=0, atol=0)
    g = torch.rand_like(out)
    (got,) = torch.autograd.grad(out, feat, g)
    (exp,) = torch.autograd.grad(want, feat, g)
    torch.testing.assert_close(got, exp, rtol=0, atol=0)


@pytest.mark.usefixtures("interpret")
def test_group_uses_triton_for_fps_and_knn():
    xyz = blobs(2, 256, torch.float32, seed=9)
    nbh, center = ops.group(xyz, 16, 8, backend="triton")
    want_nbh, want_center = ops.group(xyz, 16, 8, backend="torch")
    assert torch.equal(center, want_center)
    torch.testing.assert_close(nbh, want_nbh, rtol=0, atol=0)


# --- availability, devices and auto ------------------------------------------------------------


def test_missing_triton_is_a_clear_error(fresh_triton_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # makes `import triton` fail
    x = torch.rand(1, 10, 3)
    calls = [
        lambda: ops.fps(x, 2, backend="triton"),
        lambda: ops.knn(x, x, 2, backend="triton"),
        lambda: ops.chamfer_l2(x, x, backend="triton"),
        lambda: ops.three_nn_interpolate(x, x, x, backend="triton"),
    ]
    for call in calls:
        with pytest.raises(ops.TritonUnavailableError, match="triton could not be imported"):
            call()
    assert "pip install" in _triton.triton_error()


def test_auto_falls_back_with_one_warning_when_triton_is_missing(fresh_triton_state, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)
    x = torch.rand(1, 10, 3)

    def triton_call():
        return ops.knn(x, x, 2, backend="triton")

    with pytest.warns(RuntimeWarning, match="Triton is unavailable"):
        _, idx = with_triton_fallback("knn", triton_call, lambda: ops.knn(x, x, 2, "torch"))
    assert torch.equal(idx[..., 0], torch.arange(10).view(1, 10))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second fallback stays silent
        with_triton_fallback("knn", triton_call, lambda: ops.knn(x, x, 2, "torch"))


@needs_triton
def test_cpu_tensor_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.rand(1, 10, 3)
    for call in (
        lambda: ops.fps(x, 2, backend="triton"),
        lambda: ops.knn(x, x, 2, backend="triton"),
        lambda: ops.chamfer_l1(x, x, backend="triton"),
    ):
        with pytest.raises(ValueError, match=r"runs on CUDA tensors.*TRITON_INTERPRET=1"):
            call()


@needs_triton
def test_compiled_launch_failure_is_reported_and_remembered(fresh_triton_state, monkeypatch):
    """A compile or driver failure turns Triton off for the process, with the reason (here: no
    GPU driver for a compiled launch on CPU tensors)."""
    if torch.cuda.is_available():
        pytest.skip("a GPU would run the kernel")
    from recon_lightning.ops._triton_fps import _fps

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.rand(1, 3, 8)
    out = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ops.TritonUnavailableError, match="failed to compile or run _fps_kernel"):
        _fps.launch((1,), x, torch.rand(1, 8), out, 8, 2, BLOCK=8, STREAM=False)
    assert "_fps_kernel" in _triton.triton_error()


@pytest.mark.usefixtures("interpret")
def test_interpreted_launches_leave_triton_language_intact():
    """The interpreter patches triton.language during a launch (and its nested helper calls
    leave patches behind); afterwards every name must be what it was, or later compiled
    launches in this process would build from interpreter stubs."""
    import triton.language as tl

    spaces = [tl, tl.core, tl.standard, tl.core.tensor, tl.core.dtype]
    before = [dict(vars(ns)) for ns in spaces]
    x = blobs(1, 40, torch.float32, seed=1)
    ops.fps(x, 5, backend="triton")
    ops.knn(x, x, 3, backend="triton")
    ops.chamfer_l2(x, x, backend="triton")
    for ns, was in zip(spaces, before, strict=True):
        now = vars(ns)
        changed = [k for k, v in was.items() if now.get(k) is not v]
        assert not changed, f"{ns} changed: {changed[:5]}"


@needs_triton
@compiled
def test_kernels_compile_for_a_gpu_target():
    """Compiled-mode typing (loop-carried types, constexpr branches) is not what the interpreter
    checks: build every kernel for sm_90 (no GPU needed) after interpreted launches ran."""
    pytest.importorskip("triton.backends.nvidia")
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from recon_lightning.ops._triton_fps import _fps_kernel
    from recon_lightning.ops._triton_knn import _knn_kernel, _nearest_kernel

    i32, c = "i32", "constexpr"
    cases = [
        (_fps_kernel, ["*fp32", "*fp32", "*i64", i32, i32, c, c], {"BLOCK": 1024, "STREAM": False}),
        (_fps_kernel, ["*fp64", "*fp64", "*i64", i32, i32, c, c], {"BLOCK": 256, "STREAM": True}),
        (
            _nearest_kernel,
            ["*fp32", "*fp32", "*i64", i32, i32, i32, c, c],
            {"BLOCK_M": 64, "BLOCK_N": 64},
        ),
        (
            _knn_kernel,
            ["*fp64", "*fp64", "*i64", i32, i32, i32, i32, c, c, c, c],
            {"DMAX": torch.finfo(torch.float64).max, "K_PAD": 8, "BLOCK_M": 32, "BLOCK_N": 64},
        ),
    ]
    for fn, types, constexprs in cases:
        names = fn.__code__.co_varnames[: fn.__code__.co_argcount]
        src = ASTSource(triton.jit(fn), dict(zip(names, types, strict=True)), constexprs)
        options = {"num_warps": 8, "enable_fp_fusion": False}
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
        # No fused multiply-add: the distances round as in the torch and numba paths.
        assert "fma." not in kernel.asm["ptx"], fn.__name__


@pytest.mark.parametrize("interpreter", [False, True])
def test_auto_never_picks_triton_on_cpu(monkeypatch, interpreter):
    if interpreter:
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    else:
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)

    def refuse(*args, **kwargs):
        raise AssertionError("auto picked triton on a CPU tensor")

    monkeypatch.setattr(_triton, "require_triton", refuse)
    x = blobs(2, 600, torch.float32, seed=3)
    y = blobs(2, 520, torch.float32, seed=4)
    ops.fps(x, 8)
    ops.knn(x[:, :20], x, 4)
    ops.knn(x[:, :20], x, 1)
    ops.chamfer_l2(x, y)
    ops.chamfer_l2(x[:, :30], y[:, :30])
    ops.three_nn_interpolate(x, y[:, :40], torch.randn(2, 40, 3))
    ops.group(x, 8, 4)


def test_unknown_backend_lists_triton():
    with pytest.raises(ValueError, match="torch, numba, triton"):
        ops.fps(torch.rand(1, 10, 3), 2, backend="keops")


# --- on the GPU --------------------------------------------------------------------------------


@on_cuda
@needs_triton
@compiled
def test_cuda_fps_equals_torch_and_numba_at_32x8192():
    pts = blobs(32, 8192, torch.float32, seed=11)
    pts[:, :100] = 0.0  # padding-like points the skip rule leaves out
    got = ops.fps(pts.cuda(), 1200, backend="triton")
    assert torch.equal(got.cpu(), furthest_point_sample_numba(pts, 1200))
    assert torch.equal(got, furthest_point_sample_torch(pts.cuda(), 1200))
    assert torch.equal(ops.fps(pts.cuda(), 1200), got)  # auto on CUDA is triton


@on_cuda
@needs_triton
@compiled
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_fps_streaming_at_100k_equals_numba(dtype):
    pts = torch.randn(2, 100_000, 3, dtype=dtype, generator=torch.Generator().manual_seed(0))
    got = ops.fps(pts.cuda(), 1024, backend="triton")
    assert torch.equal(got.cpu(), furthest_point_sample_numba(pts, 1024))


@on_cuda
@needs_triton
@compiled
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k", [1, 3, 32])
def test_cuda_knn_equals_numba(dtype, k):
    """The same float expression on both: the exact (distance, index) order of the CPU path."""
    points = blobs(8, 8192, dtype, seed=k)
    query = blobs(8, 512, dtype, seed=k + 1)
    d, idx = ops.knn(query.cuda(), points.cuda(), k, backend="triton")
    assert torch.equal(idx.cpu(), knn_indices_numba(query, points, k))
    want_d, _ = ops.knn(query.cuda(), points.cuda(), k, backend="torch")
    torch.testing.assert_close(d, want_d)


@on_cuda
@needs_triton
@compiled
def test_cuda_chamfer_and_interpolation_equal_numba():
    """Against numba on the CPU (the same distance expression, so the same neighbours; the
    dense torch path's expanded float32 distances may break near-ties otherwise)."""
    x = blobs(4, 4096, torch.float32, seed=1).requires_grad_()
    y = blobs(4, 3000, torch.float32, seed=2).requires_grad_()
    xc, yc = (x.detach().cuda().requires_grad_(), y.detach().cuda().requires_grad_())
    for fn in (ops.chamfer_l2, ops.chamfer_l1):
        got = fn(xc, yc, backend="triton")
        want = fn(x, y, backend="numba")
        torch.testing.assert_close(got.cpu(), want)
        got_g = torch.autograd.grad(got, (xc, yc))
        want_g = torch.autograd.grad(want, (x, y))
        for g, w in zip(got_g, want_g, strict=True):
            torch.testing.assert_close(g.cpu(), w)
    feat = torch.randn(4, 3000, 64)
    out = ops.three_nn_interpolate(xc.detach(), yc.detach(), feat.cuda(), backend="triton")
    want = ops.three_nn_interpolate(x.detach(), y.detach(), feat, backend="numba")
    torch.testing.assert_close(out.cpu(), want)
