"""The model zoos LRP knows, each a ``zoo_<library>`` module imported only when its library
is installed, and what they declare, gathered.

A zoo module declares ``canonizers(model, softmax, relevance) -> list[Canonizer]`` and the
tuples ``ATTENTION`` (attention types its canonizer makes explicit),
``ATTENTION_PROJECTIONS`` (the attribute of such an attention holding its fused q/k/v
projection, the layer a ``heads`` group slices), ``CONTAINERS``
(modules whose forward only chains their children), ``PASS_THROUGH`` (elementwise
scalings: zennit ``Pass``), ``TRANSPARENT`` (leaves a gradient passes correctly),
``FC_ROOTS`` (classifier-head names), and ``added_rule_layers(name, module) -> list[str]``
(the linear layers its canonizers add under ``module``, which get rules like any other).
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from torch import nn
from zennit.canonizers import Canonizer

from secateurs_lrp.canonizers import MergeBatchNorm, has_batch_norm

LIBRARIES = ("timm", "torchvision")
ZOOS: tuple[ModuleType, ...] = tuple(
    importlib.import_module(f"secateurs_lrp.zoo_{name}") for name in LIBRARIES if importlib.util.find_spec(name)
)


def gathered(attribute: str) -> tuple:
    """The zoos' ``attribute`` tuples, concatenated."""
    return tuple(item for zoo in ZOOS for item in getattr(zoo, attribute))


def added_rule_layers(name: str, module: nn.Module) -> list[str]:
    return [layer for zoo in ZOOS for layer in zoo.added_rule_layers(name, module)]


def canonizers_for(model: nn.Module, softmax: str = "attnlrp", *, relevance: bool = True) -> list[Canonizer]:
    """The canonizers ``model`` needs: BatchNorm merging (relevance only), then every zoo's."""
    out: list[Canonizer] = [MergeBatchNorm()] if relevance and has_batch_norm(model) else []
    for zoo in ZOOS:
        out += zoo.canonizers(model, softmax, relevance)
    return out


def has_attention(model: nn.Module) -> bool:
    """Whether ``model`` has an attention a zoo's canonizer makes explicit."""
    kinds = gathered("ATTENTION")
    return any(isinstance(m, kinds) for m in model.modules())
