"""torchvision VGG, ResNet and ViT: the timm adapters' block layouts and groups on
torchvision's module names, saved and reloaded as the same torchvision classes (no timm
needed).

- ``torchvision-vgg``: stages of ``features``, then ``avgpool`` + flatten + ``classifier``;
  the last conv's channel group owns its ``7 x 7`` block of input columns of the first
  linear (torchvision flattens channel-major).
- ``torchvision-resnet``: stem, every BasicBlock / Bottleneck, head (as for timm).
- ``torchvision-vit``: ``encoder.layers``; groups "heads" (q, k, v rows of the fused
  ``in_proj`` and ``out_proj`` columns) and "neurons" (MLP). The attentions are switched to
  ``ExplicitMultiheadAttention`` (same parameters and outputs, the fused projection as an
  ``in_proj`` linear; see ``secateurs_timm.mha``) the first time the blocks are asked for,
  so both projections' inputs are observable and heads removable.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models import vgg as tv_vgg
from torchvision.models import vision_transformer as tv_vit

from secateurs.types import Block, Group
from secateurs_timm.base import TimmAdapter, slices, unit
from secateurs_timm.mha import ExplicitMultiheadAttention, make_explicit
from secateurs_timm.resnet import ResNetLayout
from secateurs_timm.tvspec import TorchvisionSpec, infer_torchvision_spec
from secateurs_timm.vgg import VGGLayout

FLATTEN = nn.Flatten(1)
"""The ``torch.flatten(x, 1)`` of torchvision's forwards, as a (stateless, shared) module for views."""


class _Torchvision:
    """Mixin: the torchvision spec of a model built elsewhere."""

    def infer_spec(self, model: nn.Module) -> TorchvisionSpec:
        return infer_torchvision_spec(model)


class TorchvisionVGGAdapter(_Torchvision, VGGLayout):
    name = "torchvision-vgg"
    model_class = tv_vgg.VGG
    families = ("torchvision.models.vgg",)

    def classifier(self, model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
        layers = [m for m in model.classifier if isinstance(m, nn.Linear)]
        return [model.avgpool, FLATTEN, model.classifier], layers


class TorchvisionResNetAdapter(_Torchvision, ResNetLayout):
    name = "torchvision-resnet"
    model_class = tv_resnet.ResNet
    families = ("torchvision.models.resnet",)
    block_types = (tv_resnet.BasicBlock, tv_resnet.Bottleneck)
    stem = ("conv1", "bn1", "relu", "maxpool")

    def head(self, model: nn.Module) -> list[nn.Module]:
        return [model.avgpool, FLATTEN, model.fc]


def head_group(names: dict[nn.Module, str], attn: ExplicitMultiheadAttention) -> Group:
    """Heads of one attention: component h owns rows ``[h*hd, (h+1)*hd)`` of each third of
    the fused ``in_proj`` (weight and bias) and the matching ``out_proj`` input columns."""
    width = attn.num_heads * attn.head_dim
    parts = [s for k in range(3) for s in slices(attn.in_proj, 0, start=k * width, length=width)]
    parts += slices(attn.out_proj, 1, ("weight",))
    return Group(f"{names[attn]}.heads", "heads", attn.num_heads, tuple(parts), {"head_dim": attn.head_dim})


def neuron_group(names: dict[nn.Module, str], mlp: nn.Sequential) -> Group:
    fc1, fc2 = mlp[0], mlp[3]
    return Group(f"{names[mlp]}.neurons", "neurons", fc1.out_features, (*slices(fc1, 0), *slices(fc2, 1, ("weight",))))


def _plain(block: nn.Module) -> bool:
    mlp = getattr(block, "mlp", None)
    return (
        isinstance(block, tv_vit.EncoderBlock)
        and isinstance(block.self_attention, nn.MultiheadAttention)
        and isinstance(mlp, nn.Sequential) and len(mlp) == 5
        and isinstance(mlp[0], nn.Linear) and isinstance(mlp[3], nn.Linear)
    )


class TorchvisionViTAdapter(_Torchvision, TimmAdapter):
    name = "torchvision-vit"
    model_class = tv_vit.VisionTransformer
    group_kinds = ("heads", "neurons")
    families = ("torchvision.models.vision_transformer",)

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, self.model_class) and all(_plain(b) for b in model.encoder.layers)

    def blocks(self, model: nn.Module) -> list[Block]:
        self.check(model)
        make_explicit(model)
        names = {m: n for n, m in model.named_modules()}
        out = []
        for index, block in enumerate(model.encoder.layers):
            attn, mlp = block.self_attention, block.mlp
            units = (
                unit(names, attn.in_proj, "qkv"),
                unit(names, attn.out_proj, "proj"),
                unit(names, mlp[0], "fc1"),
                unit(names, mlp[3], "fc2"),
            )
            out.append(Block(names[block], index, block, units, (head_group(names, attn), neuron_group(names, mlp))))
        return out
