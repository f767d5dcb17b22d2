"""The arguments each block is called with, captured from the model's own forward.

A block-by-block run feeds block ``i`` the hidden state that block ``i - 1`` produced
(pruned) together with the *other* arguments the model itself gives block ``i``:
rotary embeddings, attention masks, cache positions. Those may differ from layer to
layer (Gemma 2/3 and every config whose ``layer_types`` mix ``sliding_attention`` and
``full_attention`` give sliding layers a local rotary embedding and a windowed mask), so
they are captured per block, not replayed from block 0.

``capture_inputs`` runs the first batch through the real model, recording every block's
call. When every block got the same extra arguments as block 0 (most models), the other
batches are captured up to block 0 only, as before. Otherwise the blocks' forwards are
replaced by a pass-through that records its call and returns its input in the block's
output structure, and every batch is run through that cheap model; the first batch's
recorded calls must then equal the real ones, else the arguments depend on earlier
blocks' outputs and cannot be reproduced block by block: the model is refused.

Memory: the hidden states of one block boundary, plus per batch and block references to
the extra arguments (the model shares them between layers of one type: one copy each).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import attrs
import torch
from torch import nn

from secateurs.errors import SecateursError

@attrs.frozen(eq=False)
class BlockCall:
    """What the model passes one block for one batch besides the hidden state: the
    other positional and keyword arguments, and the keyword the hidden state was passed
    under (``None``: it was the first positional argument)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    hidden_key: str | None = None

    def arguments(self, hidden: torch.Tensor) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """The positional and keyword arguments of the call, with ``hidden`` in its place."""
        if self.hidden_key is None:
            return (hidden, *self.args), self.kwargs
        return self.args, {self.hidden_key: hidden, **self.kwargs}


@attrs.frozen(eq=False)
class Inputs:
    """Calibration inputs of one block: per batch, the hidden state entering block
    ``index`` and the call table of the capture they come from.

    ``calls[b][j]`` is block ``b``'s call for batch ``j``; a table with one row serves
    every block (the model gave them all the same arguments). Iterating yields, per
    batch, the positional and keyword arguments block ``index`` is called with (as the
    model calls it: ``block(*args, **kwargs)``).
    """

    hidden: tuple[torch.Tensor, ...] = ()
    calls: tuple[tuple[BlockCall, ...], ...] = ()
    index: int = 0

    def __len__(self) -> int:
        return len(self.hidden)

    def __iter__(self) -> Iterator[tuple[tuple[Any, ...], dict[str, Any]]]:
        for h, call in zip(self.hidden, self.block_calls(), strict=True):
            yield call.arguments(h)

    def block_calls(self) -> tuple[BlockCall, ...]:
        """Block ``index``'s call for every batch."""
        if not self.hidden:
            return ()
        return self.calls[0 if len(self.calls) == 1 else self.index]

    def following(self, hidden: Sequence[torch.Tensor]) -> Inputs:
        """The next block's inputs: ``hidden`` (this block's outputs, per batch)."""
        return Inputs(tuple(hidden), self.calls, self.index + 1)

    def shares_calls(self, other: Inputs) -> bool:
        """Whether ``other`` enters the same block with the same extra arguments and
        hidden-state shapes (streams derived from one capture)."""
        return (
            other.calls is self.calls
            and other.index == self.index
            and len(other) == len(self)
            and all(a.shape == b.shape for a, b in zip(other.hidden, self.hidden, strict=True))
        )


class _Stop(Exception):
    """Raised once the recorded calls of a batch are complete."""


def capture_inputs(
    forward: Callable[[Any], Any],
    modules: Sequence[nn.Module],
    block_output: Callable[[Any], torch.Tensor],
    batches: Iterable[Any],
) -> Inputs:
    """Block 0's inputs for every batch, with every block's own extra arguments.

    ``forward(batch)`` runs the model; ``modules`` are the blocks' modules in order;
    ``block_output`` extracts a block's hidden state from its output. Raises
    ``SecateursError`` when the model's forward never calls its blocks in order or when
    the blocks' arguments cannot be reproduced block by block.
    """
    batches = list(batches)
    if not batches:
        return Inputs()
    real, templates = _real_calls(forward, modules, block_output, batches[0])
    hidden0, calls0 = real[0]
    if all(_same_call(call, calls0) for _, call in real[1:]):
        rest = [_record(forward, modules[:1], batch, None)[0] for batch in batches[1:]]
        hidden = (hidden0, *(h for h, _ in rest))
        return Inputs(hidden, ((calls0, *(c for _, c in rest)),))
    recorded = [_record(forward, modules, batch, templates) for batch in batches]
    for i, ((_, want), (_, got)) in enumerate(zip(real, recorded[0], strict=True)):
        if not _same_call(want, got):
            raise SecateursError(
                f"block {i}'s arguments depend on what earlier blocks computed, so they cannot "
                "be reproduced when running block by block; this model is not supported "
                "(please report it with its config)"
            )
    hidden = tuple(calls[0][0] for calls in recorded)
    table = tuple(tuple(calls[b][1] for calls in recorded) for b in range(len(modules)))
    return Inputs(hidden, table)


