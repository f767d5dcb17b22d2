"""What LRP needs to know about timm models (imported only when timm is installed).

- ``TimmResNetCanonizer``: timm ``BasicBlock`` / ``Bottleneck`` forward with the residual
  addition routed through ``zennit.layer.Sum`` (zennit's torchvision canonizer does not
  match timm blocks, and ``x += shortcut`` duplicates relevance).
- ``TimmViTCanonizer``: timm ``Block`` residuals split in proportion to the summands
  (``rules.residual_sum``), ``Attention`` made explicit (``canonizers.attend``, an
  ``lrp_probe`` on the probabilities), every ``LayerNorm`` with a constant std.

The module-level tuples follow the zoo interface of ``secateurs_lrp.zoos``.
"""

from __future__ import annotations

from typing import Any

import timm.layers
import timm.models.resnet
import timm.models.vgg
import timm.models.vision_transformer
import torch
from timm.layers import Attention
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.vision_transformer import Block
from torch import nn
from zennit.canonizers import AttributeCanonizer, Canonizer
from zennit.layer import Sum

from secateurs.errors import SecateursError
from secateurs_lrp.canonizers import ExplicitViTCanonizer, attend
from secateurs_lrp.rules import residual_sum

ATTENTION: tuple[type, ...] = (Attention,)
ATTENTION_PROJECTIONS: tuple[str, ...] = ("qkv",)
"""Attention modules the zoo's canonizer makes explicit (with an ``lrp_probe``)."""
CONTAINERS: tuple[type, ...] = (
    timm.models.vision_transformer.VisionTransformer,
    Block,
    Attention,
    timm.layers.Mlp,
    timm.layers.PatchEmbed,
    timm.models.resnet.ResNet,
    BasicBlock,
    Bottleneck,
    timm.models.vgg.VGG,
    timm.models.vgg.ConvMlp,
    timm.layers.ClassifierHead,
    timm.layers.SelectAdaptivePool2d,
)
"""Modules whose forward only chains their children (or is made explicit by a canonizer)."""
PASS_THROUGH: tuple[type, ...] = (timm.layers.LayerScale,)
"""Modules that scale elementwise: relevance passes them unchanged (zennit ``Pass``)."""
TRANSPARENT: tuple[type, ...] = (timm.layers.DropPath,)
"""Leaf modules relevance passes through correctly as a plain gradient."""
FC_ROOTS: frozenset[str] = frozenset()
"""Top-level module names of the classifier head beyond the generic ones (``head``, ``fc``...)."""


def added_rule_layers(name: str, module: nn.Module) -> list[str]:
    """Names of the layers the canonizers add under ``module`` (none: timm's are modules)."""
    return []


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


def _attention_forward(softmax: str):
    def forward(self: Attention, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise SecateursError("relevance through masked or causal attention is not supported")
        batch, tokens, _ = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = attend(self.q_norm(q), self.k_norm(k), v, self.scale, softmax, self.lrp_probe)
        out = self.norm(out.transpose(1, 2).reshape(batch, tokens, self.attn_dim))
        return self.proj_drop(self.proj(out))

    return forward


def check_attention(module: Attention) -> None:
    """Raise for attention variants the explicit forward does not reproduce."""
    if getattr(module, "gate", None) is not None:
        raise SecateursError("gated attention (a sigmoid gate multiplies the heads) has no relevance rule")


class TimmViTCanonizer(ExplicitViTCanonizer):
    """timm ViT (``ExplicitViTCanonizer``): timm ``Attention`` and ``Block``."""

    attention_forward = staticmethod(_attention_forward)
    block_forward = staticmethod(_block_forward)

    def is_block(self, module: nn.Module) -> bool:
        return type(module) is Block

    def attention_attributes(self, name: str, module: nn.Module, forward) -> dict[str, Any] | None:
        if type(module) is not Attention:
            return None
        check_attention(module)
        return {"forward": forward.__get__(module), "lrp_probe": nn.Identity()}


def canonizers(model: nn.Module, softmax: str, relevance: bool) -> list[Canonizer]:
    """Residual ``Sum`` for timm ResNet blocks (relevance only); explicit attention for timm
    ViT blocks (always: heads are read at the softmax)."""
    out: list[Canonizer] = []
    if relevance and any(isinstance(m, (BasicBlock, Bottleneck)) for m in model.modules()):
        out.append(TimmResNetCanonizer())
    if any(type(m) is Attention for m in model.modules()):
        out.append(TimmViTCanonizer(softmax if relevance else "gradient"))
    return out
