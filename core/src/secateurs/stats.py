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
    def __init__(self, module: nn.Module, hessian: bool, name: str) -> None:
        self.module, self.want_hessian, self.name = module, hessian, name
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


class StatsCollection:
    """Statistics gathered by ``collect_stats``; ``stats`` is filled when the block exits."""

    def __init__(self) -> None:
        self.stats: dict[str, InputStats] = {}


@contextmanager
def collect_stats(units: Sequence[Unit], *, hessian: bool = False) -> Iterator[StatsCollection]:
    """Hook the modules of ``units``; on exit, ``collection.stats[unit.name]`` holds their
    input statistics (units sharing a module share one accumulator)."""
    accumulators: dict[int, _Accumulator] = {}
    handles = []
    for unit in units:
        key = id(unit.module)
        if key not in accumulators:
            acc = accumulators[key] = _Accumulator(unit.module, hessian, unit.name)
            handles.append(unit.module.register_forward_hook(acc))
    collection = StatsCollection()
    try:
        yield collection
    finally:
        for handle in handles:
            handle.remove()
    collection.stats = {unit.name: accumulators[id(unit.module)].result() for unit in units}
