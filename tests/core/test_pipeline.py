"""The block-by-block pipeline on tiny LLaMA-family models: capture, statistics,
propagation of pruned outputs, exact sparsity, data-free runs."""

from __future__ import annotations

import pytest
import torch

from lm_models import tiny_causal_lm, token_batches
from secateurs import find_adapter
from secateurs.errors import SecateursError
from secateurs.pipeline import PruneSpec, Session, capture, prune_model
from secateurs.plugins import PluginManager
from secateurs.protocols import LoadedModel
from secateurs.stats import collect_stats
from secateurs.types import Unit

MANAGER = PluginManager(load_entry_points=True)


def _loaded(family: str = "llama", **kw) -> LoadedModel:
    model = tiny_causal_lm(family, **kw)
    return LoadedModel(model, find_adapter(model, manager=MANAGER), "tiny")


def _spec(scorer="wanda", allocator="uniform", sparsity=0.5, applier=None, **kw) -> PruneSpec:
    return PruneSpec(
        MANAGER.scorers.create(scorer, **kw.pop("scorer_params", {})),
        MANAGER.allocators.create(allocator),
        applier or MANAGER.appliers.create("zero"),
        sparsity,
        calibration=token_batches(),
        progress=False,
        **kw,
    )


def test_captured_inputs_reproduce_the_models_own_block_outputs(causal_family):
    loaded = _loaded(causal_family)
    blocks = loaded.adapter.blocks(loaded.model)
    batch = token_batches(1)[0]
    seen = {}
    handle = blocks[-1].module.register_forward_hook(lambda m, a, out: seen.setdefault("out", out))
    with torch.no_grad():
        loaded.model(**batch)
    handle.remove()
    session = Session(loaded, _spec(), blocks, capture(loaded, blocks, [batch]))
    inputs = session.inputs
    for block in blocks:
        inputs = session.run(block, inputs)
    expected = loaded.adapter.block_output(seen["out"])
    torch.testing.assert_close(inputs.hidden[0], expected)


