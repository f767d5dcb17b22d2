"""Keep a timm or torchvision model's module attributes consistent with its tensor shapes.

Structured removal slices tensors; modules also carry sizes as attributes
(``Attention.num_heads``, ``Conv2d.out_channels``...) that their forward reads.
``sync_attributes`` rewrites them from the tensors; ``resize_to`` gives a freshly
created model the recorded shapes of a shrunk one, so its state loads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import nn

from secateurs.errors import SecateursError
from secateurs.structured import resize_tensor, sync_sizes
from secateurs_timm.mha import ExplicitMultiheadAttention
from secateurs_timm.optional import TIMM


def sync_attributes(model: nn.Module) -> None:
    """Rewrite size attributes of every module from its current tensors (idempotent):
    standard layers (``secateurs.structured.sync_sizes``), torchvision's explicit
    attention's head counts, timm's own attributes when timm is installed
    (``secateurs_timm.timmlib.sync_attributes``) and VGG's ``num_features``."""
    for module in model.modules():
        sync_sizes(module)
    for module in model.modules():
        if isinstance(module, ExplicitMultiheadAttention):
            module.sync()
    if TIMM is not None:
        TIMM.sync_attributes(model)
    _sync_features(model)


def _sync_features(model: nn.Module) -> None:
    """The feature count timm's VGG keeps for reference (``num_features``)."""
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and hasattr(model, "num_features"):
        convs = [m for m in features if isinstance(m, nn.Conv2d)]
        if convs:
            model.num_features = convs[-1].out_channels


def resize_to(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> None:
    """Give every parameter and buffer of ``model`` the shape recorded in ``shapes``
    (state-dict key → shape), with uninitialised values, then sync the attributes.

    Raises when the keys or kernel sizes differ: the recorded model has another layout.
    """
    state = model.state_dict(keep_vars=True)
    missing = sorted(set(shapes) - set(state))
    extra = sorted(set(state) - set(shapes))
    if missing or extra:
        raise SecateursError(
            "the saved model's tensors do not match the timm architecture it names: "
            f"missing in the rebuilt model {missing[:5]}, not in the saved model {extra[:5]}"
        )
    reshaped = [k for k, t in state.items() if t.dim() > 2 and tuple(t.shape[2:]) != tuple(shapes[k][2:])]
    if reshaped:
        raise SecateursError(
            f"the saved model's kernels differ from the timm architecture it names ({reshaped[:3]}): "
            "only channel counts may differ; record the architecture patches it was built with"
        )
    modules = dict(model.named_modules())
    for key in state:
        owner, _, attr = key.rpartition(".")
        resize_tensor(modules[owner], attr, shapes[key])
    sync_attributes(model)


def shapes_of(model: nn.Module) -> dict[str, list[int]]:
    """State-dict key → shape, as recorded in the saved JSON."""
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def head_classes(model: nn.Module) -> int:
    """The class count of the model's head: ``num_classes``, else the last linear's outputs."""
    classes = getattr(model, "num_classes", None)
    if isinstance(classes, int) and classes > 0:
        return classes
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise SecateursError(
            f"cannot tell how many classes {type(model).__name__} predicts (no num_classes, no linear head)"
        )
    return int(linears[-1].out_features)
