"""Narrowing the residual stream of a transformers decoder (``WidthPruning`` for the
``decoder`` adapter): the ``hidden`` group and its removal.

The group's components are the hidden channels; channel ``i`` owns column ``i`` of every
embedding and reader, row ``i`` (and bias entry) of every writer, entry ``i`` of every norm
over the width, of an untied ``lm_head``'s input and of fused expert tensors, as the family's
``DecoderLayout`` (``secateurs_transformers.layouts``) declares them (``readers``, ``writers``).

Without calibration data, removal keeps the smaller model equal to the zeroed one (every
entry of the removed channels set to zero), up to each norm's epsilon: an RMS norm over
``d'`` of ``d`` channels divides by ``sqrt(d / d')`` more than the same norm over the
zero-padded ``d``, so every norm over the width is multiplied by ``sqrt(d / d')``
(``(1 + w)`` for offset norms). With calibration data (what a run gives), each norm's gain
is instead ``sqrt((1 - f) d / d')``, ``f`` the share of that norm's input energy the removed
channels held on the calibration batches (``removed_shares``): the narrower model's norms
then keep the dense model's output scale, whether their input's energy sits in a few kept
channels (pre-norms of the residual stream: ``f`` near 0) or is spread evenly (the
post-norms of Gemma 2/3 on the projections' outputs). Measured: SmolLM2 at 450 of 576
channels, perplexity 157.5 calibrated, 153.7 exact, 227.2 with no gain change; Gemma 3 270M
at 512 of 640: 251 calibrated, 452 exact, 368 with no gain change
(``benchmarks/structured/README.md``). Where the model
scales its embeddings by ``sqrt(config.hidden_size)`` (Gemma), the stored embeddings are
multiplied by ``sqrt(d / d')`` so the product stays the trained one after the config says
``d'``; a tied ``lm_head`` would see that factor too, and the final norm divides it out.

The config then says ``hidden_size = d'`` and records ``head_dim`` (these families read it
from the config, and would otherwise derive it from the new hidden size), so the saved
folder reloads with plain ``from_pretrained``.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import torch
from torch import nn

from secateurs.structured import register_size_sync, remove_components
from secateurs.types import HIDDEN, Group, ParamSlice
from secateurs_transformers.groups import layout_record
from secateurs_transformers.layouts import DecoderLayout

PROBE_TOLERANCE = 1e-2
"""Relative tolerance of the norm probes (bfloat16 models)."""


@attrs.frozen(eq=False)
class Residual:
    """A model's ``DecoderLayout`` resolved to its modules."""

    layout: DecoderLayout
    width: int
    readers: tuple[nn.Module, ...]
    writers: tuple[nn.Module, ...]
    norms: tuple[nn.Module, ...]
    """Every norm over the width: the layers' norms, then the final norm (last)."""
    embeddings: tuple[nn.Module, ...]
    experts: tuple[tuple[nn.Module, str, int], ...]
    lm_head: nn.Module | None
    """The untied output projection (``None`` when tied to the input embeddings)."""


def _layers(model: nn.Module) -> nn.ModuleList:
    from secateurs_transformers.decoder import decoder_layers

    return decoder_layers(model)[0]


def layout_of(model: nn.Module) -> DecoderLayout | str:
    """``model``'s declared layout, else the one derived from it, else why there is none."""
    record = layout_record(model)
    if record is None:
        return derived_layout(model)
    return record if record.hidden is None else f"{model.config.model_type}: {record.hidden}"


def resolve(model: nn.Module, layout: DecoderLayout) -> Residual:
    """The modules ``layout`` names in ``model`` (``KeyError``-free: ``hidden_refusal`` checked)."""
    layers = _layers(model)

    def each(paths: tuple[str, ...]) -> tuple[nn.Module, ...]:
        return tuple(layer.get_submodule(p) for layer in layers for p in paths)

    experts = tuple(
        (layer.get_submodule(path.rpartition(".")[0]), path.rpartition(".")[2], dim)
        for layer in layers
        for path, dim in layout.expert_params
    )
    head = model.get_output_embeddings()
    embeddings = tuple(model.get_submodule(p) for p in layout.embeddings)
    tied = head is not None and any(head.weight is e.weight for e in embeddings)
    return Residual(
        layout=layout,
        width=model.config.hidden_size,
        readers=each(layout.readers),
        writers=each(layout.writers),
        norms=(*each(layout.norms), model.get_submodule(layout.final_norm)),
        embeddings=embeddings,
        experts=experts,
        lm_head=None if tied else head,
    )


