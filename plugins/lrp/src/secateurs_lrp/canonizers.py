"""Canonizers: temporary, reversible rewrites of a model that leave its outputs unchanged
but make relevance flow correctly.

- ``MergeBatchNorm``: zennit's sequential BatchNorm merge, also zeroing the BatchNorm's
  ``eps`` so the leftover BatchNorm is exactly the identity. zennit 0.5.1 keeps ``eps``
  (the merged model is then off by a factor 1/sqrt(1 + eps)); zennit 1.x records it as
  ``batch_norm_eps`` and zeroes it itself. Both work: ``eps`` is saved before the merge
  and restored after zennit's own removal.
- ``TimmResNetCanonizer``: timm ``BasicBlock`` / ``Bottleneck`` forward with the residual
  addition routed through ``zennit.layer.Sum`` (zennit's torchvision canonizer does not
  match timm blocks, and ``x += shortcut`` duplicates relevance).
- ``TimmViTCanonizer``: timm ``Block`` residuals split in proportion to the summands
  (``rules.residual_sum``, zennit's ``Norm`` rule as one autograd function); ``Attention`` made
  explicit (q·kᵀ and attn·v as bilinear ε-products, softmax with the chosen rule, the
  attention probabilities passed through an ``lrp_probe`` identity module so heads can be
  read); every ``LayerNorm`` with its standard deviation treated as a constant (so the
  ε-rule applies to it as to a linear layer).

Every canonizer is a zennit ``Canonizer``: ``apply(model)`` returns instances whose
``remove()`` restores the model exactly. ``canonized(model, canonizers)`` is the context
manager form.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from timm.layers import Attention
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.vision_transformer import Block
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer, SequentialMergeBatchNorm
from zennit.layer import Sum

from secateurs.errors import SecateursError
from secateurs_lrp.rules import SOFTMAX_MODES, bilinear_matmul, residual_sum, softmax_relevance


class MergeBatchNorm(SequentialMergeBatchNorm):
    """Merge every BatchNorm that directly follows a conv/linear into it (zennit), and
    make the BatchNorm the exact identity by zeroing its ``eps`` until removal."""

    def register(self, linears, batch_norm) -> None:
        self._eps = batch_norm.eps
        super().register(linears, batch_norm)
        batch_norm.eps = 0.0

    def remove(self) -> None:
        super().remove()
        self.batch_norm.eps = self._eps


def _sum(a: torch.Tensor, b: torch.Tensor, module: Sum) -> torch.Tensor:
    return module(torch.stack([a, b], dim=-1))


def _residual_tail(self: nn.Module, x: torch.Tensor, shortcut: torch.Tensor, act: nn.Module) -> torch.Tensor:
    """timm's block ending (SE, drop path, downsampled shortcut) with the sum through ``Sum``."""
    if self.se is not None:
        x = self.se(x)
    if self.drop_path is not None:
        x = self.drop_path(x)
    if self.downsample is not None:
        shortcut = self.downsample(shortcut)
    return act(_sum(shortcut, x, self.lrp_sum))


def _basic_forward(self: BasicBlock, x: torch.Tensor) -> torch.Tensor:
    y = self.aa(self.act1(self.drop_block(self.bn1(self.conv1(x)))))
    return _residual_tail(self, self.bn2(self.conv2(y)), x, self.act2)


def _bottleneck_forward(self: Bottleneck, x: torch.Tensor) -> torch.Tensor:
    y = self.act1(self.bn1(self.conv1(x)))
    y = self.aa(self.act2(self.drop_block(self.bn2(self.conv2(y)))))
    return _residual_tail(self, self.bn3(self.conv3(y)), x, self.act3)


class TimmResNetCanonizer(AttributeCanonizer):
    """Route the residual sum of timm ``BasicBlock`` / ``Bottleneck`` through ``Sum``."""

    def __init__(self) -> None:
        super().__init__(self._attributes)

    @staticmethod
    def _attributes(name: str, module: nn.Module) -> dict[str, Any] | None:
        if isinstance(module, Bottleneck):
            return {"forward": _bottleneck_forward.__get__(module), "lrp_sum": Sum()}
        if isinstance(module, BasicBlock):
            return {"forward": _basic_forward.__get__(module), "lrp_sum": Sum()}
        return None

    def copy(self) -> TimmResNetCanonizer:
        return TimmResNetCanonizer()


