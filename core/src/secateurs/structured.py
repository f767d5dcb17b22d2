"""Structured components: views of a group's coupled slices, zeroing and removing components.

A ``Group`` of ``size`` components owns, in each coupled ``ParamSlice``, the entries
``[start + c * width, start + (c + 1) * width)`` along ``slice.dim`` for component ``c``
(``width = slice.span // size``).

Removal API (used by the ``remove`` applier and by adapters)::

    touched = remove_components([(group, keep), ...])   # keep: bool [group.size]

slices every coupled tensor in place (several slices of one tensor, such as a fused query/key/value
weight, are cut together), then rewrites the size attributes of the touched modules (``sync_sizes``: ``nn.Linear``,
``nn.Conv*``, ``nn.Embedding``, norms, and every module type an adapter registers with
``register_size_sync``).
Modules keep their identity (their parameters are replaced, not the modules), so every
``Unit``/``Group``/hook that refers to them stays valid; architecture attributes beyond
these (head counts, configs) are the adapter's job (``Adapter.resized``).

Companions: cutting a Linear/Conv weight along its output dimension also cuts its bias,
and cutting any per-feature tensor of a norm layer cuts all of them (weight, bias,
running statistics), whether or not the group lists them; ``zero_components`` zeroes
the same companions, so zeroing and removing a component give the same outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import attrs
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.types import Group, InputStats, ParamSlice, Unit

_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
_CONVS = nn.modules.conv._ConvNd


def slice_width(group: Group, s: ParamSlice) -> int:
    """Entries one component owns along ``s.dim`` of the slice."""
    span = s.span
    if span % group.size:
        raise SecateursError(
            f"group {group.name!r}: {s.param} has {span} entries along dim {s.dim}, "
            f"not a multiple of its {group.size} components"
        )
    return span // group.size


def _span_tensor(s: ParamSlice) -> torch.Tensor:
    return getattr(s.module, s.param).detach().narrow(s.dim, s.start, s.span)


def component_view(group: Group, s: ParamSlice) -> torch.Tensor:
    """The slice's entries as ``[size, -1]``: one row per component (detached)."""
    width = slice_width(group, s)
    moved = _span_tensor(s).movedim(s.dim, 0)
    return moved.reshape(group.size, width * moved[0].numel())


def entry_mask(group: Group, s: ParamSlice, keep: torch.Tensor) -> torch.Tensor:
    """Bool mask over the slice's ``span`` entries along ``slice.dim`` from a per-component ``keep``."""
    return keep.to(torch.bool).repeat_interleave(slice_width(group, s))


def reading_slice(group: Group, units: Iterable[Unit]) -> tuple[Unit, ParamSlice] | None:
    """The group's *reading unit* (the unit whose module reads the group's components as
    input features: ``o_proj`` for heads, ``down_proj`` for neurons, the next conv for
    channels) and the group's slice of it; ``None`` when no unit of ``units`` is one.

    The slice lies along the unit's input dimension: dim 1 of a ``nn.Linear``/conv weight,
    dim 0 of a ``transposed`` unit's stored parameter (``Conv1D``). Grouped convolutions are
    skipped: their weight's input dimension holds one group's channels, not the input's.
    """
    by_tensor = {(id(u.module), u.param): u for u in units}
    for s in group.slices:
        unit = by_tensor.get((id(s.module), s.param))
        if unit is None or getattr(unit.module, "groups", 1) != 1:
            continue
        if unit.parameter.dim() >= 2 and s.dim == (0 if unit.transposed else 1):
            return unit, s
    return None


def reading_stats(group: Group, units: Iterable[Unit], stats: Mapping[str, InputStats]) -> InputStats | None:
    """The input statistics of the group's reading unit (``reading_slice``) restricted to
    the group's span of its input features (``sq_norm[start:start + span]``, and the
    Hessian's ``[span, span]`` block when collected): ``group.size * width`` entries,
    component ``c`` owning the ``c``-th ``width`` of them. ``None`` when the group has no
    reading unit among ``units`` or ``stats`` holds none for it (a data-free run)."""
    found = reading_slice(group, units)
    if found is None or found[0].name not in stats:
        return None
    unit, s = found
    full = stats[unit.name]
    end = s.start + s.span
    hessian = None if full.hessian is None else full.hessian[s.start : end, s.start : end]
    return InputStats(full.sq_norm[s.start : end], full.nsamples, full.ntokens, hessian)


