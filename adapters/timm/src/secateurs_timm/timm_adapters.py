"""The timm adapters (imported only when timm is installed, ``secateurs_timm.optional``).

- ``vit``: timm ``VisionTransformer``: blocks = ``model.blocks``; units qkv, proj, fc1, fc2;
  groups "heads" (a head's q, k, v rows of the fused qkv + its proj input columns) and
  "neurons" (an fc1 row and bias + the fc2 column).
- ``vgg``: timm ``VGG`` on the VGG layout (``secateurs_timm.vgg``), its classifier the
  pre-logits ``ConvMlp`` and the head.
- ``resnet``: timm ``ResNet`` on the ResNet layout (``secateurs_timm.resnet``).
"""

from __future__ import annotations

from timm.layers import Attention, Mlp
from timm.models import resnet, vgg
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from secateurs.types import Block, Group
from secateurs_timm.base import TimmAdapter, slices, unit
from secateurs_timm.resnet import ResNetLayout
from secateurs_timm.vgg import VGGLayout


def _plain(block: nn.Module) -> bool:
    attn, mlp = getattr(block, "attn", None), getattr(block, "mlp", None)
    return type(attn) is Attention and type(mlp) is Mlp and isinstance(mlp.fc1, nn.Linear)


def head_group(names: dict[nn.Module, str], attn: Attention) -> Group:
    """Heads of one attention: component h owns q/k/v rows ``[h*hd, (h+1)*hd)`` of each third
    of ``qkv`` (and its gate rows, scale-norm entries) and proj input columns."""
    width = attn.num_heads * attn.head_dim
    parts = [s for k in range(3) for s in slices(attn.qkv, 0, start=k * width, length=width)]
    if attn.gate is not None:
        parts += slices(attn.gate, 0)
    if isinstance(attn.norm, nn.LayerNorm):
        parts += slices(attn.norm, 0)
    parts += slices(attn.proj, 1, ("weight",))
    return Group(f"{names[attn]}.heads", "heads", attn.num_heads, tuple(parts), {"head_dim": attn.head_dim})


def neuron_group(names: dict[nn.Module, str], mlp: Mlp) -> Group:
    parts = slices(mlp.fc1, 0)
    if isinstance(mlp.norm, nn.LayerNorm):
        parts += slices(mlp.norm, 0)
    parts += slices(mlp.fc2, 1, ("weight",))
    return Group(f"{names[mlp]}.neurons", "neurons", mlp.fc1.out_features, tuple(parts))


class ViTAdapter(TimmAdapter):
    name = "vit"
    model_class = VisionTransformer
    group_kinds = ("heads", "neurons")
    families = ("timm.models.vision_transformer",)

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, VisionTransformer) and all(_plain(b) for b in model.blocks)

    def blocks(self, model: nn.Module) -> list[Block]:
        names = self.check(model)
        out = []
        for index, block in enumerate(model.blocks):
            attn, mlp = block.attn, block.mlp
            units = (
                unit(names, attn.qkv, "qkv"),
                unit(names, attn.proj, "proj"),
                unit(names, mlp.fc1, "fc1"),
                unit(names, mlp.fc2, "fc2"),
            )
            groups = (head_group(names, attn), neuron_group(names, mlp))
            out.append(Block(names[block], index, block, units, groups))
        return out


class VGGAdapter(VGGLayout):
    name = "vgg"
    model_class = vgg.VGG
    families = ("timm.models.vgg",)

    def classifier(self, model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
        pre = model.pre_logits if isinstance(model.pre_logits, vgg.ConvMlp) else None
        layers = [pre.fc1, pre.fc2] if pre is not None else []
        if isinstance(model.head.fc, nn.Linear):
            layers.append(model.head.fc)
        return ([pre] if pre is not None else []) + [model.head], layers


class ResNetAdapter(ResNetLayout):
    name = "resnet"
    model_class = resnet.ResNet
    families = ("timm.models.resnet",)
    block_types = (resnet.BasicBlock, resnet.Bottleneck)
    stem = ("conv1", "bn1", "act1", "maxpool")

    def head(self, model: nn.Module) -> list[nn.Module]:
        return [model.global_pool, model.fc]


ADAPTERS: tuple[type[TimmAdapter], ...] = (ViTAdapter, VGGAdapter, ResNetAdapter)
