"""The generic decoder adapter: any transformers causal LM whose decoder layers hold
``nn.Linear`` or ``transformers.pytorch_utils.Conv1D`` modules.

Blocks are the model's own decoder layers: the ``nn.ModuleList`` whose members are the
classes the model declares in ``_no_split_modules`` (``model.layers``, ``transformer.h``,
``model.decoder.layers``...). Units are every ``Linear`` / ``Conv1D`` inside a layer, named
by their path; the role is the module's own name (``q_proj``, ``c_attn``,
``query_key_value``, ``fc1``...), or its path inside the layer where the name repeats
(GPT-2's ``attn.c_proj`` and ``mlp.c_proj``). ``Conv1D`` stores its weight ``[in, out]``:
its unit is ``transposed``, so it is pruned along its real input dimension. Never pruned:
embeddings, norms, the final norm, ``lm_head``, MoE routers (the linears directly inside
a module that holds ``experts``).

Mixture-of-experts: transformers 5 stores the experts of Mixtral and others as fused 3-D
parameters (``experts.gate_up_proj [experts, 2 * inter, hidden]``, ``experts.down_proj
[experts, hidden, inter]``) called inside one forward. When the eager forward of such an
``experts`` module is ``MixtralExperts.forward`` (the same source: its copies in Qwen-MoE,
OLMoE... too), ``blocks`` gives it one ``ExpertLinear`` per expert and projection, a view
of ``gate_up_proj[e]`` / ``down_proj[e]`` kept in a plain list (the state dict is
unchanged), and an instance ``forward`` running that eager loop through them (in place of
the configured ``experts_implementation``, same outputs), so hooks see each expert's
routed tokens: units ``...experts.{e}.gate_up_proj`` (MLP inputs) and
``...experts.{e}.down_proj`` (MLP output). An expert no calibration token is routed to has
no statistics: methods that need them (Wanda, SparseGPT) refuse with the stats collector's
"saw no input during calibration" (give more calibration data). Their neurons are not
declared. Experts of another forward (clamped, biased, transposed...) are not pruned
(``secateurs inspect`` lists them under "not pruned"); any shared expert and any expert
stored as ``nn.Linear`` are ordinary units.

True-sequential stages (``Block.stages``): attention inputs (q/k/v, fused qkv), attention
output, MLP inputs, MLP output, told apart by the module names.

Structured groups, where the coupling is declared (``LAYOUTS``):

* ``neurons``: a gated MLP (``gate_proj`` + ``up_proj`` → ``down_proj``), a fused
  ``gate_up_proj`` (split in two slices) → ``down_proj``, ``fc1`` → ``fc2`` (OPT),
  ``c_fc`` → ``c_proj`` (GPT-2, ``Conv1D``), ``dense_h_to_4h`` → ``dense_4h_to_h``
  (GPT-NeoX, Falcon). MoE layers with fused experts have none.
* ``heads``: attention with ``q/k/v/o_proj`` or Phi-3's fused ``qkv_proj`` (split in
  three slices) and ``o_proj``; grouped-query coupling: one component per key/value
  head with the query heads that share it. Declared in families whose config holds the
  head width (``head_dim``) and whose norms are per head. Refused, with the reason
  (``structured_refusal``), for the others: GPT-2, GPT-NeoX, Falcon, OPT and StableLM
  (head width derived from the hidden size), OLMo-2 (q/k norms over all heads together).

``layers`` (``granularity = "layers"``): whole decoder layers removed
(``secateurs_transformers.depth``); the saved config is an ordinary smaller one.

After removal the config records the new sizes (uniform: the config fields, so plain
``from_pretrained`` reloads; per-layer, LLaMA layout only: ``secateurs_layer_sizes`` and the
``secateurs_resized.py`` route, see ``llama``).
"""

from __future__ import annotations

import copy
import functools
import inspect
import types
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import attrs
import torch
from torch import nn
from torch.nn import functional as F

from secateurs.errors import SecateursError
from secateurs.offload import Budget
from secateurs.protocols import LoadedModel
from secateurs.types import Block, Group, ModelFacts, ParamSlice, Unit
from secateurs_transformers.common import (
    first_output,
    folder_facts,
    load_folder,
    meta_model,
    model_device,
    read_config,
    record_layer_sizes,
    save_folder,
)
from secateurs_transformers import width as residual
from secateurs_transformers.depth import remove_layers, removal_refusal
from secateurs_transformers.layouts import DERIVED_HEAD_WIDTH
from secateurs_transformers.secateurs_resized import LAYER_SIZES, stock_class