def coupled_slices(group: Group) -> list[ParamSlice]:
    """The group's slices plus their companions (bias of a cut output dimension, every
    per-feature tensor of a cut norm layer), without duplicates."""
    out: list[ParamSlice] = []
    seen: set[tuple[int, str, int, int]] = set()

    def add(s: ParamSlice) -> None:
        key = (id(s.module), s.param, s.dim, s.start)
        if key not in seen:
            seen.add(key)
            out.append(s)

    for s in group.slices:
        add(s)
        for name in _companions(s):
            add(ParamSlice(s.module, name, 0, s.start, s.span))
    return out


def _companions(s: ParamSlice) -> list[str]:
    module = s.module
    if isinstance(module, _NORMS) and s.dim == 0:
        names = [n for n, _ in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]]
        full = getattr(module, s.param).shape[0]
        return [n for n in names if n != s.param and getattr(module, n).shape == (full,)]
    if isinstance(module, nn.Linear | _CONVS) and s.param == "weight" and s.dim == 0 and module.bias is not None:
        return ["bias"]
    return []


@attrs.frozen
class _Span:
    """Where one group's components lie in one parameter tensor (measured before pruning)."""

    key: tuple[int, str]
    shape: tuple[int, ...]
    dim: int
    start: int
    width: int


def entry_layout(groups: Sequence[Group]) -> list[list[_Span]]:
    """Per group, the parameter spans its components own (coupled slices and
    companions), taken from the current shapes: call before anything is removed."""
    layout = []
    for group in groups:
        spans = []
        for s in coupled_slices(group):
            tensor = getattr(s.module, s.param)
            if isinstance(tensor, nn.Parameter):
                spans.append(_Span((id(s.module), s.param), tuple(tensor.shape), s.dim, s.start, s.span // group.size))
        layout.append(spans)
    return layout


def removed_entries(layout: Sequence[Sequence[_Span]], keeps: Sequence[torch.Tensor]) -> int:
    """Parameter entries removed when group ``g`` keeps ``keeps[g]`` (bool ``[size]``),
    each entry counted once: an entry of a tensor cut along several dimensions (a conv
    weight losing output channels to one group and input channels to the next) is
    removed when any of its indices is."""
    removed: dict[tuple[int, str], tuple[tuple[int, ...], dict[int, torch.Tensor]]] = {}
    for spans, keep in zip(layout, keeps, strict=True):
        gone = ~keep.detach().cpu().bool()
        for span in spans:
            shape, dims = removed.setdefault(span.key, (span.shape, {}))
            marks = dims.setdefault(span.dim, torch.zeros(shape[span.dim], dtype=torch.bool))
            marks[span.start : span.start + gone.numel() * span.width] |= gone.repeat_interleave(span.width)
    total = 0
    for shape, dims in removed.values():
        kept = math.prod(n - int(dims[d].sum()) if d in dims else n for d, n in enumerate(shape))
        total += math.prod(shape) - kept
    return total


def zero_components(group: Group, keep: torch.Tensor) -> None:
    """Set every coupled entry (and companion) of the components not in ``keep`` (bool
    ``[size]``) to zero."""
    with torch.no_grad():
        for s in coupled_slices(group):
            param = getattr(s.module, s.param)
            if not param.is_floating_point():
                continue
            mask = entry_mask(group, s, keep.to(param.device))
            shape = [1] * param.dim()
            shape[s.dim] = -1
            param.narrow(s.dim, s.start, s.span).mul_(mask.view(shape).to(param.dtype))


def remove_components(removals: Iterable[tuple[Group, torch.Tensor]]) -> list[nn.Module]:
    """Physically remove the components not kept (``keep``: bool ``[group.size]``, at
    least one ``True``) of every group, in place; return the modules whose tensors changed.

    All groups are indexed against the current shapes before anything is cut, so pass
    every group of one removal together. Size attributes of standard modules are synced.
    """
    cuts: dict[tuple[int, str], tuple[nn.Module, str, dict[int, torch.Tensor]]] = {}
    for group, keep in removals:
        keep = keep.to(torch.bool).cpu()
        if keep.shape != (group.size,):
            raise SecateursError(f"group {group.name!r}: keep has shape {tuple(keep.shape)}, expected ({group.size},)")
        if not keep.any():
            raise SecateursError(f"group {group.name!r}: cannot remove every component; keep at least one")
        for s in coupled_slices(group):
            tensor = getattr(s.module, s.param)
            _, _, dims = cuts.setdefault((id(s.module), s.param), (s.module, s.param, {}))
            full = dims.setdefault(s.dim, torch.ones(tensor.shape[s.dim], dtype=torch.bool))
            full[s.start : s.start + s.span] &= entry_mask(group, s, keep)
    touched: dict[int, nn.Module] = {}
    with torch.no_grad():
        for module, param, dims in cuts.values():
            tensor = getattr(module, param)
            new = tensor.detach()
            for dim, kept in dims.items():
                new = new.index_select(dim, kept.nonzero().view(-1).to(new.device))
            _set_tensor(module, param, new.contiguous())
            touched[id(module)] = module
    modules = list(touched.values())
    for module in modules:
        sync_sizes(module)
    return modules


def _set_tensor(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value, requires_grad=old.requires_grad))
    else:
        setattr(module, name, value)


def resize_tensor(module: nn.Module, name: str, shape: Sequence[int]) -> None:
    """Replace ``module.<name>`` by an uninitialised tensor of ``shape`` (same dtype,
    device, parameter-ness), for loaders that then fill it from a checkpoint."""
    old = getattr(module, name)
    if tuple(old.shape) != tuple(shape):
        _set_tensor(module, name, torch.empty(tuple(shape), dtype=old.dtype, device=old.device))


SizeSync = Callable[[nn.Module], None]
"""Rewrites a module's size attributes from its tensors, in place (idempotent)."""
_SIZE_SYNCS: dict[type, SizeSync] = {}


def register_size_sync(module_type: type, sync: SizeSync) -> None:
    """Make ``sync_sizes`` call ``sync`` for modules of ``module_type`` (and its subclasses,
    unless a subclass has its own): how an adapter teaches removal the size attributes of
    its architecture's own module types (``Conv1D.nf``, a router's ``hidden_dim``...).
    Registering a type again replaces its sync."""
    _SIZE_SYNCS[module_type] = sync


def sync_sizes(module: nn.Module) -> None:
    """Rewrite the size attributes of ``module`` from its tensors (idempotent), with the
    sync registered for the nearest type in its MRO (``register_size_sync``); modules of
    no registered type are left alone.

    Built in: ``nn.Linear`` (``in/out_features``), ``nn.Conv*`` (``in/out_channels``; a
    depthwise conv stays depthwise), ``nn.Embedding`` (``embedding_dim``), norms
    (``num_features`` / ``normalized_shape`` / ``num_channels``).
    """
    for cls in type(module).__mro__:
        sync = _SIZE_SYNCS.get(cls)
        if sync is not None:
            sync(module)
            return


def _sync_linear(module: nn.Linear) -> None:
    module.out_features, module.in_features = module.weight.shape


def _sync_conv(module: nn.modules.conv._ConvNd) -> None:
    out, per_group = module.weight.shape[:2]
    if module.transposed:
        raise SecateursError("removing channels of transposed convolutions is not supported")
    depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
    if depthwise:
        module.groups = out
    elif module.groups > 1 and out != module.out_channels:
        raise SecateursError("removing channels of grouped (non-depthwise) convolutions is not supported")
    module.out_channels, module.in_channels = out, per_group * module.groups


def _sync_batch_norm(module: nn.modules.batchnorm._NormBase) -> None:
    ref = module.weight if module.weight is not None else module.running_mean
    if ref is not None:
        module.num_features = ref.shape[0]


def _sync_layer_norm(module: nn.LayerNorm) -> None:
    if module.weight is not None:
        module.normalized_shape = tuple(module.weight.shape)


def _sync_group_norm(module: nn.GroupNorm) -> None:
    if module.weight is not None:
        module.num_channels = module.weight.shape[0]


def _sync_embedding(module: nn.Embedding) -> None:
    module.num_embeddings, module.embedding_dim = module.weight.shape


for _type, _sync in (
    (nn.Linear, _sync_linear),
    (_CONVS, _sync_conv),
    (nn.modules.batchnorm._NormBase, _sync_batch_norm),
    (nn.LayerNorm, _sync_layer_norm),
    (nn.GroupNorm, _sync_group_norm),
    (nn.Embedding, _sync_embedding),
):
    register_size_sync(_type, _sync)