def hidden_refusal(model: nn.Module, width: int | None) -> str | None:
    """Why ``model``'s residual stream cannot be narrowed (``None``: it can): no layout, an
    offloaded model, or (given a ``width``) a width the family's config refuses to save."""
    layout = layout_of(model)
    if isinstance(layout, str):
        return layout
    if any(p.is_meta for p in model.parameters()):
        return "part of it is offloaded (max_memory); narrowing the hidden width needs the whole model in memory"
    try:
        residual = resolve(model, layout)
    except AttributeError as exc:
        return f"its modules do not match the {model.config.model_type} layout record ({exc})"
    if _head_dim(model) is None:
        return "its attention has no head_dim attribute, so the head width after narrowing is unknown"
    for module in (*residual.readers, *residual.writers, *residual.norms, *residual.embeddings):
        if getattr(module, "weight", None) is None:
            return f"{type(module).__name__} has no weight to narrow"
    return None if width is None else _config_refusal(model, width)


def _narrowed_config(model: nn.Module, width: int) -> Any:
    config = copy.deepcopy(model.config)
    config.hidden_size = width
    if getattr(config, "head_dim", None) is None:
        config.head_dim = _head_dim(model)
    return config


def _config_refusal(model: nn.Module, width: int) -> str | None:
    """Why the family's config refuses ``hidden_size = width`` (its ``validate``, which
    ``save_pretrained`` runs: LLaMA and Gemma 2/3 want a multiple of the head count), with
    the nearest widths it accepts."""
    validate = getattr(_narrowed_config(model, width), "validate", None)
    if validate is None:
        return None
    try:
        validate()
    except Exception as exc:  # noqa: BLE001 - whatever the family's validators raise
        why = str(exc).strip().splitlines()[-1].strip()
        accepted = [w for w in range(max(1, width - 64), width + 65) if _accepted(model, w)]
        near = sorted(accepted, key=lambda w: (abs(w - width), w))[:2]
        hint = f"; the nearest widths it accepts: {' or '.join(map(str, sorted(near)))}" if near else ""
        return f"{type(model.config).__name__} refuses hidden_size = {width} ({why}){hint}"
    return None


def _accepted(model: nn.Module, width: int) -> bool:
    try:
        _narrowed_config(model, width).validate()
    except Exception:  # noqa: BLE001
        return False
    return True


def _head_dim(model: nn.Module) -> int | None:
    return next((m.head_dim for m in _layers(model)[0].modules() if isinstance(getattr(m, "head_dim", None), int)), None)


def hidden_group(model: nn.Module) -> Group:
    """The ``hidden`` group of ``model`` (module docstring)."""
    residual = resolve(model, layout_of(model))
    slices = [ParamSlice(e, "weight", 1) for e in residual.embeddings]
    slices += [ParamSlice(m, "weight", 1) for m in residual.readers]
    slices += [ParamSlice(m, "weight", 0) for m in residual.writers]
    slices += [ParamSlice(m, "weight", 0) for m in residual.norms]
    slices += [ParamSlice(m, name, dim) for m, name, dim in residual.experts]
    if residual.lm_head is not None:
        slices.append(ParamSlice(residual.lm_head, "weight", 1))
    return Group(HIDDEN, HIDDEN, residual.width, tuple(slices))


