"""The ResNet layout of the timm and torchvision ResNet adapters (BasicBlock / Bottleneck):
blocks = stem, every residual block, head (both libraries' block layouts share their names).

Groups "channels" cover only a residual block's inner channels (BasicBlock: conv1 → bn1
→ conv2 input; Bottleneck: conv1 and conv2 likewise); the residual width is shared by
every block of a stage and the stem, so it is not a group.
"""

from __future__ import annotations

from torch import nn

from secateurs.types import Block, Group, Unit
from secateurs_timm.base import TimmAdapter, channel_group, unit
from secateurs_timm.views import view


def _convs(module: nn.Module) -> list[nn.Conv2d]:
    return [m for m in module.modules() if isinstance(m, nn.Conv2d)]


def _bottleneck(block: nn.Module) -> bool:
    return hasattr(block, "conv3")


def _inner_groups(names: dict[nn.Module, str], block: nn.Module) -> tuple[Group, ...]:
    """The free channel groups of a residual block (none when anti-aliasing or grouped
    convolutions mix the inner channels)."""
    if not isinstance(getattr(block, "aa", nn.Identity()), nn.Identity):
        return ()
    chain = [(block.conv1, block.bn1, block.conv2)]
    if _bottleneck(block):
        chain.append((block.conv2, block.bn2, block.conv3))
    return tuple(
        channel_group(names, conv, norm, nxt)
        for conv, norm, nxt in chain
        if conv.groups == 1 and nxt.groups == 1 and isinstance(norm, nn.BatchNorm2d)
    )


class ResNetLayout(TimmAdapter):
    """Base of the ResNet adapters: subclasses set ``model_class``, ``block_types`` (the
    residual block classes), ``stem`` and ``head``."""

    block_types: tuple[type[nn.Module], ...] = ()
    stem: tuple[str, ...] = ()
    group_kinds = ("channels",)
    """The attribute names of the stem's modules in order (convolution, norm, activation, pooling)."""

    def head(self, model: nn.Module) -> list[nn.Module]:
        """The head's modules in order: pooling (and flattening), then ``fc``."""
        raise NotImplementedError

    def supports(self, model: nn.Module) -> bool:
        return isinstance(model, self.model_class) and all(
            isinstance(b, self.block_types) for b in self._residual(model)
        )

    @staticmethod
    def _residual(model: nn.Module) -> list[nn.Module]:
        return [b for layer in (model.layer1, model.layer2, model.layer3, model.layer4) for b in layer]

    def blocks(self, model: nn.Module) -> list[Block]:
        names = self.check(model)
        stem_units = tuple(unit(names, c, "stem") for m in (model.conv1, model.maxpool) for c in _convs(m))
        out = [Block("stem", 0, self._stem(model), stem_units)]
        for block in self._residual(model):
            units = [unit(names, block.conv1, "conv1"), unit(names, block.conv2, "conv2")]
            if _bottleneck(block):
                units.append(unit(names, block.conv3, "conv3"))
            if block.downsample is not None:
                units += [unit(names, c, "downsample") for c in _convs(block.downsample)]
            out.append(Block(names[block], len(out), block, tuple(units), _inner_groups(names, block)))
        head_units: tuple[Unit, ...] = (unit(names, model.fc, "classifier"),) if isinstance(model.fc, nn.Linear) else ()
        out.append(Block("head", len(out), self._head(model), head_units))
        return out

    def sequence(self, model: nn.Module) -> list[nn.Module]:
        return [self._stem(model), *self._residual(model), self._head(model)]

    def _stem(self, model: nn.Module) -> nn.Module:
        return view(model, "stem", [getattr(model, name) for name in self.stem])

    def _head(self, model: nn.Module) -> nn.Module:
        return view(model, "head", self.head(model))
