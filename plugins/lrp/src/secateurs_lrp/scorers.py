"""Structured scorers from attributions: ``lrp`` (relevance) and ``taylor`` (activation ×
gradient of the loss).

Attribution is a whole-model computation, so these scorers implement the optional
``prepare(loaded, calibration)`` step the pipeline calls once before anything is
pruned: it selects a labelled reference set from the calibration batches, runs one
batched attribution pass over it, and caches one score per component of every group of
the model. ``score_group`` then serves the cache by group name.

Where a group is read: conv output channels and MLP neurons at the output of the
group's producing layer (its first slice, on dim 0: the conv or the MLP's input layer); attention
heads at the softmax output of the attention whose query/key/value projection the group slices.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

import attrs
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel, ScoreContext
from secateurs.types import Group, Unit
from secateurs.validators import positive_int
from secateurs_lrp.canonizers import canonized
from secateurs_lrp.zoos import canonizers_for, gathered
from secateurs_lrp.composites import CompositeSpec, unhandled_layers
from secateurs_lrp.library import resolve_composite
from secateurs_lrp.relevance import collect, loss_seed, reference_set


def probe_resolver(model: nn.Module, groups: Sequence[Group]) -> Callable[[nn.Module], dict[str, nn.Module]]:
    """Group name → the module whose output is read, resolved when called (inside the
    canonizers, which add the attention probes)."""
    attention, projections = gathered("ATTENTION"), gathered("ATTENTION_PROJECTIONS")
    by_projection = {  # fused projection (as each zoo declares it) → its attention
        id(getattr(m, attr)): m
        for m in model.modules() if isinstance(m, attention)
        for attr in projections if isinstance(getattr(m, attr, None), nn.Module)
    }
    targets: dict[str, tuple[nn.Module, bool]] = {}
    for group in groups:
        first = group.slices[0]
        if group.kind == "heads":
            owner = by_projection.get(id(first.module))
            if owner is None:
                raise SecateursError(f"group {group.name!r}: no attention module owns its query/key/value projection")
            targets[group.name] = (owner, True)
        elif first.dim == 0:
            targets[group.name] = (first.module, False)
        else:
            raise SecateursError(f"group {group.name!r}: its first slice is not a layer's outputs (dim 0)")

    def resolve(_model: nn.Module) -> dict[str, nn.Module]:
        out = {}
        for name, (module, heads) in targets.items():
            if heads and not hasattr(module, "lrp_probe"):
                raise SecateursError(
                    f"group {name!r}: heads need an explicit-attention canonizer (timm or torchvision ViT)"
                )
            out[name] = module.lrp_probe if heads else module
        return out

    return resolve


def model_classes(loaded: LoadedModel) -> int:
    """The class count of the model's head (``num_classes``, else the last linear's outputs)."""
    classes = getattr(loaded.model, "num_classes", None)
    if classes is None:
        linears = [m for m in loaded.model.modules() if isinstance(m, nn.Linear)]
        classes = linears[-1].out_features if linears else None
    if not isinstance(classes, int) or classes <= 0:
        raise SecateursError("cannot tell how many classes the model has; set the scorer's `classes`")
    return classes


@attrs.define
class AttributionScorer:
    """Base of ``lrp`` and ``taylor``: the reference set, the cache, ``score_group``."""

    samples_per_class: int = attrs.field(default=10, validator=positive_int)
    batch_size: int = attrs.field(default=32, validator=positive_int)
    classes: int | None = None
    requires: ClassVar[frozenset[str]] = frozenset()
    comparison: ClassVar[str] = "matrix"
    selects: ClassVar[bool] = False
    cache: dict[str, torch.Tensor] = attrs.field(factory=dict, init=False, repr=False)
    seconds: float = attrs.field(default=0.0, init=False)

    def prepare(self, loaded: LoadedModel, calibration: Sequence[Any] | None) -> None:
        """Score every group of the model once (see module docstring)."""
        name = type(self).__name__
        if loaded.adapter is None:
            raise SecateursError(
                f"the {name} scores the structured groups an architecture adapter defines; "
                f"no adapter knows {type(loaded.model).__name__}, so it cannot run on this model"
            )
        if not calibration:
            raise SecateursError(
                f"the {name} needs a labelled reference set: add a [calibration] source giving (images, labels) "
                "batches (e.g. name = \"image-folder\", root = \"photos/\", or name = \"images\")"
            )
        groups = [g for block in loaded.adapter.blocks(loaded.model) for g in block.groups]
        if not groups:
            raise SecateursError(
                f"the {name} scores structured groups, and the {loaded.adapter.name!r} adapter defines none for "
                f"{type(loaded.model).__name__}; use an architecture adapter (timm or torchvision ViT, VGG, ResNet)"
            )
        classes = self.classes or model_classes(loaded)
        batches = reference_set(calibration, self.samples_per_class, classes, self.batch_size)
        start = time.perf_counter()
        self.cache = self.attribute(loaded, batches, probe_resolver(loaded.model, groups))
        self.seconds = time.perf_counter() - start

    def attribute(self, loaded: LoadedModel, batches, probes) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def score(self, unit: Unit, ctx: ScoreContext) -> torch.Tensor:
        raise SecateursError(
            "attribution scorers score structured components: set the recipe's granularity to "
            "'channels', 'neurons' or 'heads'"
        )

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor:
        if group.name not in self.cache:
            raise SecateursError(
                f"no attribution for group {group.name!r}: the scorer's prepare step did not run on this model"
            )
        scores = self.cache[group.name]
        if scores.numel() != group.size:
            raise SecateursError(f"group {group.name!r} has {group.size} components but {scores.numel()} scores")
        return scores


@attrs.define
class LrpScorer(AttributionScorer):
    """``lrp``: ``Σ_samples |R|`` of each component, R read at the layer output with the
    ``composite`` (a name: ``epsilon``, a zennit composite, a saved tuned composite, a
    JSON path; or an inline table, see ``CompositeSpec``)."""

    composite: str | Mapping[str, Any] = "epsilon"
    spec: CompositeSpec = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.spec = resolve_composite(self.composite)

    def attribute(self, loaded: LoadedModel, batches, probes) -> dict[str, torch.Tensor]:
        composite = self.spec.build(loaded.model)

        @contextmanager
        def checked(model: nn.Module) -> Iterator[nn.Module]:
            """The composite's context, refused (with the layers named) when a rule is missing."""
            with composite.context(model):
                bad = unhandled_layers(model, composite)
                if bad:
                    raise SecateursError(
                        f"the LRP composite cannot handle these layers of the model: {', '.join(bad)}; "
                        "supported: timm and torchvision VGG, ResNet (basic and bottleneck blocks) and plain ViT blocks"
                    )
                yield model

        return collect(
            loaded.model, batches, probes, context=checked, forward=loaded.adapter.forward
        )


@attrs.define
class TaylorScorer(AttributionScorer):
    """``taylor``: ``Σ_samples |Σ_positions a · ∂L/∂a|`` per component, L the
    cross-entropy of the true class (Molchanov et al.'s first-order Taylor criterion)."""

    def attribute(self, loaded: LoadedModel, batches, probes) -> dict[str, torch.Tensor]:
        model = loaded.model
        plain = canonizers_for(model, relevance=False)
        return collect(
            model,
            batches,
            probes,
            context=lambda m: canonized(m, plain),
            seed=loss_seed,
            times_activation=True,
            forward=loaded.adapter.forward,
        )
