"""The adapter invariant, for adapter authors.

``propagation_error(loaded, batches)``: the propagation invariant every adapter must
satisfy — with nothing pruned, the hidden state the pipeline feeds block ``i`` equals the
model's own hidden state entering block ``i``. Use it in your adapter's tests::

    from secateurs.testing import propagation_error
    assert propagation_error(loaded, batches) < 1e-5
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from secateurs.pipeline import prune_model
from secateurs.protocols import LoadedModel
from secateurs.testing.checks import quiet_spec


def _hidden(args: tuple, kwargs: dict) -> torch.Tensor:
    """A block call's hidden state: its first positional, else first keyword argument."""
    return (args[0] if args else next(iter(kwargs.values()))).detach().clone()


def _recording(modules: Sequence[nn.Module], run: Callable[[], Any]) -> list[list[torch.Tensor]]:
    """Per module, the hidden state of every call it got while ``run()`` ran."""
    seen: list[list[torch.Tensor]] = [[] for _ in modules]

    def hook(i: int):
        return lambda module, args, kwargs: seen[i].append(_hidden(args, kwargs))

    handles = [m.register_forward_pre_hook(hook(i), with_kwargs=True) for i, m in enumerate(modules)]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return seen


def pipeline_block_inputs(loaded: LoadedModel, batches: Sequence[Any]) -> list[list[torch.Tensor]]:
    """``[block][batch]``: the hidden states the pipeline feeds each block while pruning
    at sparsity 0 with Wanda (its last pass over the batches; capture's calls precede it)."""
    blocks = loaded.adapter.blocks(loaded.model)
    spec = quiet_spec("zero", scorer="wanda", sparsity=0.0, calibration=batches)
    seen = _recording([b.module for b in blocks], lambda: prune_model(loaded, spec, blocks))
    return [calls[-len(batches) :] for calls in seen]


def model_block_inputs(loaded: LoadedModel, batch: Any) -> list[torch.Tensor]:
    """The hidden state entering every block in the model's own forward on ``batch``."""
    blocks = loaded.adapter.blocks(loaded.model)

    def run() -> None:
        with torch.no_grad():
            loaded.adapter.forward(loaded.model, batch)

    return [calls[0] for calls in _recording([b.module for b in blocks], run)]


def propagation_error(loaded: LoadedModel, batches: Sequence[Any]) -> float:
    """The largest relative difference, over blocks and batches, between the hidden state
    the pipeline feeds a block and the model's own (0 when the adapter is exact)."""
    fed = pipeline_block_inputs(loaded, batches)
    worst = 0.0
    for j, batch in enumerate(batches):
        for i, own in enumerate(model_block_inputs(loaded, batch)):
            diff = (fed[i][j].float() - own.float()).abs().max()
            worst = max(worst, float(diff / own.float().abs().max().clamp_min(1e-12)))
    return worst
