"""AttnLRP-style relevance rules for the operations zennit has no module rule for.

In zennit's convention the "gradient" flowing backward is the relevance itself: a
function's backward receives the relevance ``R`` of its output and returns the
relevance of its inputs. These autograd functions compute the plain function in the
forward pass and an LRP rule in the backward pass:

- ``bilinear_matmul(a, b, shares, scale=)``: ``(a @ b) · scale`` with the ε-rule for bilinear products,
  each factor getting its share of the relevance (AttnLRP's uniform rule: ½ each).
- ``residual_sum(a, b)``: ``a + b`` with relevance split in proportion to the summands
  (zennit's ``Norm`` rule on ``Sum``, without the stacking and re-evaluation).
- ``softmax_relevance(x, mode)``: ``softmax(x, -1)`` with AttnLRP's rule
  ``R_in = x ⊙ (R − s · ΣR)`` (``"attnlrp"``), no relevance through it (``"cp"``,
  CP-LRP: attention weights act as constants), or the plain gradient (``"gradient"``).
"""

from __future__ import annotations

import torch
from zennit.core import stabilize  # z + ε · sign(z), sign(0) = 1: zennit's own ε-stabilizer

SOFTMAX_MODES = ("attnlrp", "cp", "gradient")


class _BilinearMatmul(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, scale: float, shares: tuple[float, float], epsilon: float) -> torch.Tensor:
        out = (a @ b) * scale
        ctx.save_for_backward(a, b, out)
        ctx.scale, ctx.shares, ctx.epsilon = scale, shares, epsilon
        return out

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        a, b, out = ctx.saved_tensors
        ratio = relevance / stabilize(out, ctx.epsilon) * ctx.scale
        rel_a = a * (ratio @ b.transpose(-2, -1)) * ctx.shares[0]
        rel_b = b * (a.transpose(-2, -1) @ ratio) * ctx.shares[1]
        return rel_a, rel_b, None, None, None


def bilinear_matmul(
    a: torch.Tensor,
    b: torch.Tensor,
    shares: tuple[float, float] = (0.5, 0.5),
    *,
    scale: float = 1.0,
    epsilon: float = 1e-6,
) -> torch.Tensor:
    """``(a @ b) · scale`` (the scale moves no relevance); backward: ε-LRP of the product w.r.t. each factor (the other held
    constant), scaled by ``shares``. Each factor's full ε-relevance sums to the output
    relevance (the product is linear in each factor), so shares summing to 1 conserve it;
    CP-LRP gives both factors 1 and stops the attention factor at the softmax."""
    return _BilinearMatmul.apply(a, b, scale, shares, epsilon)


class _Softmax(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, attnlrp: bool) -> torch.Tensor:
        s = torch.softmax(x, dim=-1)
        ctx.save_for_backward(x, s)
        ctx.attnlrp = attnlrp
        return s

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        x, s = ctx.saved_tensors
        if not ctx.attnlrp:
            return torch.zeros_like(x), None
        return x * (relevance - s * relevance.sum(-1, keepdim=True)), None


def softmax_relevance(x: torch.Tensor, mode: str) -> torch.Tensor:
    """``softmax(x, dim=-1)`` with the relevance rule ``mode`` (see module docstring)."""
    if mode == "gradient":
        return torch.softmax(x, dim=-1)
    if mode not in SOFTMAX_MODES:
        raise ValueError(f"unknown softmax rule {mode!r}; valid: {', '.join(SOFTMAX_MODES)}")
    return _Softmax.apply(x, mode == "attnlrp")


class _ResidualSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, epsilon: float) -> torch.Tensor:
        out = a + b
        ctx.save_for_backward(a, b, out)
        ctx.epsilon = epsilon
        return out

    @staticmethod
    def backward(ctx, relevance: torch.Tensor):
        a, b, out = ctx.saved_tensors
        ratio = relevance / stabilize(out, ctx.epsilon)
        return a * ratio, b * ratio, None


def residual_sum(a: torch.Tensor, b: torch.Tensor, epsilon: float = 1e-6) -> torch.Tensor:
    """``a + b``; backward: each summand gets ``R · summand / (a + b)`` (conservative)."""
    return _ResidualSum.apply(a, b, epsilon)
