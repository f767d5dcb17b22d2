"""Transformers models whose layers have their own sizes (after secateurs' structured removal).

A transformers config holds one ``intermediate_size`` and one head count for all layers,
and BERT's config cannot hold a head count other than ``hidden_size / head width`` at all.
When structured removal leaves sizes the config cannot express, secateurs records them
per layer in ``config.secateurs_layer_sizes`` (one ``{size name: value}`` per layer) and
saves this file next to the weights, with ``config.json``'s ``auto_map`` pointing at it::

    "auto_map": {"AutoModelForCausalLM": "secateurs_resized.ResizedLlamaForCausalLM"}

so that the stock loader rebuilds every layer at its size before the weights load::

    AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

``Resized<Name>`` (any model class ``transformers.<Name>`` of the LLaMA or BERT layout) subclasses
``<Name>``; its ``__init__`` ends with ``apply_layer_sizes(self, config.secateurs_layer_sizes)``.
Without ``trust_remote_code=True`` transformers builds the stock class at the config's
sizes, and loading stops with its size-mismatch report (a ``RuntimeError``).

This file is self-contained (it imports only torch and transformers): it is copied as is.
Inside secateurs it is ``secateurs_transformers.secateurs_resized``, the one implementation
of per-layer sizes that ``secateurs.load`` and the adapters use too.
"""

from __future__ import annotations

from typing import Any

import torch
import transformers
from torch import nn

LAYER_SIZES = "secateurs_layer_sizes"
"""Config key of the per-layer sizes."""
PREFIX = "Resized"
"""``Resized<Name>`` is the per-layer-sized subclass of ``transformers.<Name>``."""


def layers(model: nn.Module) -> nn.ModuleList:
    """The model's transformer layers: ``<base>.layers`` (LLaMA) or ``<base>.encoder.layer`` (BERT)."""
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    base = base if isinstance(base, nn.Module) else model
    found = getattr(base, "layers", None)
    if found is None:
        found = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(found, nn.ModuleList):
        raise TypeError(f"{type(model).__name__} has neither LLaMA-style layers nor a BERT-style encoder")
    return found


def _fit(tensor: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """A tensor of ``shape`` like ``tensor``: its leading block when it fits (keeps any
    initialisation; works on the meta device), else uninitialised."""
    if all(new <= old for new, old in zip(shape, tensor.shape, strict=True)):
        return tensor.detach()[tuple(slice(0, n) for n in shape)].clone()
    return tensor.new_empty(shape)


def resize_linear(linear: nn.Linear, out_features: int | None = None, in_features: int | None = None) -> None:
    """Give ``linear`` (and its bias) new sizes, in place; the values are to be loaded."""
    out_features = linear.out_features if out_features is None else out_features
    in_features = linear.in_features if in_features is None else in_features
    weight = linear.weight
    if tuple(weight.shape) != (out_features, in_features):
        linear.weight = nn.Parameter(_fit(weight, (out_features, in_features)), weight.requires_grad)
    if linear.bias is not None and linear.bias.shape[0] != out_features:
        linear.bias = nn.Parameter(_fit(linear.bias, (out_features,)), linear.bias.requires_grad)
    linear.out_features, linear.in_features = out_features, in_features


def _resize_decoder_layer(layer: nn.Module, sizes: dict[str, int]) -> None:
    """LLaMA layout: ``self_attn.{q,k,v,o}_proj`` and ``mlp.{gate,up,down}_proj``."""
    attn, mlp = layer.self_attn, layer.mlp
    queries = sizes["num_attention_heads"] * attn.head_dim
    keys = sizes["num_key_value_heads"] * attn.head_dim
    resize_linear(attn.q_proj, out_features=queries)
    resize_linear(attn.k_proj, out_features=keys)
    resize_linear(attn.v_proj, out_features=keys)
    resize_linear(attn.o_proj, in_features=queries)
    attn.num_key_value_groups = sizes["num_attention_heads"] // sizes["num_key_value_heads"]
    resize_linear(mlp.gate_proj, out_features=sizes["intermediate_size"])
    resize_linear(mlp.up_proj, out_features=sizes["intermediate_size"])
    resize_linear(mlp.down_proj, in_features=sizes["intermediate_size"])


def _resize_encoder_layer(layer: nn.Module, sizes: dict[str, int]) -> None:
    """BERT layout: ``attention.self.{query,key,value}``, ``attention.output.dense``,
    ``intermediate.dense``, ``output.dense``."""
    attn = layer.attention.self
    width = sizes["num_attention_heads"] * attn.attention_head_size
    for linear in (attn.query, attn.key, attn.value):
        resize_linear(linear, out_features=width)
    resize_linear(layer.attention.output.dense, in_features=width)
    attn.num_attention_heads, attn.all_head_size = sizes["num_attention_heads"], width
    resize_linear(layer.intermediate.dense, out_features=sizes["intermediate_size"])
    resize_linear(layer.output.dense, in_features=sizes["intermediate_size"])


def apply_layer_sizes(model: nn.Module, sizes: list[dict[str, int]]) -> None:
    """Bring every layer of ``model`` to its ``sizes`` (one dict per layer): projection
    shapes and the head-count attributes attention reads. Idempotent; layers already at
    their sizes keep their tensors."""
    found = layers(model)
    if len(sizes) != len(found):
        raise ValueError(f"{LAYER_SIZES} lists {len(sizes)} layers, the model has {len(found)}")
    for layer, layer_sizes in zip(found, sizes, strict=True):
        if hasattr(layer, "self_attn") and hasattr(layer, "mlp"):
            _resize_decoder_layer(layer, layer_sizes)
        else:
            _resize_encoder_layer(layer, layer_sizes)


def stock_class(cls: type) -> type:
    """The transformers class ``cls`` is or derives from (``LlamaForCausalLM`` for
    ``ResizedLlamaForCausalLM``)."""
    return next(c for c in cls.__mro__ if c.__module__.startswith("transformers."))


_CLASSES: dict[str, type] = {}


def resized_class(base: type) -> type:
    """``Resized<base name>``: ``base`` (a transformers model class) building its layers at
    ``config.secateurs_layer_sizes``; the same class object for the same ``base``."""
    base = stock_class(base)
    name = PREFIX + base.__name__
    if name not in _CLASSES:

        def __init__(self: Any, config: Any, *args: Any, **kwargs: Any) -> None:
            base.__init__(self, config, *args, **kwargs)
            if getattr(config, LAYER_SIZES, None):
                apply_layer_sizes(self, getattr(config, LAYER_SIZES))

        doc = f"``transformers.{base.__name__}`` with per-layer sizes from ``config.{LAYER_SIZES}``."
        _CLASSES[name] = type(name, (base,), {"__init__": __init__, "__module__": __name__, "__doc__": doc})
    return _CLASSES[name]


def __getattr__(name: str) -> type:
    """``Resized<Name>`` for any model class ``transformers.<Name>`` (what ``auto_map`` names)."""
    base = getattr(transformers, name.removeprefix(PREFIX), None) if name.startswith(PREFIX) else None
    if isinstance(base, type) and issubclass(base, transformers.PreTrainedModel):
        return resized_class(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