ATTENTION_INPUTS = frozenset(
    {"q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "query", "key", "value"}
)
MLP_OUTPUTS = frozenset({"down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2"})
LLAMA_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
LLAMA_MLP = ("gate_proj", "up_proj", "down_proj")
FUSED_ATTENTION = ("qkv_proj", "o_proj")
"""Phi-3 layout: one ``qkv_proj`` (query rows, then key rows, then value rows) and ``o_proj``."""
NEURON_FIELD = {"opt": "ffn_dim", "gpt2": "n_inner", "falcon": "ffn_hidden_size"}
"""Config field of the MLP width, by ``model_type`` (default ``intermediate_size``)."""


def _conv1d() -> type:
    from transformers.pytorch_utils import Conv1D

    return Conv1D


def _is_causal_lm(model: nn.Module) -> bool:
    """Whether ``model``'s transformers class is one ``AutoModelForCausalLM`` builds: the
    class its config maps to (one import), else any class of the mapping (all of them)."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        return False
    stock = stock_class(type(model))
    try:
        mapped = MODEL_FOR_CAUSAL_LM_MAPPING[type(model.config)]
    except (KeyError, ValueError):
        mapped = ()
    if stock in (mapped if isinstance(mapped, tuple | list) else (mapped,)):
        return True
    return stock in set(MODEL_FOR_CAUSAL_LM_MAPPING.values())


def _causal_architecture(config: dict[str, Any]) -> bool:
    return any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in config.get("architectures") or [])


def decoder_layers(model: nn.Module) -> tuple[nn.ModuleList, str] | str:
    """The model's decoder layers and their qualified name, or why there are none: the
    first ``nn.ModuleList`` whose members are all of a class in ``_no_split_modules``."""
    if not _is_causal_lm(model):
        return f"{type(model).__name__} is not a transformers causal LM (AutoModelForCausalLM class)"
    declared = set(getattr(model, "_no_split_modules", None) or ())
    if not declared:
        return f"{type(model).__name__} declares no `_no_split_modules` (its decoder layer class)"
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and all(type(m).__name__ in declared for m in module):
            return module, name
    return f"no ModuleList of {', '.join(sorted(declared))} in {type(model).__name__}"


def _linears(layer: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(path in the layer, module)`` of every prunable linear, routers excluded."""
    kinds = (nn.Linear, _conv1d())
    parents = dict(layer.named_modules())
    for path, module in layer.named_modules():
        parent = parents[path.rpartition(".")[0]]
        if isinstance(module, kinds) and not hasattr(parent, "experts"):
            yield path, module


class ExpertLinear(nn.Module):
    """Expert ``index`` of a fused experts module's ``param`` as a bias-free linear: its
    ``weight`` is a view of ``param[index]`` (read on each access, so it follows the
    experts' storage through moves and offloading)."""

    def __init__(self, experts: nn.Module, param: str, index: int) -> None:
        super().__init__()
        self._experts = (experts,)  # a tuple: not a registered submodule
        self.param, self.index = param, index

    @property
    def weight(self) -> torch.Tensor:
        return getattr(self._experts[0], self.param)[self.index]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight)


EXPERT_PARAMS = ("gate_up_proj", "down_proj")
EXPERT_LINEARS = "_secateurs_expert_linears"
"""Attribute of a fused experts module holding its ``ExpertLinear`` modules, expert-major."""


@functools.cache
def _source(forward: Callable[..., Any]) -> str | None:
    try:
        return inspect.getsource(forward)  # a wrapped (``use_experts_implementation``) forward: the eager one
    except (OSError, TypeError):
        return None


def _fused_experts(module: nn.Module) -> bool:
    """``module`` is a Mixtral-style fused experts module: 3-D ``gate_up_proj`` and
    ``down_proj``, an ``act_fn`` and the very source of ``MixtralExperts.forward``."""
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts

    params = [getattr(module, n, None) for n in EXPERT_PARAMS]
    if not all(isinstance(p, nn.Parameter) and p.dim() == 3 for p in params) or not hasattr(module, "act_fn"):
        return False
    return _source(type(module).forward) == _source(MixtralExperts.forward) is not None


