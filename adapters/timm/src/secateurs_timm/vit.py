"""timm ``VisionTransformer``: blocks = ``model.blocks``; units qkv, proj, fc1, fc2;
groups "heads" (a head's q, k, v rows of the fused qkv + its proj input columns) and
"neurons" (an fc1 row and bias + the fc2 column)."""

from __future__ import annotations

from timm.layers import Attention, Mlp
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from secateurs.types import Block, Group
from secateurs_timm.base import TimmAdapter, slices, unit


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
