"""What LRP needs to know about torchvision models (imported only when torchvision is installed).

- ResNet: zennit's own ``ResNetBasicBlockCanonizer`` / ``ResNetBottleneckCanonizer``
  (``zennit.torchvision``; the BatchNorm merge is ``canonizers.MergeBatchNorm``, exact
  where zennit 0.5.1's ``ResNetCanonizer`` keeps ``eps``). VGG needs only the merge.
- ViT: zennit 0.5.1 ships no ViT canonizer, so ``TorchvisionViTCanonizer`` makes
  ``nn.MultiheadAttention`` explicit (the fused input projection as a linear layer: the
  ``in_proj`` of secateurs' explicit attention, or an added ``lrp_in_proj`` sharing the
  parameters of a plain one; ``canonizers.attend``; an ``lrp_probe``), splits the
  ``EncoderBlock`` residuals in proportion (``rules.residual_sum``) and gives every
  ``LayerNorm`` a constant std.

The module-level tuples follow the zoo interface of ``secateurs_lrp.zoos``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchvision.models import resnet, vgg, vision_transformer
from zennit.canonizers import Canonizer
from zennit.torchvision import ResNetBasicBlockCanonizer, ResNetBottleneckCanonizer

from secateurs.errors import SecateursError
from secateurs_lrp.canonizers import ExplicitViTCanonizer, attend
from secateurs_lrp.rules import residual_sum

ATTENTION: tuple[type, ...] = (nn.MultiheadAttention,)
ATTENTION_PROJECTIONS: tuple[str, ...] = ("in_proj",)  # secateurs' explicit attention (``mha``)
CONTAINERS: tuple[type, ...] = (
    vision_transformer.VisionTransformer,
    vision_transformer.Encoder,
    vision_transformer.EncoderBlock,
    nn.MultiheadAttention,  # only once canonized: unhandled otherwise (see composites.unhandled_layers)
    resnet.ResNet,
    resnet.BasicBlock,
    resnet.Bottleneck,
    vgg.VGG,
)
PASS_THROUGH: tuple[type, ...] = ()
TRANSPARENT: tuple[type, ...] = ()
FC_ROOTS = frozenset({"heads"})


def added_rule_layers(name: str, module: nn.Module) -> list[str]:
    """The projection the canonizer adds to a plain ``nn.MultiheadAttention``."""
    plain = isinstance(module, nn.MultiheadAttention) and not isinstance(getattr(module, "in_proj", None), nn.Linear)
    return [f"{name}.lrp_in_proj"] if plain else []


def _encoder_block_forward(self: vision_transformer.EncoderBlock, input: torch.Tensor) -> torch.Tensor:
    x = self.ln_1(input)
    x, _ = self.self_attention(x, x, x, need_weights=False)
    x = residual_sum(input, self.dropout(x))
    return residual_sum(x, self.mlp(self.ln_2(x)))


def _in_proj(attn: nn.MultiheadAttention) -> nn.Linear:
    """A linear layer holding the attention's own fused input-projection parameters."""
    weight = attn.in_proj_weight
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=attn.in_proj_bias is not None, device="meta")
    linear.weight = weight
    if attn.in_proj_bias is not None:
        linear.bias = attn.in_proj_bias
    return linear


def _attention_forward(softmax: str):
    def forward(self: nn.MultiheadAttention, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        if not (query is key is value) or key_padding_mask is not None or attn_mask is not None or is_causal:
            raise SecateursError("relevance through masked, causal or cross attention is not supported")
        batch, tokens, _ = query.shape
        project = self.in_proj if isinstance(getattr(self, "in_proj", None), nn.Linear) else self.lrp_in_proj
        qkv = project(query).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        out = attend(q, k, v, self.head_dim**-0.5, softmax, self.lrp_probe)
        return self.out_proj(out.transpose(1, 2).reshape(batch, tokens, self.num_heads * self.head_dim)), None

    return forward


class TorchvisionViTCanonizer(ExplicitViTCanonizer):
    """torchvision ViT (``ExplicitViTCanonizer``): ``nn.MultiheadAttention`` (batch first,
    fused input projection) and ``EncoderBlock``."""

    attention_forward = staticmethod(_attention_forward)
    block_forward = staticmethod(_encoder_block_forward)

    def is_block(self, module: nn.Module) -> bool:
        return type(module) is vision_transformer.EncoderBlock

    def attention_attributes(self, name: str, module: nn.Module, forward) -> dict[str, Any] | None:
        if not isinstance(module, nn.MultiheadAttention):
            return None
        if not (module.batch_first and module._qkv_same_embed_dim) or module.bias_k is not None:
            raise SecateursError(f"{name}: relevance needs batch-first attention with a fused input projection")
        attributes = {"forward": forward.__get__(module), "lrp_probe": nn.Identity()}
        if added_rule_layers(name, module):
            attributes["lrp_in_proj"] = _in_proj(module)
        return attributes


def canonizers(model: nn.Module, softmax: str, relevance: bool) -> list[Canonizer]:
    """zennit's residual ``Sum`` for torchvision ResNet blocks (relevance only); explicit
    attention for torchvision ViT (always: heads are read at the softmax)."""
    out: list[Canonizer] = []
    kinds = {type(m) for m in model.modules()}
    if relevance and resnet.BasicBlock in kinds:
        out.append(ResNetBasicBlockCanonizer())
    if relevance and resnet.Bottleneck in kinds:
        out.append(ResNetBottleneckCanonizer())
    if any(isinstance(m, vision_transformer.EncoderBlock) for m in model.modules()):
        out.append(TorchvisionViTCanonizer(softmax if relevance else "gradient"))
    return out