def _experts_forward(
    self: nn.Module, hidden_states: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor
) -> torch.Tensor:
    """The eager ``MixtralExperts.forward``, calling each expert's ``ExpertLinear`` modules
    (bound to a fused experts module as its instance ``forward``)."""
    linears = getattr(self, EXPERT_LINEARS)
    n = len(linears) // 2
    final = torch.zeros_like(hidden_states)
    with torch.no_grad():
        mask = F.one_hot(top_k_index, num_classes=n + 1).permute(2, 1, 0)
        hit = torch.greater(mask.sum(dim=(-1, -2)), 0).nonzero()
    for e in hit[:, 0].tolist():
        if e == n:
            continue
        top_k_pos, token_idx = torch.where(mask[e])
        gate, up = linears[2 * e](hidden_states[token_idx]).chunk(2, dim=-1)
        out = linears[2 * e + 1](self.act_fn(gate) * up) * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, out.to(final.dtype))
    return final


def _expert_linears(layer: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """``(path in the layer, ExpertLinear)`` of every fused experts module's experts; the
    first call wraps the module (instance ``forward``), later ones reuse it."""
    for path, module in layer.named_modules():
        if not _fused_experts(module):
            continue
        linears = getattr(module, EXPERT_LINEARS, None)
        if linears is None:
            experts = module.gate_up_proj.shape[0]
            linears = [ExpertLinear(module, n, e) for e in range(experts) for n in EXPERT_PARAMS]
            setattr(module, EXPERT_LINEARS, linears)
            module.forward = types.MethodType(_experts_forward, module)
        for m in linears:
            yield f"{path}.{m.index}.{m.param}", m


def _roles(paths: list[str]) -> dict[str, str]:
    names = [p.rpartition(".")[2] for p in paths]
    return {p: n if names.count(n) == 1 else p for p, n in zip(paths, names, strict=True)}


def _stage(path: str) -> int:
    """0 attention inputs, 1 attention output, 2 MLP inputs, 3 MLP output."""
    *parents, name = path.split(".")
    if any("attn" in p or "attention" in p for p in parents):
        return 0 if name in ATTENTION_INPUTS else 1
    return 3 if name in MLP_OUTPUTS else 2


# -- structured coupling ---------------------------------------------------------------


def _find(layer: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    """The first module of ``layer`` (the layer itself included) with children ``names``."""
    for path, module in layer.named_modules():
        if all(isinstance(getattr(module, n, None), nn.Module) for n in names):
            return path, module
    return None


def _out(module: nn.Module, start: int = 0, length: int | None = None) -> list[ParamSlice]:
    """Slices of ``module``'s output features (a ``Conv1D`` stores them along dim 1, with
    its bias as an explicit companion)."""
    if isinstance(module, _conv1d()):
        slices = [ParamSlice(module, "weight", 1, start, length)]
        return slices + ([ParamSlice(module, "bias", 0, start, length)] if module.bias is not None else [])
    return [ParamSlice(module, "weight", 0, start, length)]


def _in(module: nn.Module) -> ParamSlice:
    return ParamSlice(module, "weight", 0 if isinstance(module, _conv1d()) else 1)


def _out_features(module: nn.Module) -> int:
    return module.weight.shape[1] if isinstance(module, _conv1d()) else module.weight.shape[0]


MLP_LAYOUTS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("gate_proj", "up_proj"), "down_proj"),
    (("gate_up_proj",), "down_proj"),
    (("fc1",), "fc2"),
    (("c_fc",), "c_proj"),
    (("dense_h_to_4h",), "dense_4h_to_h"),
)
"""``(producers, consumer)`` module names of the MLP layouts whose neurons are declared."""


def _neurons(prefix: str, layer: nn.Module) -> Group | None:
    for producers, consumer in MLP_LAYOUTS:
        found = _find(layer, (*producers, consumer))
        if found is None:
            continue
        path, mlp = found
        modules = [getattr(mlp, n) for n in producers]
        if producers == ("gate_up_proj",):  # fused: gate rows then up rows
            width = _out_features(modules[0]) // 2
            slices = _out(modules[0], 0, width) + _out(modules[0], width, width)
        else:
            width = _out_features(modules[0])
            slices = [s for m in modules for s in _out(m)]
        name = f"{prefix}.{path}.neurons" if path else f"{prefix}.neurons"
        return Group(name, "neurons", width, (*slices, _in(getattr(mlp, consumer))))
    return None


def _attention(layer: nn.Module) -> tuple[str, nn.Module] | None:
    """The layer's attention of a declared layout (separate or fused q/k/v), with its path."""
    return _find(layer, LLAMA_ATTENTION) or _find(layer, FUSED_ATTENTION)