def _split(module_name: str, args: tuple, kwargs: dict) -> tuple[torch.Tensor, BlockCall]:
    """A block call's hidden state (its first positional argument, else its first keyword
    argument) and the rest."""
    if args:
        hidden, call = args[0], BlockCall(tuple(args[1:]), dict(kwargs))
    elif kwargs:
        key = next(iter(kwargs))
        hidden, call = kwargs[key], BlockCall((), {k: v for k, v in kwargs.items() if k != key}, key)
    else:
        raise SecateursError(f"block {module_name} was called without arguments")
    if not isinstance(hidden, torch.Tensor):
        raise SecateursError(f"block {module_name}'s first argument is a {type(hidden).__name__}, not a hidden-state tensor")
    return hidden, call


def _real_calls(
    forward: Callable[[Any], Any],
    modules: Sequence[nn.Module],
    block_output: Callable[[Any], torch.Tensor],
    batch: Any,
) -> tuple[list[tuple[torch.Tensor | None, BlockCall]], list[Callable[[torch.Tensor], Any]]]:
    """Run the real model on ``batch`` up to its last block; every block's call (hidden
    state kept for block 0 only) and a template of its output (``_template``)."""
    calls: list[tuple[torch.Tensor | None, BlockCall]] = []
    outputs: list[Callable[[torch.Tensor], Any]] = []

    def before(module: nn.Module, args: tuple, kwargs: dict) -> None:
        if len(calls) != len(outputs) or module is not modules[len(calls)]:
            raise SecateursError("the model's forward does not call its blocks once each, in order")
        hidden, call = _split(str(len(calls)), args, kwargs)
        calls.append((hidden if not calls else None, call))

    def after(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        outputs.append(_template(output, block_output, len(outputs)))
        if module is modules[-1]:
            raise _Stop

    handles = [m.register_forward_pre_hook(before, with_kwargs=True) for m in modules]
    handles += [m.register_forward_hook(after, with_kwargs=True) for m in modules]
    try:
        _run_until_stop(forward, batch, len(modules))
    finally:
        for handle in handles:
            handle.remove()
    return calls, outputs


def _record(
    forward: Callable[[Any], Any],
    modules: Sequence[nn.Module],
    batch: Any,
    templates: Sequence[Callable[[torch.Tensor], Any]] | None,
) -> list[tuple[torch.Tensor, BlockCall]]:
    """Every call of ``modules`` on ``batch`` with the blocks replaced by pass-throughs
    (``templates[i]`` builds block ``i``'s output from its input); the run stops at the
    last of ``modules``, before any of its work."""
    calls: list[tuple[torch.Tensor, BlockCall]] = []

    def stub(i: int) -> Callable[..., Any]:
        def passthrough(*args: Any, **kwargs: Any) -> Any:
            if len(calls) != i:
                raise SecateursError("the model's forward does not call its blocks once each, in order")
            hidden, call = _split(str(i), args, kwargs)
            calls.append((hidden, call))
            if i == len(modules) - 1:
                raise _Stop
            return templates[i](hidden)

        return passthrough

    with _replaced_forwards(modules, [stub(i) for i in range(len(modules))]):
        _run_until_stop(forward, batch, len(modules))
    return calls


@contextmanager
def _replaced_forwards(modules: Sequence[nn.Module], forwards: Sequence[Callable[..., Any]]) -> Iterator[None]:
    """Give each module an instance ``forward`` (offloading wrappers included: the
    pass-through reads no weights); the previous instance attribute is restored."""
    saved = [m.__dict__.get("forward") for m in modules]
    try:
        for module, fn in zip(modules, forwards, strict=True):
            module.forward = fn
        yield
    finally:
        for module, old in zip(modules, saved, strict=True):
            if old is None:
                del module.forward
            else:
                module.forward = old


def _run_until_stop(forward: Callable[[Any], Any], batch: Any, n_blocks: int) -> None:
    """Run ``forward(batch)``; it must stop (``_Stop``) in block ``n_blocks - 1``."""
    with torch.no_grad():
        try:
            forward(batch)
        except _Stop:
            return
    raise SecateursError(f"the model's forward never called its block {n_blocks - 1}")


def _template(output: Any, block_output: Callable[[Any], torch.Tensor], index: int) -> Callable[[torch.Tensor], Any]:
    """A function building an output of the structure of ``output`` around a hidden state
    (one that raises ``SecateursError`` for structures it cannot rebuild)."""
    hidden = block_output(output)
    if output is hidden:
        return lambda h: h
    if isinstance(output, tuple | list) and any(x is hidden for x in output):
        rest = [None if x is hidden else x for x in output]
        slot = next(k for k, x in enumerate(output) if x is hidden)
        kind = type(output)
        return lambda h: kind(h if k == slot else x for k, x in enumerate(rest))
    def unsupported(h: torch.Tensor) -> Any:
        raise SecateursError(
            f"block {index} returns a {type(output).__name__}, whose hidden state secateurs cannot "
            "replace to capture the next blocks' per-layer arguments"
        )

    return unsupported


def _same_call(a: BlockCall, b: BlockCall) -> bool:
    return a.hidden_key == b.hidden_key and _same(a.args, b.args) and _same(a.kwargs, b.kwargs)


def _same(a: Any, b: Any) -> bool:
    """Deep equality of call arguments (tensors: same shape, dtype, device and values)."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (
            isinstance(a, torch.Tensor)
            and isinstance(b, torch.Tensor)
            and a.shape == b.shape
            and a.dtype == b.dtype
            and a.device == b.device
            and bool(torch.equal(a, b))
        )
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    try:
        return bool(a == b)
    except Exception:  # objects without a usable equality: equal only when identical
        return False