def remove_hidden(
    model: nn.Module,
    keep: torch.Tensor,
    calibration: Sequence[Any] | None = None,
    forward: Callable[[nn.Module, Any], Any] | None = None,
) -> None:
    """Remove the hidden channels not in ``keep`` (bool ``[hidden_size]``). Without
    ``calibration`` the model stays equal to its zeroed self (module docstring); with it
    (run by the adapter's ``forward``), each norm's gain is calibrated instead
    (``removed_shares``)."""
    register_size_syncs()
    residual = resolve(model, layout_of(model))
    head_dim = _head_dim(model)
    tied_head = model.get_output_embeddings() if residual.lm_head is None else None
    old, new = residual.width, int(keep.sum())
    shares = [0.0] * len(residual.norms)
    if calibration:
        if forward is None:
            raise ValueError("remove_hidden: calibration needs the adapter's forward")
        shares = removed_shares(model, residual.norms, keep, calibration, forward)
    remove_components([(hidden_group(model), keep)])
    ratio = math.sqrt(old / new)
    with torch.no_grad():
        for norm, share in zip(residual.norms, shares, strict=True):
            _scale_norm(norm, ratio * math.sqrt(1 - share), residual.layout.norm_offset)
        if residual.layout.embedding_scale:
            for embedding in residual.embeddings:
                embedding.weight.mul_(ratio)
                _set_embedding_scale(embedding, math.sqrt(new))
            if tied_head is not None:
                _scale_norm(residual.norms[-1], 1 / ratio, residual.layout.norm_offset)
    if tied_head is not None:
        tied_head.weight = residual.embeddings[0].weight
        tied_head.in_features = new
    model.config.hidden_size = new
    if getattr(model.config, "head_dim", None) is None:
        model.config.head_dim = head_dim


def removed_shares(
    model: nn.Module,
    norms: Sequence[nn.Module],
    keep: torch.Tensor,
    calibration: Sequence[Any],
    forward: Callable[[nn.Module, Any], Any],
) -> list[float]:
    """For each norm, the share of its input's energy (``Σ x²`` over the calibration tokens)
    that lies in the channels not in ``keep``, measured on the dense model (one ``forward``
    of every calibration batch: the adapter's).

    A norm over the ``d'`` kept channels of an input whose removed channels held a share
    ``f`` of its energy divides by ``sqrt((1 - f) d / d')`` times the dense root mean square;
    multiplying its gain by that restores the dense output scale on average. ``f = 0`` is
    the exact zero = remove gain ``sqrt(d / d')``; evenly spread energy (``f = 1 - d'/d``)
    leaves the gain as it was."""
    width = keep.numel()
    energy = {id(n): torch.zeros(width, dtype=torch.float64) for n in norms}

    def measure(module: nn.Module, args: tuple) -> None:
        energy[id(module)] += args[0].detach().double().reshape(-1, width).pow(2).sum(0).cpu()

    hooks = [n.register_forward_pre_hook(measure) for n in norms]
    try:
        with torch.no_grad():
            for batch in calibration:
                forward(model, batch)
    finally:
        for hook in hooks:
            hook.remove()
    gone = ~keep.cpu().bool()
    return [float(e[gone].sum() / e.sum()) if e.sum() > 0 else 0.0 for e in energy.values()]


def _scale_norm(norm: nn.Module, factor: float, offset: bool) -> None:
    """Multiply the norm's effective gain by ``factor`` (``(1 + w)`` when ``offset``)."""
    if offset:
        norm.weight.mul_(factor).add_(factor - 1)
    else:
        norm.weight.mul_(factor)


def _set_embedding_scale(embedding: nn.Module, scale: float) -> None:
    """What the model computes from the new config (``sqrt(hidden_size)``), so the module in
    memory matches a reload."""
    if isinstance(getattr(embedding, "embed_scale", None), torch.Tensor):
        embedding.embed_scale.fill_(scale)
    if hasattr(embedding, "scalar_embed_scale"):
        embedding.scalar_embed_scale = scale


@functools.cache
def register_size_syncs() -> None:
    """Teach ``secateurs.structured.sync_sizes`` the size attributes of transformers' own
    module types that read them in ``forward`` (``Conv1D.nf``, Mixtral's ``hidden_dim``)."""
    from transformers.models.mixtral.modeling_mixtral import MixtralExperts, MixtralTopKRouter
    from transformers.pytorch_utils import Conv1D

    register_size_sync(Conv1D, lambda m: setattr(m, "nf", m.weight.shape[1]))
    register_size_sync(MixtralTopKRouter, lambda m: setattr(m, "hidden_dim", m.weight.shape[1]))
    register_size_sync(MixtralExperts, lambda m: setattr(m, "hidden_dim", m.gate_up_proj.shape[2]))


# -- families without a record ----------------------------------------------------------


