"""The search subset of a calibration set: its first samples, cut to at most ``seqlen`` tokens."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from secateurs.errors import SecateursError


def _tensors(batch: Any) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    if isinstance(batch, Mapping):
        return [v for v in batch.values() if isinstance(v, torch.Tensor)]
    raise SecateursError(
        f"neuroal takes its search samples from calibration batches that are tensors or "
        f"mappings of tensors; got a {type(batch).__name__}"
    )


def _cut(value: Any, take: int, seqlen: int | None) -> Any:
    if isinstance(value, Mapping):
        return {k: _cut(v, take, seqlen) for k, v in value.items()}
    if not isinstance(value, torch.Tensor) or value.dim() == 0:
        return value
    value = value[:take]
    if seqlen is not None and value.dim() >= 2:
        value = value[:, :seqlen]  # shorter samples stay whole
    return value


def search_batches(batches: Sequence[Any], nsamples: int, seqlen: int | None = None) -> tuple[list[Any], int]:
    """The first ``nsamples`` samples of ``batches`` (fewer if there are fewer), each cut to
    at most its first ``seqlen`` positions along dimension 1 (token batches; ``None``: whole
    samples); returns the batches
    and the number of samples they hold."""
    out: list[Any] = []
    taken = 0
    for batch in batches:
        if taken >= nsamples:
            break
        tensors = _tensors(batch)
        if not tensors or tensors[0].dim() == 0:
            raise SecateursError("neuroal: a calibration batch holds no batched tensor to take samples from")
        take = min(int(tensors[0].shape[0]), nsamples - taken)
        out.append(_cut(batch, take, seqlen))
        taken += take
    return out, taken