def _block_forward(self: Block, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
    if attn_mask is not None or is_causal:
        raise SecateursError("relevance through masked or causal attention is not supported")
    x = residual_sum(x, self.drop_path1(self.ls1(self.attn(self.norm1(x)))))
    return residual_sum(x, self.drop_path2(self.ls2(self.mlp(self.norm2(x)))))


def _layer_norm_forward(self: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    dims = tuple(range(-len(self.normalized_shape), 0))
    centred = x - x.mean(dims, keepdim=True)
    std = (centred.pow(2).mean(dims, keepdim=True) + self.eps).sqrt().detach()
    y = centred / std
    if self.weight is not None:
        y = y * self.weight
    if self.bias is not None:
        y = y + self.bias
    return y


def _attention_forward(softmax: str):
    shares = (1.0, 1.0) if softmax == "cp" else (0.5, 0.5)

    def forward(self: Attention, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise SecateursError("relevance through masked or causal attention is not supported")
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if softmax == "gradient":
            attn = self.lrp_probe(torch.softmax((q * self.scale) @ k.transpose(-2, -1), dim=-1))
            out = attn @ v
        else:
            scores = bilinear_matmul(q, k.transpose(-2, -1), scale=self.scale)
            attn = self.lrp_probe(softmax_relevance(scores, softmax))
            out = bilinear_matmul(attn, v, shares)
        out = self.norm(out.transpose(1, 2).reshape(batch, tokens, self.attn_dim))
        return self.proj_drop(self.proj(out))

    return forward


def check_attention(module: Attention) -> None:
    """Raise for attention variants the explicit forward does not reproduce."""
    if getattr(module, "gate", None) is not None:
        raise SecateursError("gated attention (a sigmoid gate multiplies the heads) has no relevance rule")


class TimmViTCanonizer(AttributeCanonizer):
    """timm ViT: explicit attention with the ``softmax`` rule (``"attnlrp"``, ``"cp"``, or
    ``"gradient"`` for plain gradients) and an ``lrp_probe`` on the attention
    probabilities; for relevance only (not ``"gradient"``), proportional residual sums
    and LayerNorm with a constant std."""

    def __init__(self, softmax: str = "attnlrp") -> None:
        if softmax not in SOFTMAX_MODES:
            raise ValueError(f"unknown softmax rule {softmax!r}; valid: {', '.join(SOFTMAX_MODES)}")
        self.softmax = softmax
        self._attention = _attention_forward(softmax)
        super().__init__(self._attributes)

    def _attributes(self, name: str, module: nn.Module) -> dict[str, Any] | None:
        if type(module) is Attention:
            check_attention(module)
            return {"forward": self._attention.__get__(module), "lrp_probe": nn.Identity()}
        if self.softmax == "gradient":
            return None
        if type(module) is Block:
            return {"forward": _block_forward.__get__(module)}
        if isinstance(module, nn.LayerNorm):
            return {"forward": _layer_norm_forward.__get__(module)}
        return None

    def copy(self) -> TimmViTCanonizer:
        return TimmViTCanonizer(self.softmax)


def has_batch_norm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def has_attention(model: nn.Module) -> bool:
    """Whether ``model`` has timm ``Attention`` (made explicit by ``TimmViTCanonizer``)."""
    return any(type(m) is Attention for m in model.modules())


def canonizers_for(model: nn.Module, softmax: str = "attnlrp", *, relevance: bool = True) -> list[Canonizer]:
    """The canonizers ``model`` needs: BatchNorm merging and residual ``Sum`` (relevance
    only), explicit attention for timm ViT blocks (always: heads are read at the softmax)."""
    out: list[Canonizer] = []
    if relevance and has_batch_norm(model):
        out.append(MergeBatchNorm())
    if relevance and any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        out.append(TimmResNetCanonizer())
    if has_attention(model):
        out.append(TimmViTCanonizer(softmax if relevance else "gradient"))
    return out


@contextmanager
def canonized(model: nn.Module, canonizers: Sequence[Canonizer]) -> Iterator[nn.Module]:
    """Apply ``canonizers`` to ``model`` for the duration of the block, then revert them."""
    instances: list[Canonizer] = []
    try:
        for canonizer in canonizers:
            instances += canonizer.apply(model)
        yield model
    finally:
        for instance in reversed(instances):
            instance.remove()
