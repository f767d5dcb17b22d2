"""Input statistics of units, collected with forward hooks while a block runs.

``collect_stats(units, hessian=...)`` is a context manager: inside it, every forward of a
unit's module adds the module's input to running sums; on exit the hooks are removed
and ``InputStats`` are available per unit name. Linear inputs ``[..., in]`` count one
sample per leading batch entry (a ``[B, L, in]`` input is ``B`` samples of ``L`` tokens);
Conv2d inputs ``[B, C, H, W]`` give per-channel statistics over ``B * H * W`` positions.
Modules that receive the very same input tensor in one forward (q/k/v, gate/up) share
the work of reducing it.

``stop_in=block`` additionally cuts each of the block's forwards short, by raising
``StatsComplete``, once every hooked module has seen its input: the caller, who needs no
output of such a forward, catches it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.types import InputStats, Unit


class StatsComplete(Exception):  # noqa: N818 - a signal, not an error
    """Raised inside a block's forward by ``collect_stats(stop_in=...)`` once every hooked
    module has seen its input; the block's output was not computed."""


class _Reductions:
    """The reductions of the last input seen (``sum x²`` per feature, ``Σ x xᵀ``), and its
    split into streams, reused while the same, unmodified tensor reaches another module."""

    def __init__(self) -> None:
        self._last: tuple[torch.Tensor, int, bool, bool] | None = None
        self._value: tuple[torch.Tensor, torch.Tensor | None, int, int] | None = None
        self._split: tuple[torch.Tensor, int, int, tuple[torch.Tensor, ...]] | None = None

    def of(self, module: nn.Module, x: torch.Tensor, hessian: bool, name: str):
        """``(sum_sq, xxt or None, samples, tokens)`` of ``module``'s input ``x``."""
        conv = isinstance(module, nn.Conv2d)
        version = _version(x)
        if self._last is not None and self._last[0] is x and version is not None and self._last[1:] == (version, conv, hessian):
            return self._value
        data = x.detach()
        if conv:
            if hessian:
                raise SecateursError(f"{name}: Hessian statistics are only defined for Linear layers")
            samples = data.shape[0]
            flat = data.transpose(0, 1).reshape(data.shape[1], -1).T.float()  # [B*H*W, C]
        else:
            samples = data.shape[0] if data.dim() > 2 else 1
            flat = data.reshape(-1, data.shape[-1]).float()
        xxt = flat.T @ flat if hessian else None
        self._last, self._value = (x, version, conv, hessian), (flat.pow(2).sum(0), xxt, samples, flat.shape[0])
        return self._value

    def chunks(self, x: torch.Tensor, n: int) -> tuple[torch.Tensor, ...]:
        """``x.chunk(n)``, the same chunk objects for the same unmodified ``x``."""
        version = _version(x)
        if self._split is None or self._split[0] is not x or version is None or self._split[1:3] != (version, n):
            self._split = (x, version, n, x.chunk(n))
        return self._split[3]

    def clear(self) -> None:
        self._last = self._value = self._split = None


def _version(x: torch.Tensor) -> int | None:
    """``x``'s in-place version counter (``None`` for inference tensors, which have none)."""
    return None if x.is_inference() else x._version


class _Accumulator:
    def __init__(self, hessian: bool, name: str, reductions: _Reductions) -> None:
        self.want_hessian, self.name, self.reductions = hessian, name, reductions
        self.sum_sq: torch.Tensor | None = None
        self.sum_xxt: torch.Tensor | None = None
        self.nsamples = 0
        self.ntokens = 0

    def __call__(self, module: nn.Module, args: tuple) -> None:
        sq, xxt, samples, tokens = self.reductions.of(module, args[0], self.want_hessian, self.name)
        self.sum_sq = sq.clone() if self.sum_sq is None else self.sum_sq.add_(sq)
        if self.want_hessian:
            self.sum_xxt = xxt.clone() if self.sum_xxt is None else self.sum_xxt.add_(xxt)
        self.nsamples += samples
        self.ntokens += tokens

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

    def __call__(self, module: nn.Module, args: tuple) -> None:
        x, n = args[0], len(self.accumulators)
        if x.dim() < 2 or x.shape[0] % n:
            raise SecateursError(
                f"{self.accumulators[0].name}: input of shape {tuple(x.shape)} cannot be split "
                f"into {n} streams along its batch dimension"
            )
        for acc, chunk in zip(self.accumulators, self.accumulators[0].reductions.chunks(x, n), strict=True):
            acc(module, (chunk,))


