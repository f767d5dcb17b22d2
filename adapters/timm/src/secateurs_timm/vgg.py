"""The VGG layout of the timm and torchvision VGG adapters: one block per conv stage (a conv
with the BatchNorm, ReLU and pooling after it) and one for the classifier (each library's
own, ``classifier``). Groups "channels": a conv's output channels with its BatchNorm and
the next conv's (or linear's) inputs."""

from __future__ import annotations

from torch import nn

from secateurs.types import Block
from secateurs_timm.base import TimmAdapter, channel_group, unit
from secateurs_timm.views import view


def stages(features: nn.Sequential) -> list[list[nn.Module]]:
    """Split ``features`` before every conv (modules before the first conv, which neither
    library's VGG has, form a run of their own)."""
    runs: list[list[nn.Module]] = []
    for module in features:
        if isinstance(module, nn.Conv2d) or not runs:
            runs.append([module])
        else:
            runs[-1].append(module)
    return runs


def _norm(run: list[nn.Module]) -> nn.Module | None:
    return next((m for m in run[1:] if isinstance(m, nn.BatchNorm2d)), None)


class VGGLayout(TimmAdapter):
    """Base of the VGG adapters: subclasses set ``model_class`` and ``classifier``."""

    group_kinds = ("channels",)

    def classifier(self, model: nn.Module) -> tuple[list[nn.Module], list[nn.Module]]:
        """The head block's modules in order, and its prunable layers in data-flow order
        (each one's outputs feed the next; the first takes the last conv's channels)."""
        raise NotImplementedError

    def _views(self, model: nn.Module) -> tuple[list[list[nn.Module]], list[nn.Module]]:
        """The stages (module runs) and the block modules: one view per stage, then the head."""
        runs = stages(model.features)
        head = self.classifier(model)[0]
        views = [view(model, f"stage{i}", run) for i, run in enumerate(runs)] + [view(model, "head", head)]
        return runs, views

    def sequence(self, model: nn.Module) -> list[nn.Module]:
        return self._views(model)[1]

    def blocks(self, model: nn.Module) -> list[Block]:
        names = self.check(model)
        runs, views = self._views(model)
        convs = [run[0] for run in runs if isinstance(run[0], nn.Conv2d)]
        layers = self.classifier(model)[1]
        chain = [*convs, *layers]
        consumer = dict(zip(chain, chain[1:]))
        out = []
        for index, run in enumerate(runs):
            conv = run[0]
            is_conv = isinstance(conv, nn.Conv2d)
            groups = (channel_group(names, conv, _norm(run), consumer[conv]),) if conv in consumer else ()
            units = (unit(names, conv, "conv"),) if is_conv else ()
            out.append(Block(names[conv], index, views[index], units, groups))
        roles = [f"fc{i + 1}" for i in range(len(layers) - 1)] + ["classifier"]
        units = tuple(unit(names, layer, role) for layer, role in zip(layers, roles))
        groups = tuple(channel_group(names, a, None, b) for a, b in zip(layers, layers[1:]))
        out.append(Block("head", len(runs), views[-1], units, groups))
        return out
