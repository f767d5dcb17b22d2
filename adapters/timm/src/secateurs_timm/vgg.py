"""timm ``VGG``: one block per conv stage (a conv with the BatchNorm, ReLU and pooling
after it) and one for the classifier (pre-logits ConvMlp + head). Groups "channels": a
conv's output channels with its BatchNorm and the next conv's (or linear's) inputs."""

from __future__ import annotations

from timm.models.vgg import VGG, ConvMlp
from torch import nn

from secateurs.types import Block
from secateurs_timm.base import TimmAdapter, channel_group, unit
from secateurs_timm.views import view


def stages(features: nn.Sequential) -> list[list[nn.Module]]:
    """Split ``features`` before every conv (modules before the first conv, which timm's
    VGG does not have, form a run of their own)."""
    runs: list[list[nn.Module]] = []
    for module in features:
        if isinstance(module, nn.Conv2d) or not runs:
            runs.append([module])
        else:
            runs[-1].append(module)
    return runs


def _norm(run: list[nn.Module]) -> nn.Module | None:
    return next((m for m in run[1:] if isinstance(m, nn.BatchNorm2d)), None)


class VGGAdapter(TimmAdapter):
    name = "vgg"
    model_class = VGG
    families = ("timm.models.vgg",)

    @staticmethod
    def _views(model: VGG) -> tuple[list[list[nn.Module]], list[nn.Module]]:
        """The stages (module runs) and the block modules: one view per stage, then the head."""
        runs = stages(model.features)
        head = [model.pre_logits, model.head] if isinstance(model.pre_logits, ConvMlp) else [model.head]
        views = [view(model, f"stage{i}", run) for i, run in enumerate(runs)] + [view(model, "head", head)]
        return runs, views

    def sequence(self, model: nn.Module) -> list[nn.Module]:
        return self._views(model)[1]

    def blocks(self, model: nn.Module) -> list[Block]:
        names = self.check(model)
        runs, views = self._views(model)
        convs = [run[0] for run in runs if isinstance(run[0], nn.Conv2d)]
        pre = model.pre_logits if isinstance(model.pre_logits, ConvMlp) else None
        classifier = model.head.fc
        consumer = dict(zip(convs, [*convs[1:], pre.fc1 if pre is not None else classifier], strict=True))
        out = []
        for index, run in enumerate(runs):
            conv = run[0]
            is_conv = isinstance(conv, nn.Conv2d)
            groups = (channel_group(names, conv, _norm(run), consumer[conv]),) if is_conv else ()
            units = (unit(names, conv, "conv"),) if is_conv else ()
            out.append(Block(names[conv], index, views[index], units, groups))
        units, groups = [], []
        if pre is not None:
            units += [unit(names, pre.fc1, "fc1"), unit(names, pre.fc2, "fc2")]
            groups += [channel_group(names, pre.fc1, None, pre.fc2), channel_group(names, pre.fc2, None, classifier)]
        if isinstance(classifier, nn.Linear):
            units.append(unit(names, classifier, "classifier"))
        out.append(Block("head", len(runs), views[-1], tuple(units), tuple(groups)))
        return out
