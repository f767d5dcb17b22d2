"""A group's reading unit (``structured.reading_slice``), the statistics its scorer gets
(``reading_stats``: the reading unit's inputs over the group's span), and the
``activation`` scorer's formula, refusals and run on the core's tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from secateurs.builtins.scorers import ActivationScorer
from secateurs.errors import SecateursError
from secateurs.pipeline import dense_scores, prune_model
from secateurs.protocols import ScoreContext
from secateurs.structured import reading_slice, reading_stats
from secateurs.testing import GaussianBatches, quiet_spec, tiny_model
from secateurs.types import Group, InputStats, ParamSlice, Unit


def _mlp() -> tuple[nn.Linear, nn.Linear, list[Unit]]:
    up, down = nn.Linear(4, 6), nn.Linear(6, 4)
    return up, down, [Unit("up", up), Unit("down", down)]


def test_the_reading_unit_is_the_one_whose_input_dimension_the_group_spans():
    up, down, units = _mlp()
    group = Group("neurons", "neurons", 6, (ParamSlice(up, "weight", 0), ParamSlice(down, "weight", 1)))
    unit, s = reading_slice(group, units)
    assert unit is units[1] and s is group.slices[1]
    assert reading_slice(group, units[:1]) is None  # its reader is not a unit here


def test_a_transposed_unit_reads_along_dim_0_of_its_stored_parameter():
    producer, consumer = nn.Module(), nn.Module()
    producer.weight = nn.Parameter(torch.randn(4, 6))  # Conv1D layout: [in, out]
    consumer.weight = nn.Parameter(torch.randn(6, 4))
    units = [Unit("fc", producer, transposed=True), Unit("proj", consumer, transposed=True)]
    slices = (ParamSlice(producer, "weight", 1), ParamSlice(consumer, "weight", 0))
    group = Group("neurons", "neurons", 6, slices)
    assert reading_slice(group, units)[0] is units[1]


def test_grouped_convolutions_are_not_reading_units():
    conv, depthwise = nn.Conv2d(3, 4, 1), nn.Conv2d(4, 4, 3, groups=4)
    group = Group("c", "channels", 4, (ParamSlice(conv, "weight", 0), ParamSlice(depthwise, "weight", 1)))
    assert reading_slice(group, [Unit("conv", conv), Unit("dw", depthwise)]) is None


def test_reading_stats_are_the_groups_span_of_the_reading_units_inputs():
    _, down, units = _mlp()
    part = Group("part", "heads", 2, (ParamSlice(down, "weight", 1, start=2, length=4),))
    full = InputStats(torch.arange(6.0), nsamples=3, ntokens=12, hessian=torch.arange(36.0).view(6, 6))
    got = reading_stats(part, units, {"down": full})
    assert got.sq_norm.tolist() == [2.0, 3.0, 4.0, 5.0]
    assert (got.nsamples, got.ntokens) == (3, 12)
    assert torch.equal(got.hessian, full.hessian[2:6, 2:6])
    assert reading_stats(part, units, {}) is None  # data-free: nothing collected


def test_a_component_scores_the_root_of_its_per_token_mean_squared_activation():
    _, down, _ = _mlp()
    group = Group("g", "heads", 3, (ParamSlice(down, "weight", 1),))
    # sq_norm is per sample; * nsamples / ntokens makes it per token: [1, 3, 4, 4, 0, 8] / 2
    stats = InputStats(torch.tensor([1.0, 3.0, 4.0, 4.0, 0.0, 8.0]), nsamples=2, ntokens=4)
    scores = ActivationScorer().score_group(group, ScoreContext(stats=stats))
    torch.testing.assert_close(scores, torch.tensor([2.0, 4.0, 4.0]).sqrt())


def test_refusals_name_what_is_wrong():
    _, down, _ = _mlp()
    group = Group("model.mlp.neurons", "neurons", 4, (ParamSlice(down, "weight", 1),))
    with pytest.raises(SecateursError, match="needs calibration data: group 'model.mlp.neurons'"):
        ActivationScorer().score_group(group, ScoreContext())
    with pytest.raises(SecateursError, match="6 entries, not a multiple of its 4 components"):
        ActivationScorer().score_group(group, ScoreContext(stats=InputStats(torch.ones(6), 1, 1)))
    with pytest.raises(SecateursError, match='structured components only.*set granularity to "heads"'):
        ActivationScorer().score(Unit("down", down), ScoreContext())
    with pytest.raises(TypeError):
        ActivationScorer(comparison="row")  # fixed: components compare across the whole group


def test_the_pipeline_gives_a_group_its_reading_units_statistics():
    loaded = tiny_model()
    batches = GaussianBatches().batches(loaded)
    model = loaded.model
    seen: list[torch.Tensor] = []
    handle = model.blocks[0].down.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            for batch in batches:
                loaded.adapter.forward(model, batch)
    finally:
        handle.remove()
    x = torch.cat([s.reshape(-1, s.shape[-1]) for s in seen])
    scores = dense_scores(loaded, quiet_spec("remove", "neurons", scorer="activation", calibration=batches))
    torch.testing.assert_close(scores["blocks.0.neurons"], x.pow(2).mean(0).sqrt())
    result = prune_model(loaded, quiet_spec("remove", "neurons", scorer="activation", calibration=batches))
    assert result.params_pruned > 0 and model.blocks[0].down.in_features == x.shape[1] // 2