def norm_kind(norm: nn.Module, width: int) -> str | None:
    """``"rms"`` (``x / rms(x) * w``), ``"rms_offset"`` (``x / rms(x) * (1 + w)``) or ``None``
    (anything else, such as LayerNorm's centring), told by running ``norm`` on a fixed input
    with its weight set to 0 and to 1 (restored after)."""
    weight = getattr(norm, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.shape != (width,) or weight.is_meta:
        return None
    x = torch.linspace(-1.0, 2.0, width, device=weight.device).unsqueeze(0)
    expected = x / x.pow(2).mean().sqrt()
    saved = weight.detach().clone()
    outputs = []
    try:
        with torch.no_grad():
            for value in (0.0, 1.0):
                weight.fill_(value)
                outputs.append(norm(x.to(weight.dtype)).float())
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    close = functools.partial(torch.allclose, rtol=PROBE_TOLERANCE, atol=PROBE_TOLERANCE)
    if close(outputs[0], torch.zeros_like(x)) and close(outputs[1], expected):
        return "rms"
    if close(outputs[0], expected) and close(outputs[1], 2 * expected):
        return "rms_offset"
    return None


def _named_norms(layer: nn.Module, width: int) -> Iterator[tuple[str, str | None]]:
    """``(path, norm_kind)`` of every module of ``layer`` with a 1-D weight of ``width``
    entries outside its attention (head norms there may happen to have that width)."""
    for path, module in layer.named_modules():
        weight = getattr(module, "weight", None)
        parents = path.split(".")[:-1]
        if isinstance(weight, torch.Tensor) and weight.dim() == 1 and weight.shape[0] == width:
            if not any("attn" in p or "attention" in p for p in parents):
                yield path, norm_kind(module, width)


def derived_layout(model: nn.Module) -> DecoderLayout | str:
    """The residual part of the layout of a family without a record, derived from the model:
    readers and writers from the layer's stages (attention and MLP inputs / outputs whose
    width is the hidden size), norms by ``norm_kind``; or why it cannot be derived (fused
    experts, position embeddings, a norm that is not an RMS norm, no final norm). Its
    ``mlp_fused`` is not known (the fallback ``groups`` finds neurons by name)."""
    from secateurs_transformers.decoder import _linears, _stage

    width = model.config.hidden_size
    layer = _layers(model)[0]
    if any(p.dim() == 3 for p in layer.parameters()):
        return f"{type(layer).__name__} has fused 3-D expert tensors and its family no layout record"
    by_stage: dict[int, list[str]] = {0: [], 1: [], 2: [], 3: []}
    for path, module in _linears(layer):
        if not isinstance(module, nn.Linear):
            return f"{path} is a {type(module).__name__}, not nn.Linear"
        stage = _stage(path)
        if module.in_features == width if stage in (0, 2) else module.out_features == width:
            by_stage[stage].append(path)
    if len(by_stage[1]) != 1 or len(by_stage[3]) != 1:
        return f"{type(layer).__name__} has no single attention output and MLP output writing the hidden width"
    norms = list(_named_norms(layer, width))
    kinds = {kind for _, kind in norms}
    if not norms or None in kinds or len(kinds) > 1:
        found = ", ".join(f"{p} ({k or 'not an RMS norm'})" for p, k in norms) or "none"
        return f"its norms over the hidden width are not all RMS norms of one kind ({found}); add a layout record"
    embedding = model.get_input_embeddings()
    names = {m: n for n, m in model.named_modules()}
    others = [n for n, m in model.named_modules() if isinstance(m, nn.Embedding) and m is not embedding
              and m.embedding_dim == width]
    if others:
        return f"it has position embeddings ({', '.join(others)}) and no layout record"
    base = model.get_submodule(model.base_model_prefix) if hasattr(model, model.base_model_prefix) else model
    final = [f"{model.base_model_prefix}.{p}" for p, kind in _named_norms(base, width)
             if kind in kinds and "." not in p]
    if len(final) != 1:
        return f"no single final norm over the hidden width in {type(base).__name__}; add a layout record"
    return DecoderLayout(
        attention=tuple(by_stage[0]),
        attention_out=by_stage[1][0],
        mlp=tuple(by_stage[2]),
        mlp_out=by_stage[3][0],
        norms=tuple(p for p, _ in norms),
        embeddings=(names[embedding],),
        final_norm=final[0],
        norm_offset=kinds == {"rms_offset"},
        embedding_scale=isinstance(getattr(embedding, "embed_scale", None), torch.Tensor),
    )