def _heads_refusal(model: nn.Module, layer: nn.Module) -> str | None:
    model_type = getattr(model.config, "model_type", "")
    if model_type in DERIVED_HEAD_WIDTH:
        return f"{model_type}: {DERIVED_HEAD_WIDTH[model_type]}, so a model with fewer heads cannot be saved"
    found = _attention(layer)
    if found is None:
        layouts = f"{'/'.join(LLAMA_ATTENTION)} or {'/'.join(FUSED_ATTENTION)}"
        return f"{type(layer).__name__} has no attention with {layouts}"
    attn = found[1]
    norm = getattr(attn, "q_norm", None)
    if norm is not None and getattr(norm, "weight", None) is not None and norm.weight.numel() != attn.head_dim:
        return f"{model_type}: q_norm/k_norm normalise all heads together"
    return None


def _heads(prefix: str, layer: nn.Module) -> Group:
    """One component per key/value head with its query heads: rows of q, k and v (three
    spans of a fused ``qkv_proj``), columns of o_proj."""
    path, attn = _attention(layer)
    head_dim = attn.head_dim
    if hasattr(attn, "qkv_proj"):
        kv = attn.num_key_value_heads * head_dim
        queries = attn.qkv_proj.out_features - 2 * kv
        qkv = [ParamSlice(attn.qkv_proj, "weight", 0, start, n) for start, n in ((0, queries), (queries, kv), (queries + kv, kv))]
    else:
        kv = attn.k_proj.out_features
        qkv = [ParamSlice(getattr(attn, n), "weight", 0) for n in LLAMA_ATTENTION[:3]]
    return Group(
        f"{prefix}.{path}.heads",
        "heads",
        kv // head_dim,
        (*qkv, ParamSlice(attn.o_proj, "weight", 1)),
        {"head_dim": head_dim, "query_heads_per_component": attn.num_key_value_groups},
    )


def _sync_fused_attention(layer: nn.Module) -> None:
    """Phi-3 attention splits ``qkv_proj`` by ``self.config.num_attention_heads`` and
    ``self.num_key_value_heads``: give it its own config with its layer's head count."""
    found = _find(layer, FUSED_ATTENTION)
    if found is None:
        return
    attn = found[1]
    queries = attn.o_proj.in_features // attn.head_dim
    attn.num_key_value_heads = queries // attn.num_key_value_groups
    if attn.config.num_attention_heads != queries:
        attn.config = copy.copy(attn.config)
        attn.config.num_attention_heads = queries


def _sizes(model: nn.Module, block: Block) -> dict[str, int]:
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


