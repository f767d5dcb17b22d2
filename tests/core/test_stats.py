"""Statistics hooks: shared inputs reduced once, forwards cut short at the last hooked
input (``stop_in``), and in every case the same statistics as complete forwards."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lm_models import tiny_causal_lm, token_batches
from secateurs import find_adapter
from secateurs.pipeline import PruneSpec, Session, capture
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel
from secateurs.stats import StatsComplete, collect_stats
from secateurs.types import Unit


class _Twice(nn.Module):
    """``b`` runs twice per forward, after ``a``; ``c`` shares ``a``'s input."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4)
        self.after = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x) + self.c(x)
        y = self.b(self.b(y))
        self.after += 1  # reached only by complete forwards
        return y


def _units(module: _Twice) -> list[Unit]:
    return [Unit(n, getattr(module, n), "weight") for n in ("a", "c", "b")]


def _reference(module: _Twice, xs: list[torch.Tensor]) -> dict:
    """Statistics of each module computed by hand from its inputs."""
    seen: dict[str, list[torch.Tensor]] = {"a": [], "b": [], "c": []}
    handles = [getattr(module, n).register_forward_pre_hook(lambda m, args, n=n: seen[n].append(args[0])) for n in seen]
    with torch.no_grad():
        for x in xs:
            module(x)
    for h in handles:
        h.remove()
    out = {}
    for name, inputs in seen.items():
        flat = torch.cat([i.reshape(-1, 4) for i in inputs])
        samples = sum(i.shape[0] for i in inputs)
        out[name] = (flat.pow(2).sum(0) / samples, flat.T @ flat * (2.0 / samples))
    return out


@pytest.mark.parametrize("stop", [False, True])
def test_shared_and_repeated_inputs_give_the_hand_computed_statistics(stop):
    module = _Twice()
    xs = [torch.randn(2, 3, 4) for _ in range(3)]
    expected = _reference(module, xs)
    module.after = 0
    with torch.no_grad(), collect_stats(_units(module), hessian=True, stop_in=module if stop else None) as col:
        for x in xs:
            module(x)  # b runs twice: no forward may be cut short
    assert module.after == 3
    for name, (sq, hessian) in expected.items():
        torch.testing.assert_close(col.stats[name].sq_norm, sq)
        torch.testing.assert_close(col.stats[name].hessian, hessian)


def test_forwards_stop_after_the_last_input_from_the_second_on():
    module = _Twice()
    units = [Unit(n, getattr(module, n), "weight") for n in ("a", "c")]  # each called once
    xs = [torch.randn(2, 3, 4) for _ in range(3)]
    expected = _reference(module, xs)
    module.after = 0
    stopped = 0
    with torch.no_grad(), collect_stats(units, stop_in=module) as col:
        for x in xs:
            try:
                module(x)
            except StatsComplete:
                stopped += 1
    assert (stopped, module.after) == (2, 1)  # the first forward runs whole: it learns the order
    for name in ("a", "c"):
        torch.testing.assert_close(col.stats[name].sq_norm, expected[name][0])


def test_an_input_modified_in_place_is_reduced_again():
    a, b = nn.Linear(3, 3), nn.Linear(3, 3)
    x = torch.randn(5, 3)
    with torch.no_grad(), collect_stats([Unit("a", a, "weight"), Unit("b", b, "weight")]) as col:
        a(x)
        x.mul_(2)
        b(x)
    torch.testing.assert_close(col.stats["b"].sq_norm, 4 * col.stats["a"].sq_norm)


def test_the_pipeline_statistics_pass_matches_complete_forwards():
    """Session.collect (cut short) gives the statistics of hooks over whole forwards."""
    model = tiny_causal_lm("llama", layers=2)
    loaded = LoadedModel(model, find_adapter(model), "tiny")
    manager = get_manager()
    spec = PruneSpec(
        scorer=manager.scorers.create("wanda"), allocator=manager.allocators.create("uniform"),
        applier=manager.appliers.create("sparsegpt"), sparsity=0.5, calibration=token_batches(3, 16), progress=False,
    )
    blocks = loaded.adapter.blocks(model)
    session = Session(loaded, spec, blocks, capture(loaded, blocks, spec.calibration))
    block = blocks[0]
    short, _ = session.collect(block, session.inputs)
    with torch.no_grad(), collect_stats(list(block.units), hessian=True) as full:
        for args, kwargs in session.inputs:
            block.module(*args, **kwargs)
    for name, stats in full.stats.items():
        torch.testing.assert_close(short[name].sq_norm, stats.sq_norm)
        torch.testing.assert_close(short[name].hessian, stats.hessian)
