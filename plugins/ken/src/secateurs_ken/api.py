"""One call: ``ken(pretrained, finetuned, k=...)`` → a new KEN model (inputs untouched)."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.masks import rows_topk
from secateurs_ken.parts import KenKAllocator, restore_tensor
from secateurs_ken.select import ken_select
from secateurs_ken.states import State, as_rows, check_matching, selected_names, state_of

ScoreFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]

BASELINES: dict[str, ScoreFn] = {
    "ft-magnitude": lambda ft, pre, keep, gen: ft.abs(),
    "delta-magnitude": lambda ft, pre, keep, gen: (ft - pre).abs(),
    "random": lambda ft, pre, keep, gen: torch.rand(ft.shape, generator=gen).to(ft.device),
    "dare": lambda ft, pre, keep, gen: torch.rand(ft.shape, generator=gen).to(ft.device),
}
"""The baselines at KEN's per-row k, as scores whose per-row top-k is kept (``dare`` =
``random`` + rescaled deltas). ``ken`` itself selects directly, batched by row width."""
METHODS = ("ken", *BASELINES)


def ken_state(
    pretrained: State,
    finetuned: State,
    *,
    k: int | None = None,
    fraction: float | None = None,
    reduction: float | None = None,
    targets: Sequence[str] = ("*",),
    exclude: Sequence[str] = (),
    method: str = "ken",
    seed: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """KEN over two matching state dicts: returns ``(new_state, keep_masks)``. Tensors not
    selected (or not floating point) are copied from ``finetuned``; selected ones keep
    ``min(k, width)`` fine-tuned entries per row and take the pre-trained value elsewhere."""
    if method not in METHODS:
        raise SecateursError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    check_matching(pretrained, finetuned)
    names = selected_names(finetuned, targets, exclude)
    try:
        alloc = KenKAllocator(k=k, fraction=fraction, reduction=reduction)
    except ValueError as exc:
        raise SecateursError(str(exc)) from None
    if not alloc.given():
        raise SecateursError("give exactly one of k, fraction, reduction (got none)")
    alloc.solve([tuple(as_rows(finetuned[n]).shape) for n in names])
    gen = torch.Generator().manual_seed(seed)
    restored, masks = {}, {}
    selected = _ken_by_width(finetuned, names, alloc) if method == "ken" else {}
    with torch.no_grad():
        for name in names:
            ft, pre = finetuned[name].detach(), pretrained[name].detach().to(finetuned[name].device)
            rows = as_rows(ft)
            keep = torch.full((rows.shape[0],), alloc.keep(rows.shape[1]), dtype=torch.int64)
            if name in selected:
                mask = selected[name].view_as(ft)
            else:
                mask = rows_topk(as_rows(BASELINES[method](ft, pre.to(ft.dtype), keep, gen)), keep).view_as(ft)
            restored[name] = restore_tensor(ft, pre, mask, rescale=method == "dare")
            masks[name] = mask
    return {n: restored[n] if n in restored else t.detach().clone() for n, t in finetuned.items()}, masks


def _ken_by_width(state: State, names: Sequence[str], alloc: KenKAllocator) -> dict[str, torch.Tensor]:
    """KEN masks of ``names``, one ``ken_select`` call per (row width, device) so that small
    tensors share the greedy's steps. Rows of the same width are concatenated."""
    groups: dict[tuple[int, str], list[str]] = {}
    for name in names:
        t = state[name]
        groups.setdefault((as_rows(t).shape[1], str(t.device)), []).append(name)
    out = {}
    with torch.no_grad():
        for (width, _), members in groups.items():
            rows = torch.cat([as_rows(state[n].detach()) for n in members])
            mask = ken_select(rows, alloc.keep(width))
            for name, part in zip(members, mask.split([as_rows(state[n]).shape[0] for n in members]), strict=True):
                out[name] = part
    return out


def ken(
    pretrained: nn.Module | State,
    finetuned: nn.Module | State,
    **options,
) -> nn.Module | dict[str, torch.Tensor]:
    """The KEN model of ``finetuned`` restored towards ``pretrained``: a new module (deep
    copy of ``finetuned``) or a new state dict. Neither input is modified. ``options``: see
    :func:`ken_state` (``k`` | ``fraction`` | ``reduction``, ``targets``, ``exclude``,
    ``method``, ``seed``); default targets = every floating-point tensor."""
    state, _ = ken_state(state_of(pretrained), state_of(finetuned), **options)
    if isinstance(finetuned, nn.Module):
        model = copy.deepcopy(finetuned)
        model.load_state_dict(state)
        return model
    return state