@attrs.frozen
class DecoderAdapter:
    """Adapter for transformers causal LMs (see module docstring)."""

    name: str = "decoder"
    group_kinds: ClassVar[tuple[str, ...]] = ("heads", "neurons", "layers", "hidden")

    def describe(self, path: Path) -> ModelFacts | None:
        """The facts of a causal-LM folder from its config (``DescribingAdapter``)."""
        return folder_facts(path, _causal_architecture)

    def explain(self, model: nn.Module) -> str | None:
        """Why this adapter does not support ``model`` (``None``: it does)."""
        found = decoder_layers(model)
        if isinstance(found, str):
            return found
        if not any(True for _ in _linears(found[0][0])):
            return f"layer 0 ({found[1]}.0) holds no nn.Linear or Conv1D"
        return None

    def supports(self, model: nn.Module) -> bool:
        return self.explain(model) is None

    def blocks(self, model: nn.Module) -> list[Block]:
        residual.register_size_syncs()
        layers, base = decoder_layers(model)
        blocks = []
        for i, layer in enumerate(layers):
            prefix = f"{base}.{i}"
            experts = list(_expert_linears(layer))
            found = list(_linears(layer)) + experts
            roles = _roles([p for p, _ in found]) | {p: m.param for p, m in experts}
            units = tuple(
                Unit(f"{prefix}.{p}", m, "weight", role=roles[p], transposed=isinstance(m, _conv1d()))
                for p, m in found
            )
            stages = tuple(
                stage
                for k in range(4)
                if (stage := tuple(u.name for (p, _), u in zip(found, units, strict=True) if _stage(p) == k))
            )
            groups = [] if _heads_refusal(model, layer) else [_heads(prefix, layer)]
            neurons = _neurons(prefix, layer)
            groups += [neurons] if neurons is not None else []
            blocks.append(Block(prefix, i, layer, units, tuple(groups), stages))
        return blocks

    def structured_refusal(self, model: nn.Module, kind: str) -> str | None:
        """Why ``model``'s blocks have no ``kind`` groups (``None``: they have)."""
        layer = decoder_layers(model)[0][0]
        if kind == "heads":
            return _heads_refusal(model, layer)
        if kind == "neurons":
            if _neurons("", layer) is not None:
                return None
            if any(p.dim() == 3 for p in layer.parameters()):
                return f"{type(layer).__name__}'s MLP experts are fused 3-D parameters, whose neurons are not declared"
            layouts = "; ".join(f"{'+'.join(p)} -> {c}" for p, c in MLP_LAYOUTS)
            return f"{type(layer).__name__} has no MLP of a declared layout ({layouts}) as nn.Linear/Conv1D"
        return f"decoder layers have no {kind!r} groups (only heads and neurons)"

    def layer_refusal(self, model: nn.Module) -> str | None:
        """Why ``model``'s decoder layers cannot be removed (``LayerRemoving``)."""
        return removal_refusal(model)

    def remove_layers(self, model: nn.Module, keep: Sequence[int]) -> None:
        """Keep only the decoder layers at ``keep`` (``LayerRemoving``;
        ``secateurs_transformers.depth``: config lists, ``layer_idx``)."""
        layers, qualified = decoder_layers(model)
        remove_layers(model, layers, qualified, keep)

    def resized(self, model: nn.Module, block: Block, group: Group, keep: torch.Tensor) -> None:
        """Update what the modules do not infer from their tensors (Phi-3's head counts; module
        sizes such as ``Conv1D.nf`` are synced on removal, ``residual.register_size_syncs``) and
        record the layers' new sizes in ``model.config``."""
        _sync_fused_attention(block.module)
        sizes = [_sizes(model, b) for b in self.blocks(model)]
        record_layer_sizes(model.config, sizes, set(sizes[0]))

    def hidden_refusal(self, model: nn.Module, width: int | None) -> str | None:
        """Why ``model``'s residual stream cannot be narrowed (to ``width`` channels) (``WidthPruning``)."""
        return residual.hidden_refusal(model, width)

    def hidden_group(self, model: nn.Module) -> Group:
        """The hidden channels as one group (``WidthPruning``; ``secateurs_transformers.width``)."""
        return residual.hidden_group(model)

    def remove_hidden(self, model: nn.Module, keep: torch.Tensor) -> None:
        """Remove the hidden channels not in ``keep`` (``WidthPruning``)."""
        residual.remove_hidden(model, keep)

    def forward(self, model: nn.Module, batch: Any) -> Any:
        input_ids = batch["input_ids"].to(model_device(model))
        return model(input_ids=input_ids, use_cache=False)

    def block_output(self, output: Any) -> torch.Tensor:
        return first_output(output)

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None:
        return self.load_within(path, device=device, dtype=dtype, budget=None)

    def load_within(
        self, path: Path, *, device: str, dtype: torch.dtype | None, budget: Budget | None
    ) -> LoadedModel | None:
        """``load``, within ``budget`` when one is given (``BudgetLoader``, ``load_folder``)."""
        config = read_config(path)
        if config is None or not _causal_architecture(config):
            return None
        from transformers import AutoModelForCausalLM

        return load_folder(self, path, config, AutoModelForCausalLM, device=device, dtype=dtype, budget=budget)

    def explain_load(self, path: Path) -> str | None:
        """Why ``load`` declines ``path`` (the model is built on the meta device to tell)."""
        config = read_config(path)
        if config is None:
            return "no readable config.json (not a transformers folder)"
        if not _causal_architecture(config):
            names = ", ".join(config.get("architectures") or []) or "none"
            return f"config.json names no causal LM architecture (architectures: {names})"
        from transformers import AutoModelForCausalLM

        model = meta_model(path, AutoModelForCausalLM)
        return model if isinstance(model, str) else self.explain(model)

    def save(self, loaded: LoadedModel, directory: Path) -> list[Path]:
        """``save_pretrained`` layout; layers of different sizes only for the LLaMA layout
        (the ``secateurs_resized`` route), else a ``SecateursError`` before writing."""
        model = loaded.model
        if getattr(model.config, LAYER_SIZES, None):
            reason = llama_layout(decoder_layers(model)[0][0])
            if reason is not None:
                raise SecateursError(
                    f"{model.config.model_type}: its layers now have different sizes, which can be saved "
                    f"for the LLaMA layout only ({reason}); remove the same share from every layer "
                    "(the 'uniform' allocator)"
                )
        return save_folder(loaded, directory)
