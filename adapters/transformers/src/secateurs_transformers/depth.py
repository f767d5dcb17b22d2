"""Removing whole decoder layers of a transformers causal LM (``LayerRemoving`` for the
``decoder`` adapter), so that the model saves as an ordinary smaller one.

What is updated, besides the layers' ``nn.ModuleList``:

* ``config.num_hidden_layers`` (GPT-2's ``n_layer`` through its attribute map);
* every per-layer config list (``PER_LAYER_KEYS``: ``layer_types``, which Qwen2/3,
  Gemma 2/3 and every sliding-window family read per layer, and secateurs' own
  ``secateurs_layer_sizes``), filtered to the layers kept, so each kept layer keeps the
  attention type it was trained with;
* ``max_window_layers`` (Qwen2/3: layers at index ``>= max_window_layers`` use the sliding
  window) to the number of kept layers below it, the same layers on each side;
* every ``layer_idx`` attribute inside a kept layer (attention modules index the KV cache
  by it) to the layer's new position, so ``generate()`` works;
* ``has_sliding_layers`` of the model's modules, from the new ``layer_types``.

Refused (``removal_refusal``): configs in which a layer's computation depends on its index
(GPT-2's ``scale_attn_by_inverse_layer_idx``), which a renumbered layer would change.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from secateurs.errors import SecateursError
from secateurs_transformers.secateurs_resized import LAYER_SIZES

PER_LAYER_KEYS = ("layer_types", LAYER_SIZES)
"""Config attributes with one entry per decoder layer."""
INDEX_DEPENDENT = ("scale_attn_by_inverse_layer_idx",)
"""Config flags (true) under which a layer computes with its own index."""


def removal_refusal(model: nn.Module) -> str | None:
    """Why ``model``'s decoder layers cannot be removed (``None``: they can)."""
    config = model.config
    for flag in INDEX_DEPENDENT:
        if getattr(config, flag, False):
            return (
                f"{config.model_type} sets {flag}: each layer computes with its own index, "
                "which changes when earlier layers are removed"
            )
    return None


def remove_layers(model: nn.Module, layers: nn.ModuleList, qualified: str, keep: Sequence[int]) -> None:
    """Keep only ``layers[i]`` for ``i`` in ``keep`` (``layers`` is ``model``'s decoder
    ``ModuleList`` at ``qualified``) and update the config and indices (module docstring)."""
    config = model.config
    old = config.num_hidden_layers
    if len(layers) != old or sorted(set(keep)) != list(keep) or not keep or keep[-1] >= old:
        raise SecateursError(f"cannot keep layers {list(keep)} of a model with {old} ({len(layers)} in its ModuleList)")
    lists = {}
    for key in PER_LAYER_KEYS:
        value = getattr(config, key, None)
        if value is None:
            continue
        if len(value) != old:
            raise SecateursError(f"config.{key} has {len(value)} entries for {old} layers; fix the model's config")
        lists[key] = [value[i] for i in keep]
    parent, _, attribute = qualified.rpartition(".")
    kept = nn.ModuleList([layers[i] for i in keep])
    setattr(model.get_submodule(parent), attribute, kept)
    for new, layer in enumerate(kept):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new
    for key, value in lists.items():
        setattr(config, key, value)
    window_layers = getattr(config, "max_window_layers", None)
    if isinstance(window_layers, int):
        config.max_window_layers = sum(i < window_layers for i in keep)
    config.num_hidden_layers = len(keep)
    sliding = "sliding_attention" in (getattr(config, "layer_types", None) or ())
    for module in model.modules():
        if isinstance(getattr(module, "has_sliding_layers", None), bool):
            module.has_sliding_layers = sliding
