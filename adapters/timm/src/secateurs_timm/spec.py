"""How a timm model is built: its registered name, ``create_model`` keyword arguments,
named architecture patches, and the input it expects.

A ``TimmSpec`` is what the saved JSON records (with the tensor shapes, see
``secateurs_timm.storage``), so a model rebuilds with ``timm.create_model`` alone.
Patches cover the few edits timm has no keyword for (a CIFAR-style ResNet stem).
Describing a model needs no timm; creating one does (the ``timm`` extra).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import attrs
from torch import nn

from secateurs.errors import SecateursError
from secateurs_timm.optional import require_timm


def cifar_stem(model: nn.Module) -> None:
    """Replace a timm ResNet's 7x7 stride-2 stem and its max-pool by one 3x3 stride-1
    convolution (the CIFAR ResNet stem): small inputs keep their resolution."""
    conv = model.conv1
    if not isinstance(conv, nn.Conv2d):
        raise SecateursError("the cifar_stem patch needs a ResNet with a single-conv stem (stem_type='')")
    model.conv1 = nn.Conv2d(conv.in_channels, conv.out_channels, 3, stride=1, padding=1, bias=False)
    model.maxpool = nn.Identity()


PATCHES: dict[str, Callable[[nn.Module], None]] = {"cifar_stem": cifar_stem}
CREATE_KWARGS = frozenset(
    {"num_classes", "in_chans", "img_size", "patch_size", "depth", "embed_dim", "num_heads", "mlp_ratio", "channels",
     "global_pool", "drop_rate", "qkv_bias", "class_token", "stem_type"}
)
"""The architecture keywords a saved description may pass to ``timm.create_model`` (no file
paths, checkpoints or pretrained-config overlays)."""


@attrs.frozen
class TimmSpec:
    """``timm.create_model(name, **kwargs)`` followed by ``patches`` (names in ``PATCHES``).

    ``input_size`` is ``(channels, height, width)`` of the images the model takes.
    """

    name: str
    kwargs: dict[str, Any] = attrs.field(factory=dict)
    patches: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    input_size: tuple[int, int, int] = attrs.field(default=(3, 224, 224), converter=tuple)

    def create(self) -> nn.Module:
        """A freshly initialised model of this spec (no pretrained weights), in eval mode;
        a ``SecateursError`` when timm is not installed."""
        unknown = [p for p in self.patches if p not in PATCHES]
        if unknown:
            raise SecateursError(f"unknown timm patches {unknown}; known: {sorted(PATCHES)}")
        timmlib = require_timm(f"the timm model {self.name!r}")
        try:
            model = timmlib.create_model(self.name, self.kwargs)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise SecateursError(f"timm could not create {self.name!r} with {self.kwargs}: {exc}") from exc
        for patch in self.patches:
            PATCHES[patch](model)
        return model.eval()

    def to_json(self) -> dict[str, Any]:
        return {
            "timm_model": self.name,
            "create_kwargs": self.kwargs,
            "patches": list(self.patches),
            "input_size": list(self.input_size),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TimmSpec:
        kwargs = data.get("create_kwargs", {})
        refused = sorted(set(kwargs) - CREATE_KWARGS) if isinstance(kwargs, dict) else ["(not a table)"]
        if refused:
            raise SecateursError(
                f"timm model description: create_kwargs {', '.join(refused)} not allowed; "
                f"allowed: {', '.join(sorted(CREATE_KWARGS))}"
            )
        try:
            return cls(data["timm_model"], dict(data.get("create_kwargs", {})),
                       data.get("patches", ()), data["input_size"])
        except KeyError as exc:
            raise SecateursError(f"timm model description lacks the key {exc}") from None


def infer_spec(model: nn.Module) -> TimmSpec:
    """A spec for a timm model built elsewhere: its architecture name and the keyword
    arguments timm records (classes, channels, image size). Tensor shapes are saved
    separately, so widths need not be inferred; depth and layout must match the name."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture")
    if not name:
        raise SecateursError(
            "cannot tell which timm architecture this model is (no pretrained_cfg['architecture']); "
            "pass a TimmSpec in LoadedModel.extra['timm_spec']"
        )
    in_chans = int(getattr(model, "in_chans", cfg.get("input_size", (3,))[0]))
    kwargs: dict[str, Any] = {"num_classes": int(getattr(model, "num_classes", 1000)), "in_chans": in_chans}
    size = tuple(cfg.get("input_size", (in_chans, 224, 224)))[1:]
    embed = getattr(model, "patch_embed", None)
    if embed is not None and getattr(embed, "img_size", None) is not None:
        size = tuple(embed.img_size)
        blocks = model.blocks
        kwargs.update(
            img_size=list(size),
            patch_size=list(embed.patch_size),
            depth=len(blocks),
            embed_dim=int(model.embed_dim),
            num_heads=int(model.embed_dim) // int(blocks[0].attn.head_dim),
        )
    stages = [getattr(model, f"layer{i}", None) for i in range(1, 5)]
    if all(isinstance(stage, nn.Sequential) and len(stage) for stage in stages):  # ResNet residual widths
        kwargs["channels"] = [_residual_width(stage[0]) // stage[0].expansion for stage in stages]
    return TimmSpec(name, kwargs, (), (in_chans, *size))


def _residual_width(block: nn.Module) -> int:
    last = getattr(block, "conv3", None) or block.conv2
    return int(last.weight.shape[0])
