"""One block-by-block pass over the dense model, for runs that measure every block before
changing any (``secateurs.depth``, ``secateurs.width``).

Memory stays at one block boundary of calibration activations (inputs and outputs) plus one
block's working set, as in ``secateurs.pipeline``; offloaded blocks are materialised one at
a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from tqdm.auto import tqdm

from secateurs.block_inputs import Inputs, capture_inputs
from secateurs.offload import materialized
from secateurs.protocols import LoadedModel
from secateurs.types import Block


def dense_pass(
    loaded: LoadedModel,
    blocks: Sequence[Block],
    calibration: Sequence[Any] | None,
    *,
    desc: str,
    progress: bool = True,
    around: Callable[[Block], AbstractContextManager[Any]] | None = None,
) -> Iterator[tuple[Block, Inputs, list[torch.Tensor]]]:
    """Each block with its dense calibration inputs and the outputs it gives them, in order.

    Block 0's inputs are captured from ``calibration`` (none: every block gets empty
    inputs); block ``i`` runs inside ``around(block)`` (hooks that watch it) and on the
    outputs of block ``i - 1``. The caller's code between steps runs while the block is
    materialised, with nothing changed; call under ``torch.no_grad()``.
    """
    adapter = loaded.adapter
    inputs = Inputs()
    if calibration:
        modules = [b.module for b in blocks]
        inputs = capture_inputs(lambda batch: adapter.forward(loaded.model, batch), modules, adapter.block_output,
                                calibration)
    for block in tqdm(blocks, desc=desc, unit="block", disable=not progress):
        with materialized(block.module, writeback=False):
            with around(block) if around is not None else nullcontext():
                outputs = [adapter.block_output(block.module(*args, **kwargs)) for args, kwargs in inputs]
            yield block, inputs, outputs
        inputs = inputs.following(outputs)
