"""Per-block arguments: each block runs with what the model itself gives *that* block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.block_inputs import capture_inputs
from secateurs.errors import SecateursError


class Scaled(nn.Module):
    """A block taking an extra per-call argument (like a rotary embedding or a mask)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.linear = nn.Linear(width, width)

    def forward(self, hidden: torch.Tensor, scale: torch.Tensor, *, shift: float = 0.0) -> tuple:
        return (torch.tanh(self.linear(hidden) * scale) + shift, None)


class Stack(nn.Module):
    """Blocks of two kinds (``kinds[i]``): each kind gets its own scale and shift, like
    sliding and full attention layers; ``mode = "hidden"`` derives block ``i``'s scale
    from the running hidden state instead (not reproducible block by block)."""

    def __init__(self, kinds: str = "aab", width: int = 8, mode: str = "kind") -> None:
        super().__init__()
        self.kinds, self.mode = kinds, mode
        self.blocks = nn.ModuleList(Scaled(width) for _ in kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scales = {"a": torch.full((1,), 0.5), "b": torch.full((1,), 2.0)}
        for block, kind in zip(self.blocks, self.kinds, strict=True):
            scale = x.mean().reshape(1) if self.mode == "hidden" else scales[kind]
            x = block(x, scale, shift=1.0 if kind == "b" else 0.0)[0]
        return x


def _capture(model: Stack, batches):
    return capture_inputs(lambda b: model(b), list(model.blocks), lambda out: out[0], batches)


def _own_inputs(model: Stack, x: torch.Tensor) -> list[torch.Tensor]:
    seen = []
    handles = [b.register_forward_pre_hook(lambda m, args: seen.append(args[0])) for b in model.blocks]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("kinds", ["aaa", "aab", "abab"])
def test_propagated_inputs_equal_the_models_own(kinds):
    torch.manual_seed(0)
    model = Stack(kinds)
    batches = [torch.randn(2, 5, 8) for _ in range(3)]
    inputs = _capture(model, batches)
    assert len(inputs.calls) == (1 if kinds == "aaa" else len(kinds))  # one row when shared
    for i, block in enumerate(model.blocks):
        for j, (args, kwargs) in enumerate(inputs):
            torch.testing.assert_close(args[0], _own_inputs(model, batches[j])[i], rtol=0, atol=0)
        with torch.no_grad():
            inputs = inputs.following([block(*a, **k)[0] for a, k in inputs])


def test_blocks_are_restored_after_capture():
    model = Stack("ab")
    _capture(model, [torch.randn(1, 3, 8)] * 2)
    assert all("forward" not in b.__dict__ for b in model.blocks)
    assert all(not b._forward_pre_hooks and not b._forward_hooks for b in model.blocks)


def test_arguments_derived_from_earlier_blocks_are_refused():
    model = Stack("aab", mode="hidden")
    with pytest.raises(SecateursError, match="block 1's arguments depend on what earlier blocks computed"):
        _capture(model, [torch.randn(1, 4, 8)])


def test_a_forward_that_skips_a_block_is_refused():
    model = Stack("aa")
    skipping = lambda b: model.blocks[1](b, torch.ones(1))  # noqa: E731
    with pytest.raises(SecateursError, match="does not call its blocks once each, in order"):
        capture_inputs(skipping, list(model.blocks), lambda out: out[0], [torch.randn(1, 2, 8)])
