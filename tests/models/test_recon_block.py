"""The ReCon block: two streams, normalised-input residuals, per-layer stop-gradient."""

from __future__ import annotations

import torch

from recon_lightning.models import ReConBlock, TransformerBlock

DIM, HEADS = 24, 3


def block(drop_path: float = 0.0) -> ReConBlock:
    torch.manual_seed(0)
    return ReConBlock(DIM, HEADS, drop_path=drop_path).double().eval()


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    q = torch.randn(2, 3, DIM, generator=g, dtype=torch.float64)
    x = torch.randn(2, 5, DIM, generator=g, dtype=torch.float64)
    return q, x


def test_residuals_carry_the_normalised_input():
    """a = LN1(x); b = a + Attn(a); c = LN2(b); out = c + MLP(c) (spec §2.5), both streams."""
    blk = block()
    q, x = inputs()
    lo, gl = blk.local, blk.queries
    a = lo.norm1(x)
    b = a + lo.attn(a)
    c = lo.norm2(b)
    local = c + lo.mlp(c)
    qa = gl.norm1(q)
    qb = qa + gl.attn(qa, a)
    qc = gl.norm2(qb)
    queries = qc + gl.mlp(qc)
    got_q, got_x = blk(q, x)
    torch.testing.assert_close(got_x, local, rtol=0, atol=0)
    torch.testing.assert_close(got_q, queries, rtol=0, atol=0)


def test_streams_have_separate_weights():
    blk = block()
    local = {id(p) for p in blk.local.parameters()}
    assert not local & {id(p) for p in blk.queries.parameters()}


def test_local_stream_ignores_the_queries():
    blk = block()
    q, x = inputs()
    _, x1 = blk(q, x)
    _, x2 = blk(q * 5 + 1, x)
    torch.testing.assert_close(x1, x2, rtol=0, atol=0)


def test_queries_do_not_attend_to_each_other():
    blk = block()
    q, x = inputs()
    q1, _ = blk(q, x)
    changed = q.clone()
    changed[:, 0] += torch.randn(DIM, dtype=q.dtype)  # move the cls query only
    q2, _ = blk(changed, x)
    torch.testing.assert_close(q1[:, 1:], q2[:, 1:], rtol=0, atol=0)
    assert not torch.allclose(q1[:, 0], q2[:, 0])


def test_stop_grad_cuts_the_cross_attention_keys():
    """A loss on the queries reaches the local stream's norm1 only without stop_grad."""
    for stop, expect_grad in ((True, False), (False, True)):
        blk = block()
        q, x = inputs()
        x.requires_grad_(True)
        out_q, _ = blk(q, x, stop_grad=stop)
        out_q.square().sum().backward()
        norm1 = blk.local.norm1.weight.grad
        assert (norm1 is not None and bool(norm1.any())) == expect_grad
        assert (x.grad is not None and bool(x.grad.any())) == expect_grad


def test_drop_path_is_random_in_train_mode_only():
    blk = block(drop_path=0.5)
    q, x = inputs()
    q = q[:1].expand(64, -1, -1)
    x = x[:1].expand(64, -1, -1)
    torch.testing.assert_close(blk(q, x), blk(q, x), rtol=0, atol=0)
    blk.train()
    torch.manual_seed(3)
    _, local = blk(q, x)
    # Identical samples take different drop-path draws (per-sample masks).
    assert any(not torch.equal(local[0], local[i]) for i in range(1, 64))


def test_decoder_block_is_standard_pre_norm():
    torch.manual_seed(0)
    blk = TransformerBlock(DIM, HEADS).double().eval()
    _, x = inputs()
    y = x + blk.attn(blk.norm1(x))
    expected = y + blk.mlp(blk.norm2(y))
    torch.testing.assert_close(blk(x), expected, rtol=0, atol=0)
