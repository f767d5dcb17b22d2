"""Structured groups of a transformers decoder layer: ``heads`` and ``neurons``.

Where the family has a layout record (``secateurs_transformers.layouts.LAYOUTS``), the
groups come from it: the attention inputs (one fused projection splits into query, key and
value rows), ``attention_out``, the MLP inputs (a fused ``gate_up`` splits in two halves) and
``mlp_out``; its ``heads`` field says why heads are not declared. Families without a record
fall back to module names (``MLP_LAYOUTS``, ``LLAMA_ATTENTION`` / ``FUSED_ATTENTION``).

``heads``: one component per key/value head with the query heads that share it (rows of the
query, key and value projections, columns of the output projection), declared where the
attention has a ``head_dim`` and per-head norms. ``neurons``: one row of every MLP input and
one column of the MLP output per neuron; none for fused 3-D experts.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from torch import nn

from secateurs.types import Block, Group, ParamSlice
from secateurs_transformers.layouts import DERIVED_HEAD_WIDTH, LAYOUTS, QK_NORM_OVER_HEADS, DecoderLayout

LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
FUSED_ATTENTION = ("qkv_proj", "o_proj")
"""Phi-3 layout: one ``qkv_proj`` (query rows, then key rows, then value rows) and ``o_proj``."""
MLP_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("gate_proj", "up_proj"), "down_proj"),
    (("gate_up_proj",), "down_proj"),
    (("fc1",), "fc2"),
    (("c_fc",), "c_proj"),
    (("dense_h_to_4h",), "dense_4h_to_h"),
)
"""Fallback: ``(producers, consumer)`` module names of the MLP layouts whose neurons are declared."""
NEURON_FIELD = {"opt": "ffn_dim", "gpt2": "n_inner", "falcon": "ffn_hidden_size"}
"""Config field of the MLP width, by ``model_type`` (default ``intermediate_size``)."""


def conv1d() -> type:
    """transformers' ``Conv1D`` (GPT-2's projections, weights stored ``[in, out]``)."""
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def layout_record(model: nn.Module) -> DecoderLayout | None:
    """``model``'s declared layout, ``None`` for a family without a record."""
    return LAYOUTS.get(getattr(model.config, "model_type", ""))