@pytest.mark.parametrize("scorer", ["wanda", "magnitude", "random"])
def test_every_pruned_linear_has_the_target_sparsity_per_row(causal_family, scorer):
    loaded = _loaded(causal_family)
    prune_model(loaded, _spec(scorer, scorer_params={"comparison": "row"}))
    for block in loaded.adapter.blocks(loaded.model):
        assert len(block.units) == 7
        for unit in block.units:
            zeros = (unit.weight == 0).sum(1)
            assert torch.all(zeros == unit.row_width // 2), unit.name


def test_embeddings_norms_and_head_are_never_pruned():
    loaded = _loaded()
    before = {n: p.clone() for n, p in loaded.model.named_parameters()}
    prune_model(loaded, _spec())
    untouched = [n for n in before if not any(r in n for r in ("_proj",))]
    assert untouched and all(torch.equal(before[n], dict(loaded.model.named_parameters())[n]) for n in untouched)


def test_magnitude_per_matrix_prunes_half_of_every_matrix():
    loaded = _loaded()
    result = prune_model(loaded, _spec("magnitude"))
    assert all(u.pruned == u.numel // 2 for u in result.units)
    assert result.params_pruned == sum(u.numel for u in result.units) // 2


def test_wanda_scores_use_the_pruned_outputs_of_earlier_blocks():
    """Block 1's statistics come from block 0's pruned outputs, not the dense ones."""
    dense, pruned = _loaded(), _loaded()
    seen = {}

    class Spy:
        requires = frozenset({"sq_norm"})
        comparison = "row"
        selects = False

        def __init__(self, key):
            self.key = key

        def score(self, unit, ctx):
            seen.setdefault(self.key, {})[unit.name] = ctx.stats.sq_norm.clone()
            return unit.weight.abs()

    prune_model(dense, PruneSpec(Spy("dense"), MANAGER.allocators.create("uniform"), MANAGER.appliers.create("zero"), 0.0, calibration=token_batches(), progress=False))
    prune_model(pruned, PruneSpec(Spy("pruned"), MANAGER.allocators.create("uniform"), MANAGER.appliers.create("zero"), 0.7, calibration=token_batches(), progress=False))
    first, second = "model.layers.0.self_attn.q_proj", "model.layers.1.self_attn.q_proj"
    torch.testing.assert_close(seen["dense"][first], seen["pruned"][first])
    assert not torch.allclose(seen["dense"][second], seen["pruned"][second])


def test_data_free_scorers_never_run_the_model():
    loaded = _loaded()
    calls = []
    loaded.model.register_forward_pre_hook(lambda *a: calls.append(1))
    spec = _spec("magnitude")
    spec.calibration = None
    result = prune_model(loaded, spec)
    assert calls == [] and result.sparsity == pytest.approx(0.5)
    assert "capture" not in result.timings


def test_global_allocator_meets_the_target_over_the_whole_model():
    loaded = _loaded()
    result = prune_model(loaded, _spec("magnitude", "global"))
    assert result.sparsity == pytest.approx(0.5, abs=1e-4)
    ratios = {round(u.sparsity, 3) for u in result.units}
    assert len(ratios) > 1  # one threshold, different per-unit ratios
    threshold = result.records["global"]["threshold"]
    for block in loaded.adapter.blocks(loaded.model):
        for unit in block.units:
            kept = unit.weight[unit.weight != 0].abs()
            assert kept.numel() == 0 or kept.min() >= threshold


@pytest.mark.parametrize("pattern", ["2:4", "4:8"])
def test_nm_patterns_through_the_pipeline(pattern):
    loaded = _loaded()
    n, m = map(int, pattern.split(":"))
    prune_model(loaded, _spec(applier=MANAGER.appliers.create("zero", pattern=pattern)))
    for block in loaded.adapter.blocks(loaded.model):
        for unit in block.units:
            nonzero = (unit.weight != 0).view(unit.rows, -1, m).sum(-1)
            assert torch.all(nonzero <= n)


def test_nm_pattern_that_does_not_divide_a_row_fails_before_pruning():
    loaded = _loaded(hidden=72)  # rows of 72 and 144: 16 divides neither 72
    before = loaded.model.model.layers[0].self_attn.q_proj.weight.clone()
    with pytest.raises(SecateursError, match="does not divide"):
        prune_model(loaded, _spec(applier=MANAGER.appliers.create("zero", pattern="4:16")))
    assert torch.equal(before, loaded.model.model.layers[0].self_attn.q_proj.weight)


def test_calibrated_scorer_without_data_is_a_clear_error():
    spec = _spec()
    spec.calibration = None
    with pytest.raises(SecateursError, match="calibration"):
        prune_model(_loaded(), spec)


@pytest.mark.parametrize("sparsity", [-0.1, 1.0, 1.5])
def test_sparsity_outside_the_unit_interval_is_refused(sparsity):
    with pytest.raises(SecateursError, match=r"\[0, 1\)"):
        prune_model(_loaded(), _spec(sparsity=sparsity))


def test_targets_select_parameters_for_data_free_runs():
    loaded = _loaded()
    spec = _spec("magnitude", targets=["*embed_tokens*", "*norm*"], exclude=["*.layers.1.*"])
    spec.calibration = None
    result = prune_model(loaded, spec)
    names = [u.name for u in result.units]
    assert "model.embed_tokens.weight" in names and not any(".layers.1." in n for n in names)
    assert "model.layers.0.input_layernorm.weight" in names
    assert torch.isclose((loaded.model.model.embed_tokens.weight == 0).float().mean(), torch.tensor(0.5))


def test_targets_key_each_tensor_of_a_module_separately():
    """A module's weight and bias are two units with their own scores and masks."""
    loaded = _loaded("qwen2")  # q/k/v projections have biases
    q = loaded.model.model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(q.bias)
    spec = _spec("magnitude", targets=["model.layers.0.self_attn.q_proj.*"])
    spec.calibration = None
    result = prune_model(loaded, spec)
    assert sorted(u.name for u in result.units) == [
        "model.layers.0.self_attn.q_proj.bias",
        "model.layers.0.self_attn.q_proj.weight",
    ]
    assert (q.bias == 0).sum() == q.bias.numel() // 2 and (q.weight == 0).sum() == q.weight.numel() // 2


def test_units_sharing_a_module_get_the_same_correctly_scaled_statistics():
    """One accumulator per module: its in-place Hessian scaling must happen once."""
    linear = torch.nn.Linear(3, 2)
    units = [Unit("w", linear, "weight"), Unit("b", linear, "bias")]
    x = torch.randn(4, 5, 3)
    with collect_stats(units, hessian=True) as collection:
        linear(x)
    flat = x.reshape(-1, 3)
    for unit in units:
        stats = collection.stats[unit.name]
        torch.testing.assert_close(stats.hessian, flat.T @ flat * (2.0 / 4))
        torch.testing.assert_close(stats.sq_norm, flat.pow(2).sum(0) / 4)