class _Stopper:
    """Raises ``StatsComplete`` at the last hooked module of a block's forward, when its
    first forward called every hooked module exactly once (so the order is known) and the
    current forward has called every one of them."""

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = {id(m) for m in modules}
        self.first: list[int] | None = None  # call order on the first forward
        self.calls: list[int] = []
        self.last: int | None = None

    def start(self, block: nn.Module, args: tuple) -> None:
        if self.first is None and self.calls:  # the first forward ended: is the order usable?
            self.first = list(self.calls)
            if sorted(self.first) == sorted(self.modules) and len(self.first) == len(self.modules):
                self.last = self.first[-1]
        self.calls = []

    def called(self, module: nn.Module) -> None:
        self.calls.append(id(module))
        if id(module) == self.last and len(self.calls) == len(self.modules) and set(self.calls) == self.modules:
            raise StatsComplete


class StatsCollection:
    """Statistics gathered by ``collect_stats``; ``stats`` is filled when the block exits
    (``split_stats``: one such dict per stream when ``splits > 1``; ``stats`` is the first)."""

    def __init__(self) -> None:
        self.stats: dict[str, InputStats] = {}
        self.split_stats: list[dict[str, InputStats]] = []


@contextmanager
def collect_stats(
    units: Sequence[Unit], *, hessian: bool = False, splits: int = 1, stop_in: nn.Module | None = None
) -> Iterator[StatsCollection]:
    """Hook the modules of ``units``; on exit, ``collection.stats[unit.name]`` holds their
    input statistics (units sharing a module share one accumulator).

    ``splits > 1``: the block runs on ``splits`` streams concatenated along the batch
    dimension (stream-major, equal sizes); ``collection.split_stats[k]`` holds stream
    ``k``'s statistics, as if it had run alone. ``stop_in``: the module whose forwards run
    the units; from its second forward on, each is cut short by ``StatsComplete`` after
    the last hooked module has taken its input (module docstring). The statistics are the
    same as with complete forwards.
    """
    accumulators: dict[int, list[_Accumulator]] = {}
    reductions = _Reductions()
    modules: list[nn.Module] = []
    for unit in units:
        if id(unit.module) not in accumulators:
            accumulators[id(unit.module)] = [_Accumulator(hessian, unit.name, reductions) for _ in range(splits)]
            modules.append(unit.module)
    stopper = _Stopper(modules) if stop_in is not None else None
    handles = [] if stopper is None else [stop_in.register_forward_pre_hook(stopper.start)]
    for module in modules:
        accs = accumulators[id(module)]
        hook = accs[0] if splits == 1 else _Splitter(accs)
        handles.append(module.register_forward_pre_hook(hook if stopper is None else _then(hook, stopper.called)))
    collection = StatsCollection()
    try:
        yield collection
    finally:
        for handle in handles:
            handle.remove()
        reductions.clear()
    results = {key: [acc.result() for acc in accs] for key, accs in accumulators.items()}  # once each: result() scales in place
    collection.split_stats = [{unit.name: results[id(unit.module)][k] for unit in units} for k in range(splits)]
    collection.stats = collection.split_stats[0]


def _then(hook, after):
    """A pre-hook running ``hook`` then ``after(module)``."""

    def both(module: nn.Module, args: tuple) -> None:
        hook(module, args)
        after(module)

    return both