def _find(layer: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    """The first module of ``layer`` (the layer itself included) with children ``names``."""
    for path, module in layer.named_modules():
        if all(isinstance(getattr(module, n, None), nn.Module) for n in names):
            return path, module
    return None


def _out(module: nn.Module, start: int = 0, length: int | None = None) -> list[ParamSlice]:
    """Slices of ``module``'s output features (a ``Conv1D`` stores them along dim 1, with
    its bias as an explicit companion)."""
    if isinstance(module, conv1d()):
        slices = [ParamSlice(module, "weight", 1, start, length)]
        return slices + ([ParamSlice(module, "bias", 0, start, length)] if module.bias is not None else [])
    return [ParamSlice(module, "weight", 0, start, length)]


def _in(module: nn.Module) -> ParamSlice:
    return ParamSlice(module, "weight", 0 if isinstance(module, conv1d()) else 1)


def _out_features(module: nn.Module) -> int:
    return module.weight.shape[1] if isinstance(module, conv1d()) else module.weight.shape[0]


def _mlp(layer: nn.Module, layout: DecoderLayout | None) -> tuple[str, Sequence[nn.Module], bool, nn.Module] | None:
    """``(path of the MLP, its input projections, fused gate/up, its output projection)``."""
    if layout is not None:
        if layout.mlp_out is None:
            return None
        inputs = [layer.get_submodule(p) for p in layout.mlp]
        return layout.mlp_out.rpartition(".")[0], inputs, layout.mlp_fused, layer.get_submodule(layout.mlp_out)
    for producers, consumer in MLP_LAYOUTS:
        found = _find(layer, (*producers, consumer))
        if found is not None:
            path, mlp = found
            return path, [getattr(mlp, n) for n in producers], producers == ("gate_up_proj",), getattr(mlp, consumer)
    return None


def neurons(prefix: str, layer: nn.Module, layout: DecoderLayout | None) -> Group | None:
    """The layer's ``neurons`` group (``None``: its MLP is of no declared layout)."""
    found = _mlp(layer, layout)
    if found is None:
        return None
    path, inputs, fused, output = found
    if fused:  # gate rows then up rows
        width = _out_features(inputs[0]) // 2
        slices = _out(inputs[0], 0, width) + _out(inputs[0], width, width)
    else:
        width = _out_features(inputs[0])
        slices = [s for m in inputs for s in _out(m)]
    name = f"{prefix}.{path}.neurons" if path else f"{prefix}.neurons"
    return Group(name, "neurons", width, (*slices, _in(output)))


def _attention(layer: nn.Module, layout: DecoderLayout | None) -> tuple[str, nn.Module] | None:
    """The layer's attention (the module holding its projections), with its path."""
    if layout is not None:
        path = layout.attention_out.rpartition(".")[0]
        return path, layer.get_submodule(path)
    return _find(layer, LLAMA_ATTENTION) or _find(layer, FUSED_ATTENTION)


def heads_refusal(model: nn.Module, layer: nn.Module, layout: DecoderLayout | None) -> str | None:
    """Why ``layer``'s attention heads are not declared (``None``: they are)."""
    model_type = getattr(model.config, "model_type", "")
    if layout is not None and layout.heads is not None:
        return f"{model_type}: {layout.heads}"
    found = _attention(layer, layout)
    if found is None:
        layouts = f"{'/'.join(LLAMA_ATTENTION)} or {'/'.join(FUSED_ATTENTION)}"
        return f"{type(layer).__name__} has no attention with {layouts}"
    attn = found[1]
    if not isinstance(getattr(attn, "head_dim", None), int):
        return f"{type(attn).__name__} has no head_dim"
    if layout is None and getattr(model.config, "head_dim", None) is None:
        return f"{model_type}: its config has no head_dim and its family no layout record; {DERIVED_HEAD_WIDTH}"
    norm = getattr(attn, "q_norm", None)
    if norm is not None and getattr(norm, "weight", None) is not None and norm.weight.numel() != attn.head_dim:
        return f"{model_type}: {QK_NORM_OVER_HEADS}"
    return None


def heads(prefix: str, layer: nn.Module, layout: DecoderLayout | None) -> Group:
    """One component per key/value head with its query heads: rows of q, k and v (three
    spans of a fused projection), columns of the output projection."""
    path, attn = _attention(layer, layout)
    names = layout.attention if layout is not None else None
    projections = [layer.get_submodule(n) for n in names] if names else None
    if projections is None:
        fused = hasattr(attn, "qkv_proj")
        projections = [attn.qkv_proj] if fused else [getattr(attn, n) for n in LLAMA_ATTENTION[:3]]
    output = layer.get_submodule(layout.attention_out) if layout is not None else attn.o_proj
    head_dim = attn.head_dim
    if len(projections) == 1:
        kv = attn.num_key_value_heads * head_dim
        queries = _out_features(projections[0]) - 2 * kv
        spans = ((0, queries), (queries, kv), (queries + kv, kv))
        qkv = [ParamSlice(projections[0], "weight", 0, start, n) for start, n in spans]
    else:
        kv = _out_features(projections[1])
        qkv = [ParamSlice(m, "weight", 0) for m in projections]
    return Group(
        f"{prefix}.{path}.heads",
        "heads",
        kv // head_dim,
        (*qkv, ParamSlice(output, "weight", 1)),
        {"head_dim": head_dim, "query_heads_per_component": attn.num_key_value_groups},
    )


def sync_fused_attention(layer: nn.Module, layout: DecoderLayout | None) -> None:
    """Phi-3 attention splits ``qkv_proj`` by ``self.config.num_attention_heads`` and
    ``self.num_key_value_heads``: give it its own config with its layer's head count."""
    found = _attention(layer, layout)
    fused = layout is not None and len(layout.attention) == 1 and layout.heads is None
    if found is None or not (fused or (layout is None and _find(layer, FUSED_ATTENTION))):
        return
    attn = found[1]
    queries = attn.o_proj.in_features // attn.head_dim
    attn.num_key_value_heads = queries // attn.num_key_value_groups
    if attn.config.num_attention_heads != queries:
        attn.config = copy.copy(attn.config)
        attn.config.num_attention_heads = queries


def layer_sizes(model: nn.Module, block: Block) -> dict[str, int]:
    """The sizes a decoder layer's current groups imply (config field names)."""
    sizes = {}
    for group in block.groups:
        if group.kind == "neurons":
            sizes[NEURON_FIELD.get(model.config.model_type, "intermediate_size")] = group.size
        else:
            head_dim = group.meta["head_dim"]
            queries = group.slices[0].span
            sizes |= {"num_attention_heads": queries // head_dim, "num_key_value_heads": group.size, "head_dim": head_dim}
    return sizes


def llama_layout(layer: nn.Module) -> str | None:
    """Why ``layer`` is not of the LLaMA layout (``None``: it is): ``self_attn.{q,k,v,o}_proj``
    and ``mlp.{gate,up,down}_proj``, all ``nn.Linear``."""
    for sub, names in (("self_attn", LLAMA_ATTENTION), ("mlp", LLAMA_MLP)):
        for name in names:
            if not isinstance(getattr(getattr(layer, sub, None), name, None), nn.Linear):
                return f"no nn.Linear `{sub}.{name}` in {type(layer).__name__}"
    return None
