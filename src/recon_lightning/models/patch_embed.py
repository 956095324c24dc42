"""Mini-PointNet patch embedding: one token per local patch of points."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from .attention import plain_float


def _uses_batch_stats(bn: nn.BatchNorm1d) -> bool:
    """Whether ``bn`` normalises with the statistics of its input (train mode, or no buffers)."""
    return bn.training or bn.running_mean is None


def _column_var_mean(x: torch.Tensor, rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.var_mean(x, dim=0, correction=0)`` of an (N, C) matrix, two-pass.

    The squared deviations are summed a block of rows at a time: no N x C temporary, and 7x
    faster on CPU than ``var_mean``'s column-wise Welford reduction (used elsewhere).
    """
    if x.device.type != "cpu":
        return torch.var_mean(x, dim=0, correction=0)
    mean = x.mean(dim=0)
    sq = x.new_zeros(x.shape[1])
    for block in x.split(rows):
        sq += torch.sub(block, mean).square_().sum(dim=0)
    return sq / x.shape[0], mean


class _PointLinear(torch.autograd.Function):
    """``F.linear(x, weight, bias)`` for the 3 -> 128 layer, whose input needs no gradient.

    Autograd computes the weight gradient as ``grad.T @ x``, a product with 3 columns that BLAS
    runs 4x slower than the same numbers as ``(x.T @ grad).T``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.addmm(bias, x, weight.t())

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        return grad_x, (x.t() @ grad).t(), grad.sum(0)


class _MaskedSecondStage(torch.autograd.Function):
    """``relu(bn2(conv2_1([max_k h, h])))`` of the visible patches, train-mode ``bn2``.

    Patches come ordered ``[visible; masked]``. BatchNorm's batch statistics cover every point, but
    of the masked points the statistics are all that is needed: with ``y = h Wl^T + p`` (``p``
    the per-patch pooled term), their sum and sum of squares follow from the 256 x 256 Gram matrix
    of the (centred) ``h`` instead of the 512-wide ``y``, and so does their share of the
    gradient (BatchNorm's backward is affine in ``y - mean`` on points without an upstream
    gradient). Same function, same gradient; on the masked points one (n, 256) x (256, 256)
    product forward and one backward replace three (n, 256) x (256, 512) ones and the 512-wide
    normalisation, ReLU and their backward.

    Inputs: ``h`` (P, k, D) first-stage features, ``weight`` (C, 2D) and ``bias`` (C,) of
    ``conv2_1``, ``gamma``/``beta`` (C,) of ``bn2``, the number of visible patches and ``eps``.
    Outputs: (Pv, k, C) activations of the visible patches, and the batch ``mean`` and biased
    ``var`` (C,) of every point (not differentiable; for the running statistics).
    """

    @staticmethod
    def forward(ctx, h, weight, bias, gamma, beta, num_visible: int, eps: float):
        p_all, k, d_in = h.shape
        pv, c_out = num_visible, weight.shape[0]
        n_v, n_m = pv * k, (p_all - pv) * k
        n = n_v + n_m
        w_pool, w_loc = weight[:, :d_in], weight[:, d_in:]
        pooled, argmax = h.max(dim=1)  # (P, D)
        per_patch = torch.addmm(bias, pooled, w_pool.t())  # (P, C)
        h_vis, h_msk = h[:pv], h[pv:]
        y = torch.mm(h_vis.reshape(n_v, d_in), w_loc.t()).view(pv, k, c_out)
        y += per_patch[:pv].unsqueeze(1)
        var_v, mean_v = _column_var_mean(y.view(n_v, c_out))
        # Masked points, about shifts for accuracy (any constant shift gives the same result):
        # y - mean_v = hc Wl^T + q with hc = h - mu_h (centred rows) and q one row per patch.
        mu_h = h_msk.reshape(n_m, d_in).mean(dim=0)
        hc = h_msk - mu_h  # (Pm, k, D)
        gram = hc.view(n_m, d_in).t() @ hc.view(n_m, d_in)  # (D, D)
        hc_sum = hc.sum(dim=1)  # (Pm, D)
        q = per_patch[pv:] + (w_loc @ mu_h - mean_v)  # (Pm, C)
        hc_sum_w = hc_sum @ w_loc.t()  # (Pm, C)
        sum_m = hc_sum_w.sum(dim=0) + k * q.sum(dim=0)
        sq_m = ((w_loc @ gram) * w_loc).sum(dim=1) + 2 * (hc_sum_w * q).sum(dim=0)
        sq_m += k * (q * q).sum(dim=0)
        delta = sum_m / n  # mean - mean_v
        var = (n_v * var_v + sq_m) / n - delta * delta
        mean = mean_v + delta
        invstd = torch.rsqrt(var + eps)
        scale = gamma * invstd
        out = torch.addcmul(beta - mean * scale, y, scale).relu_()
        ctx.save_for_backward(h, weight, gamma, pooled, argmax, y, out, hc, gram, hc_sum)
        ctx.stats = (mean, invstd, mu_h, q - delta, hc_sum_w, eps)
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out, _grad_mean, _grad_var):
        h, weight, gamma, pooled, argmax, y, out, hc, gram, hc_sum = ctx.saved_tensors
        mean, invstd, mu_h, q_mean, hc_sum_w, eps = ctx.stats
        p_all, k, d_in = h.shape
        pv, c_out = y.shape[0], weight.shape[0]
        n_v, n_m = pv * k, (p_all - pv) * k
        n = n_v + n_m
        w_pool, w_loc = weight[:, :d_in], weight[:, d_in:]
        g = torch.ops.aten.threshold_backward(grad_out, out, 0)  # through the ReLU
        # BatchNorm's reductions (only visible points have a gradient): sum g, sum g * x_hat.
        _, grad_gamma, grad_beta = torch.ops.aten.native_batch_norm_backward(
            g.reshape(n_v, c_out),
            y.view(n_v, c_out),
            gamma,
            None,
            None,
            mean,
            invstd,
            True,
            eps,
            [False, True, True],
        )
        scale = gamma * invstd
        u = scale * grad_beta / -n  # gradient of every point's y through the batch mean
        c = scale * invstd * grad_gamma / -n  # ... and through the batch variance, per (y - mean)
        # Visible points: dy = scale * g + u + (y - mean) * c.
        dy = torch.sub(y, mean).mul_(c).add_(u).addcmul_(g, scale)  # (Pv, k, C)
        grad_h = torch.empty_like(h)
        torch.mm(dy.view(n_v, c_out), w_loc, out=grad_h[:pv].view(n_v, d_in))
        grad_w_loc = dy.view(n_v, c_out).t() @ h[:pv].reshape(n_v, d_in)
        grad_pp_vis = dy.sum(dim=1)  # (Pv, C)
        # Masked points: dy = u + (y - mean) * c = hc (Wl^T diag c) + v, v = u + q_mean * c.
        v = torch.addcmul(u, q_mean, c)  # (Pm, C)
        torch.mm(hc.view(n_m, d_in), (w_loc.t() * c) @ w_loc, out=grad_h[pv:].view(n_m, d_in))
        grad_h[pv:] += (v @ w_loc).unsqueeze(1)
        grad_pp_msk = hc_sum_w * c + k * v  # (Pm, C): the sum of dy over the patch
        # dWl += sum dy (x) h = diag(c) Wl Gram + v^T hc_sum + (sum dy) (x) mu_h.
        grad_w_loc += c.unsqueeze(1) * (w_loc @ gram) + v.t() @ hc_sum
        grad_w_loc += torch.outer(grad_pp_msk.sum(dim=0), mu_h)
        # The per-patch term: p = max_k(h) Wp^T + bias.
        grad_pp = torch.cat([grad_pp_vis, grad_pp_msk])  # (P, C)
        grad_h.scatter_add_(1, argmax.unsqueeze(1), (grad_pp @ w_pool).unsqueeze(1))
        grad_weight = torch.cat([grad_pp.t() @ pooled, grad_w_loc], dim=1)
        return grad_h, grad_weight, grad_pp.sum(dim=0), grad_gamma, grad_beta, None, None


class MiniPointNet(nn.Module):
    """Shared PointNet over the points of each patch (the reference's ``Encoder``).

    Two stages of pointwise convolutions (3 -> 128 -> 256, then 512 -> 512 -> C); after each stage
    a max over the patch's points. The first stage's pooled feature is broadcast back to every
    point and concatenated with the per-point features, so the second stage sees local and
    patch-level context. BatchNorm runs over all points of all patches of the batch.
    """

    def __init__(self, embed_dim: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.conv1_1 = nn.Conv1d(3, 128, 1)
        self.bn1 = nn.BatchNorm1d(128)
        self.conv1_2 = nn.Conv1d(128, 256, 1)
        self.conv2_1 = nn.Conv1d(512, 512, 1)
        self.bn2 = nn.BatchNorm1d(512)
        self.conv2_2 = nn.Conv1d(512, embed_dim, 1)
        self.act = nn.ReLU()

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """Embed patches.

        Args:
            patches: (B, G, k, 3) centre-relative patch coordinates.

        Returns:
            (B, G, C) tokens; the result does not depend on the order of points in a patch.
        """
        b, g, k, _ = patches.shape
        x = self._second_stage_input(self._first_stage(patches.reshape(b * g, k, 3)))
        x = F.relu(self.bn2(x.view(b * g * k, 512)), inplace=True).view(b * g, k, 512)
        return self._last_layer(x).reshape(b, g, self.embed_dim)

    def forward_visible(
        self, patches: torch.Tensor, visible: torch.Tensor
    ) -> tuple[torch.Tensor, Callable[[], torch.Tensor]]:
        """Tokens of the visible patches now, of every patch on request (pretraining).

        The same numbers as ``forward(patches)[visible]``, with less work: BatchNorm still
        normalises with the statistics of every point (the reference's), but of the masked
        patches only those statistics are computed (see :class:`_MaskedSecondStage`; outside
        float32/float64 or under autocast, their 512-wide features), and the final 512 -> C layer
        and its max-pool run on the visible patches only, the only tokens the encoder reads.

        Args:
            patches: (B, G, k, 3) centre-relative patch coordinates.
            visible: (B, G) bool, True = visible; every row keeps the same number V.

        Returns:
            ``(tokens, all_tokens)``: (B, V, C) visible tokens, and a function that returns the
            (B, G, C) tokens of every patch. Its visible rows are ``tokens`` (with their
            gradient); the masked rows, which no loss reads, are computed when called, without
            gradient, from this forward's activations and statistics and a copy of the weights.
        """
        b, g, k, _ = patches.shape
        flat = visible.reshape(b * g)
        order = torch.cat([flat.nonzero().squeeze(1), (~flat).nonzero().squeeze(1)])
        pv = int(flat.sum())
        if not _uses_batch_stats(self.bn2) or pv in (0, b * g):
            # Running statistics (every patch independent: nothing shared, nothing to skip), or
            # nothing to skip.
            tokens = self(patches)
            return tokens[visible].reshape(b, -1, self.embed_dim), lambda: tokens
        # Visible patches first (the first stage is per point; its BatchNorm does not mind).
        h = self._first_stage(patches.reshape(b * g, k, 3).index_select(0, order))
        if plain_float(h) and self.bn2.affine:
            x, mean, var = _MaskedSecondStage.apply(
                h,
                self.conv2_1.weight[..., 0],
                self.conv2_1.bias,
                self.bn2.weight,
                self.bn2.bias,
                pv,
                self.bn2.eps,
            )
            self._update_bn2(mean, var, b * g * k)
            masked = self._masked_from_stats(h, mean, var, pv)
        else:
            x = self.bn2(self._second_stage_input(h).view(b * g * k, 512)).view(b * g, k, 512)
            masked = self._masked_from_activations(x[pv:])
            x = F.relu(x[:pv])
        tokens = self._last_layer(x)  # (B*V, C), batch-major like the mask

        def all_tokens() -> torch.Tensor:
            out = tokens.new_empty(b * g, self.embed_dim)
            with torch.no_grad():
                out[order[pv:]] = masked()
            out = out.index_put((order[:pv],), tokens)
            return out.reshape(b, g, self.embed_dim)

        return tokens.reshape(b, -1, self.embed_dim), all_tokens

    def _first_stage(self, patches: torch.Tensor) -> torch.Tensor:
        """(P, k, 3) -> (P, k, 256): ``conv1_1``, ``bn1``, ReLU, ``conv1_2``, per point."""
        p, k, _ = patches.shape
        # Points as rows: the 1x1 convolutions become matrix products on (P*k, channels).
        x = patches.reshape(p * k, 3)
        w, bias = self.conv1_1.weight[..., 0], self.conv1_1.bias
        if plain_float(x) and not x.requires_grad and bias is not None:
            x = _PointLinear.apply(x, w, bias)
        else:
            x = F.linear(x, w, bias)
        # In place where autograd allows it: BatchNorm's backward reads its input, not its output,
        # and a fresh activation the size of these costs more in page faults than the op itself.
        x = F.relu(self.bn1(x), inplace=True)
        return F.linear(x, self.conv1_2.weight[..., 0], self.conv1_2.bias).view(p, k, 256)

    def _second_stage_input(self, h: torch.Tensor) -> torch.Tensor:
        """(P, k, 256) -> (P, k, 512): ``conv2_1`` on [max_k h, h] (before ``bn2``)."""
        pooled = h.max(dim=1).values  # (P, 256)
        # conv2_1 on [pooled broadcast, h] equals W_pooled @ pooled (once per patch, not once
        # per point) + W_local @ h: the same sum, half the work of the widest layer.
        w = self.conv2_1.weight[..., 0]
        per_patch = F.linear(pooled, w[:, :256], self.conv2_1.bias).unsqueeze(1)  # (P, 1, 512)
        return F.linear(h, w[:, 256:]).add_(per_patch)

    def _last_layer(self, x: torch.Tensor) -> torch.Tensor:
        """(P, k, 512) activated features -> (P, C): ``conv2_2``, then the max over the points."""
        return F.linear(x, self.conv2_2.weight[..., 0], self.conv2_2.bias).max(dim=1).values

    def _update_bn2(self, mean: torch.Tensor, var: torch.Tensor, n: int) -> None:
        """``bn2``'s running statistics and batch count, as its train-mode forward updates them."""
        bn = self.bn2
        if not (bn.training and bn.track_running_stats):
            return
        momentum = 0.0 if bn.momentum is None else bn.momentum
        if bn.num_batches_tracked is not None:
            bn.num_batches_tracked.add_(1)
            if bn.momentum is None:
                momentum = 1.0 / float(bn.num_batches_tracked)
        with torch.no_grad():
            bn.running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
            bn.running_var.mul_(1 - momentum).add_(var * (n / max(n - 1, 1)), alpha=momentum)

    def _frozen_last_layer(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """:meth:`_last_layer` with a copy of today's weights (they may change before a call)."""
        w = self.conv2_2.weight.detach()[..., 0].clone()
        bias = self.conv2_2.bias.detach().clone()
        return lambda x: F.linear(x, w, bias).max(dim=1).values

    def _masked_from_activations(self, x: torch.Tensor) -> Callable[[], torch.Tensor]:
        """Deferred tokens of masked patches from their (Pm, k, 512) ``bn2`` outputs."""
        x, last = x.detach(), self._frozen_last_layer()
        return lambda: last(F.relu(x))

    def _masked_from_stats(
        self, h: torch.Tensor, mean: torch.Tensor, var: torch.Tensor, pv: int
    ) -> Callable[[], torch.Tensor]:
        """Deferred tokens of the masked patches ``h[pv:]`` from ``bn2``'s batch statistics."""
        h, last = h.detach(), self._frozen_last_layer()
        w = self.conv2_1.weight.detach()[..., 0].clone()
        bias = self.conv2_1.bias.detach().clone()
        gamma, beta = self.bn2.weight.detach().clone(), self.bn2.bias.detach().clone()
        eps = self.bn2.eps

        def compute() -> torch.Tensor:
            hm = h[pv:]
            per_patch = F.linear(hm.max(dim=1).values, w[:, :256], bias).unsqueeze(1)
            y = F.linear(hm, w[:, 256:]).add_(per_patch)
            y = F.batch_norm(y.view(-1, y.shape[-1]), mean, var, gamma, beta, False, 0.0, eps)
            return last(F.relu(y).view(hm.shape[0], hm.shape[1], -1))

        return compute
