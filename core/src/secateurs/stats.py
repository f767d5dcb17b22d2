"""Input statistics of units, collected with forward hooks while a block runs.

``collect_stats(units, hessian=...)`` is a context manager: inside it, every forward of a
unit's module adds the module's input to running sums; on exit the hooks are removed
and ``InputStats`` are available per unit name. Linear inputs ``[..., in]`` count one
sample per leading batch entry (a ``[B, L, in]`` input is ``B`` samples of ``L`` tokens);
Conv2d inputs ``[B, C, H, W]`` give per-channel statistics over ``B * H * W`` positions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.types import InputStats, Unit


class _Accumulator:
    def __init__(self, hessian: bool, name: str) -> None:
        self.want_hessian, self.name = hessian, name
        self.sum_sq: torch.Tensor | None = None
        self.sum_xxt: torch.Tensor | None = None
        self.nsamples = 0
        self.ntokens = 0

    def __call__(self, module: nn.Module, args: tuple, output: object) -> None:
        x = args[0].detach()
        if isinstance(module, nn.Conv2d):
            samples = x.shape[0]
            flat = x.transpose(0, 1).reshape(x.shape[1], -1).T.float()  # [B*H*W, C]
            if self.want_hessian:
                raise SecateursError(f"{self.name}: Hessian statistics are only defined for Linear layers")
        else:
            samples = x.shape[0] if x.dim() > 2 else 1
            flat = x.reshape(-1, x.shape[-1]).float()
        sq = flat.pow(2).sum(0)
        self.sum_sq = sq if self.sum_sq is None else self.sum_sq + sq
        if self.want_hessian:
            xxt = flat.T @ flat
            self.sum_xxt = xxt if self.sum_xxt is None else self.sum_xxt.add_(xxt)
        self.nsamples += samples
        self.ntokens += flat.shape[0]

    def result(self) -> InputStats:
        if self.sum_sq is None:
            raise SecateursError(f"{self.name} saw no input during calibration (is it used by the forward?)")
        n = max(self.nsamples, 1)
        hessian = None if self.sum_xxt is None else self.sum_xxt.mul_(2.0 / n)
        return InputStats(self.sum_sq / n, self.nsamples, self.ntokens, hessian)


class _Splitter:
    """Feeds equal leading-dimension chunks of a module's input to one accumulator each
    (several input streams concatenated along the batch dimension, stream-major)."""

    def __init__(self, accumulators: list[_Accumulator]) -> None:
        self.accumulators = accumulators

    def __call__(self, module: nn.Module, args: tuple, output: object) -> None:
        x, n = args[0], len(self.accumulators)
        if x.dim() < 2 or x.shape[0] % n:
            raise SecateursError(
                f"{self.accumulators[0].name}: input of shape {tuple(x.shape)} cannot be split "
                f"into {n} streams along its batch dimension"
            )
        for acc, chunk in zip(self.accumulators, x.chunk(n), strict=True):
            acc(module, (chunk,), output)


class StatsCollection:
    """Statistics gathered by ``collect_stats``; ``stats`` is filled when the block exits
    (``split_stats``: one such dict per stream when ``splits > 1``; ``stats`` is the first)."""

    def __init__(self) -> None:
        self.stats: dict[str, InputStats] = {}
        self.split_stats: list[dict[str, InputStats]] = []


@contextmanager
def collect_stats(units: Sequence[Unit], *, hessian: bool = False, splits: int = 1) -> Iterator[StatsCollection]:
    """Hook the modules of ``units``; on exit, ``collection.stats[unit.name]`` holds their
    input statistics (units sharing a module share one accumulator).

    ``splits > 1``: the block runs on ``splits`` streams concatenated along the batch
    dimension (stream-major, equal sizes); ``collection.split_stats[k]`` holds stream
    ``k``'s statistics, as if it had run alone.
    """
    accumulators: dict[int, list[_Accumulator]] = {}
    handles = []
    for unit in units:
        key = id(unit.module)
        if key not in accumulators:
            accs = accumulators[key] = [_Accumulator(hessian, unit.name) for _ in range(splits)]
            handles.append(unit.module.register_forward_hook(accs[0] if splits == 1 else _Splitter(accs)))
    collection = StatsCollection()
    try:
        yield collection
    finally:
        for handle in handles:
            handle.remove()
    results = {key: [acc.result() for acc in accs] for key, accs in accumulators.items()}  # once each: result() scales in place
    collection.split_stats = [{unit.name: results[id(unit.module)][k] for unit in units} for k in range(splits)]
    collection.stats = collection.split_stats[0]
