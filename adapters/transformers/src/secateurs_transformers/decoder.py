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

Architecture knowledge comes from the family's layout record
(``secateurs_transformers.layouts.LAYOUTS``, one per ``model_type``); families without one
fall back to module names, documented where they are used.

True-sequential stages (``Block.stages``): attention inputs (q/k/v, fused qkv), attention
output, MLP inputs, MLP output, from the record (``DecoderLayout.stage``), else told apart
by the module names.

Structured groups (``secateurs_transformers.groups``), where the coupling is declared:

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
``hidden``: the residual stream narrowed across the whole model
(``secateurs_transformers.width``), where the record declares it.

After removal the config records the new sizes (uniform: the config fields, so plain
``from_pretrained`` reloads; per-layer, LLaMA layout only: ``secateurs_layer_sizes`` and the
``secateurs_resized.py`` route, see ``llama``).
"""

from __future__ import annotations

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
from secateurs.types import Block, Group, ModelFacts, Unit
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
from secateurs_transformers.groups import (
    MLP_LAYOUTS,
    conv1d,
    heads,
    heads_refusal,
    layer_sizes,
    layout_record,
    llama_layout,
    neurons,
    sync_fused_attention,
)
from secateurs_transformers.layouts import DecoderLayout
from secateurs_transformers.secateurs_resized import LAYER_SIZES, stock_class

ATTENTION_INPUTS = frozenset(
    {"q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "query", "key", "value"}
)
MLP_OUTPUTS = frozenset({"down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2"})


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
    kinds = (nn.Linear, conv1d())
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


def _stage(path: str, layout: DecoderLayout | None = None) -> int:
    """0 attention inputs, 1 attention output, 2 MLP inputs, 3 MLP output: from the family's
    layout record, else (no record, or a linear it does not name) from the module names."""
    declared = layout.stage(path) if layout is not None else None
    if declared is not None:
        return declared
    *parents, name = path.split(".")
    if any("attn" in p or "attention" in p for p in parents):
        return 0 if name in ATTENTION_INPUTS else 1
    return 3 if name in MLP_OUTPUTS else 2


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
        layout = layout_record(model)
        blocks = []
        for i, layer in enumerate(layers):
            prefix = f"{base}.{i}"
            experts = list(_expert_linears(layer))
            found = list(_linears(layer)) + experts
            roles = _roles([p for p, _ in found]) | {p: m.param for p, m in experts}
            units = tuple(
                Unit(f"{prefix}.{p}", m, "weight", role=roles[p], transposed=isinstance(m, conv1d()))
                for p, m in found
            )
            stages = tuple(
                stage
                for k in range(4)
                if (stage := tuple(u.name for (p, _), u in zip(found, units, strict=True) if _stage(p, layout) == k))
            )
            groups = [] if heads_refusal(model, layer, layout) else [heads(prefix, layer, layout)]
            mlp = neurons(prefix, layer, layout)
            groups += [mlp] if mlp is not None else []
            blocks.append(Block(prefix, i, layer, units, tuple(groups), stages))
        return blocks

    def structured_refusal(self, model: nn.Module, kind: str) -> str | None:
        """Why ``model``'s blocks have no ``kind`` groups (``None``: they have)."""
        layer, layout = decoder_layers(model)[0][0], layout_record(model)
        if kind == "heads":
            return heads_refusal(model, layer, layout)
        if kind == "neurons":
            if neurons("", layer, layout) is not None:
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
        sync_fused_attention(block.module, layout_record(model))
        sizes = [layer_sizes(model, b) for b in self.blocks(model)]
        record_layer_sizes(model.config, sizes, set(sizes[0]))

    def hidden_refusal(self, model: nn.Module, width: int | None) -> str | None:
        """Why ``model``'s residual stream cannot be narrowed (to ``width`` channels) (``WidthPruning``)."""
        return residual.hidden_refusal(model, width)

    def hidden_group(self, model: nn.Module) -> Group:
        """The hidden channels as one group (``WidthPruning``; ``secateurs_transformers.width``)."""
        return residual.hidden_group(model)

    def remove_hidden(self, model: nn.Module, keep: torch.Tensor, calibration: Sequence[Any] | None = None) -> None:
        """Remove the hidden channels not in ``keep`` (``WidthPruning``; norm gains
        calibrated on ``calibration`` when given: ``residual.removed_shares``)."""
        residual.remove_hidden(model, keep, calibration, self.forward)

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
