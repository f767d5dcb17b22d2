"""How a torchvision VGG, ResNet or ViT is built: the builder (a ``torchvision.models``
builder name, or ``VisionTransformer`` for a ViT of any size), its allow-listed keyword
arguments, and the input it expects.

The torchvision counterpart of ``secateurs_timm.spec.TimmSpec``: the saved JSON records it
under ``torchvision_model`` (with the tensor shapes, see ``secateurs_timm.storage``), so a
model rebuilds as the same torchvision class. Builders are always called without weights.
"""

from __future__ import annotations

from typing import Any

import attrs
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet
from torchvision.models.vgg import VGG
from torchvision.models.vision_transformer import VisionTransformer

from secateurs.errors import SecateursError
from secateurs_timm.mha import make_explicit
from secateurs_timm.shapes import head_classes

VIT = "VisionTransformer"
VGG_BUILDERS = ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn")
RESNET_LAYERS: dict[tuple[type, tuple[int, ...]], str] = {
    (BasicBlock, (2, 2, 2, 2)): "resnet18",
    (BasicBlock, (3, 4, 6, 3)): "resnet34",
    (Bottleneck, (3, 4, 6, 3)): "resnet50",
    (Bottleneck, (3, 4, 23, 3)): "resnet101",
    (Bottleneck, (3, 8, 36, 3)): "resnet152",
}
"""ResNet builders by (block type, blocks per stage); a wide ResNet differs from its plain
builder only in tensor shapes, which the saved shapes carry."""
BUILDERS = frozenset({VIT, *VGG_BUILDERS, *RESNET_LAYERS.values()})
VIT_KWARGS = ("image_size", "patch_size", "num_layers", "num_heads", "hidden_dim", "mlp_dim")
CREATE_KWARGS = frozenset({"num_classes", *VIT_KWARGS, "representation_size", "dropout", "attention_dropout"})
"""The keywords a saved description may pass to a torchvision builder (architecture sizes
only: never ``weights`` or a path)."""


@attrs.frozen
class TorchvisionSpec:
    """``torchvision.models.<name>(**kwargs)`` (``VisionTransformer(**kwargs)`` for ``name
    == "VisionTransformer"``); ``input_size`` is ``(channels, height, width)``."""

    name: str
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    input_size: tuple[int, int, int] = attrs.field(default=(3, 224, 224), converter=tuple)

    def __attrs_post_init__(self) -> None:
        if self.name not in BUILDERS:
            raise SecateursError(f"unknown torchvision builder {self.name!r}; known: {', '.join(sorted(BUILDERS))}")
        refused = sorted(set(self.kwargs) - CREATE_KWARGS)
        if refused:
            raise SecateursError(
                f"torchvision model description: keywords {', '.join(refused)} not allowed; "
                f"allowed: {', '.join(sorted(CREATE_KWARGS))}"
            )

    def create(self) -> nn.Module:
        """A freshly initialised model of this spec (no pretrained weights), in eval mode,
        its attentions explicit (``secateurs_timm.mha``)."""
        try:
            if self.name == VIT:
                model = VisionTransformer(**self.kwargs)
            else:
                model = torchvision.models.get_model_builder(self.name)(weights=None, **self.kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise SecateursError(f"torchvision could not create {self.name!r} with {self.kwargs}: {exc}") from exc
        make_explicit(model)
        return model.eval()

    @property
    def module(self) -> str:
        """The torchvision module defining the architecture."""
        if self.name == VIT:
            return VisionTransformer.__module__
        return torchvision.models.get_model_builder(self.name).__module__

    def to_json(self) -> dict[str, Any]:
        return {"torchvision_model": self.name, "create_kwargs": self.kwargs, "input_size": list(self.input_size)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TorchvisionSpec:
        kwargs = data.get("create_kwargs", {})
        if not isinstance(kwargs, dict):
            raise SecateursError("torchvision model description: create_kwargs must be a table")
        try:
            return cls(data["torchvision_model"], dict(kwargs), data["input_size"])
        except KeyError as exc:
            raise SecateursError(f"torchvision model description lacks the key {exc}") from None


def infer_torchvision_spec(model: nn.Module) -> TorchvisionSpec:
    """The spec of a torchvision VGG, ResNet or ViT built elsewhere. Widths need not be
    inferred (the saved shapes carry them); depth and layout must match a builder."""
    if isinstance(model, VisionTransformer):
        attn = model.encoder.layers[0].self_attention
        kwargs = {
            "image_size": model.image_size, "patch_size": model.patch_size, "num_layers": len(model.encoder.layers),
            "num_heads": model.hidden_dim // attn.head_dim, "hidden_dim": model.hidden_dim, "mlp_dim": model.mlp_dim,
            "num_classes": model.num_classes,
        }
        if model.representation_size is not None:
            kwargs["representation_size"] = model.representation_size
        return TorchvisionSpec(VIT, kwargs, (3, model.image_size, model.image_size))
    classes = head_classes(model)
    if isinstance(model, VGG):
        convs = sum(isinstance(m, nn.Conv2d) for m in model.features)
        norm = any(isinstance(m, nn.BatchNorm2d) for m in model.features)
        depth = {8: "vgg11", 10: "vgg13", 13: "vgg16", 16: "vgg19"}.get(convs)
        if depth is None:
            raise SecateursError(f"a torchvision VGG with {convs} convolutions matches no vgg builder (8, 10, 13, 16)")
        return TorchvisionSpec(depth + ("_bn" if norm else ""), {"num_classes": classes})
    if isinstance(model, ResNet):
        stages = [model.layer1, model.layer2, model.layer3, model.layer4]
        key = (type(stages[0][0]), tuple(len(s) for s in stages))
        if key not in RESNET_LAYERS:
            raise SecateursError(f"a torchvision ResNet of {key[0].__name__} x {key[1]} matches no resnet builder")
        return TorchvisionSpec(RESNET_LAYERS[key], {"num_classes": classes})
    raise SecateursError(f"{type(model).__name__} is not a torchvision VGG, ResNet or VisionTransformer")

