"""The ``neuroal`` allocator end to end on tiny random decoders through the real pipeline."""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
import torch
from neuroal_helpers import run_neuroal

from secateurs.builtins.appliers import ZeroApplier
from secateurs.errors import SecateursError
from secateurs.hookspecs import hookimpl
from secateurs.masks import pruned_count
from secateurs.plugins import PluginManager
from secateurs_neuroal.ratios import block_ramp

SMALL = {"block_grid": [0.02, 0.1, 0.25], "row_grid": [0.0, 0.05, 0.25]}


def _block_totals(model) -> list[int]:
    return [
        sum(int((m.weight == 0).sum()) for m in layer.modules() if isinstance(m, torch.nn.Linear))
        for layer in model.model.layers
    ]


def _pruned_per_row(model) -> dict[str, torch.Tensor]:
    return {
        name: (m.weight == 0).sum(1)
        for name, m in model.model.layers.named_modules()
        if isinstance(m, torch.nn.Linear)
    }


@pytest.mark.parametrize("scorer,params", [("wanda", {}), ("magnitude", {"comparison": "row"})])
def test_chosen_lambdas_are_the_argmin_of_the_recorded_scores(scorer, params):
    result, _, _ = run_neuroal(scorer, scorer_params=params, **SMALL)
    record = result.records["neuroal"]
    for step in (record["block_step"], record["row_step"]):
        scores, grid = step["scores"], step["grid"]
        assert len(scores) == len(grid)
        low = min(scores)
        assert step["lambda"] == min(g for g, s in zip(grid, scores, strict=True) if s == low)
        assert grid[step["index"]] == step["lambda"]
        assert all(len(b) == 3 for b in step["block_scores"])
        assert scores == pytest.approx([sum(b) for b in step["block_scores"]])
    # λ_R = 0 is the block step's winner, reused without a second evaluation
    assert record["row_step"]["scores"][0] == record["block_step"]["scores"][record["block_step"]["index"]]


@pytest.mark.parametrize("family,sparsity", [("llama", 0.6), ("mistral", 0.7), ("qwen2", 0.8)])
def test_mean_sparsity_is_the_target_and_ratios_respect_the_clip(sparsity, family):
    result, model, _ = run_neuroal(sparsity=sparsity, family=family, **SMALL)
    record = result.records["neuroal"]
    assert result.sparsity == pytest.approx(sparsity, abs=0.005)
    lam = record["block_step"]["lambda"]
    ramp = block_ramp(sparsity, lam, 3)
    assert record["block_ratio"] == pytest.approx(ramp.tolist())
    assert all(0.01 <= s <= 0.99 for s in record["block_ratio"])
    for name, rows in _pruned_per_row(model).items():
        width = model.get_submodule(f"model.layers.{name}").weight.shape[1]
        assert int(rows.min()) >= int(pruned_count(width, 0.01))
        assert int(rows.max()) <= int(pruned_count(width, 0.99))
    for ratios in record["row_sparsity"].values():
        assert 0.0 <= min(ratios) and max(ratios) <= 0.99


def test_extreme_lambdas_are_clipped_per_block():
    result, model, _ = run_neuroal(sparsity=0.9, block_grid=[0.25], row_step=False)
    record = result.records["neuroal"]
    assert record["block_ratio"] == pytest.approx([0.73, 0.98, 0.99])  # clipped, shifted to mean 0.9
    assert result.sparsity == pytest.approx(0.9, abs=0.005)
    deepest = _pruned_per_row(model)
    assert int(deepest["2.mlp.down_proj"].max()) <= int(pruned_count(512, 0.99))


def test_row_step_never_changes_a_blocks_total_sparsity():
    with_rows, model_rows, _ = run_neuroal(**SMALL)
    without, model_plain, _ = run_neuroal(**{**SMALL, "row_step": False})
    rec = with_rows.records["neuroal"]
    assert rec["row_step"]["lambda"] > 0, "the row step must change rows for this check to mean anything"
    assert rec["row_sparsity"], "some units must have non-uniform rows"
    assert rec["block_step"]["lambda"] == without.records["neuroal"]["block_step"]["lambda"]
    assert _block_totals(model_rows) == _block_totals(model_plain)
    rows = _pruned_per_row(model_rows)
    changed = [n for n in rows if f"model.layers.{n}" in rec["row_sparsity"]]
    assert changed and all(int(rows[n].max()) > int(rows[n].min()) for n in changed)


def test_gqa_keeps_qkv_rows_uniform_and_the_last_block_untouched():
    result, model, _ = run_neuroal(**SMALL)  # tiny models have 4 heads over 2 KV heads
    changed = result.records["neuroal"]["row_sparsity"]
    assert not [n for n in changed if n.rsplit(".", 1)[1] in ("q_proj", "k_proj", "v_proj", "down_proj")]
    assert not [n for n in changed if ".layers.2." in n]
    assert {n.rsplit(".", 1)[1] for n in changed} <= {"o_proj", "gate_proj", "up_proj"}


def test_sparsegpt_skips_the_row_step_with_a_message():
    result, _, messages = run_neuroal("wanda", "sparsegpt", block_grid=[0.1], hidden=128, layers=2)
    record = result.records["neuroal"]
    assert "SparseGPT" in record["row_step"]["skipped"]
    assert any("row step skipped" in m for m in messages)
    assert record["row_sparsity"] == {}
    assert result.sparsity == pytest.approx(0.6, abs=0.005)


@attrs.frozen
class ScalarOnlyApplier(ZeroApplier):
    """A third-party applier that ignores per-row ratios."""

    @property
    def row_ratios(self) -> bool:
        return False


@attrs.frozen
class SquaredWanda:
    """A third-party scorer: (|W| · ‖x‖)² — Wanda's ranking, other values."""

    comparison: str = "row"
    requires: ClassVar[frozenset[str]] = frozenset({"sq_norm"})
    selects: ClassVar[bool] = False

    def score(self, unit, ctx):
        return (unit.weight.detach().abs() * ctx.stats.sq_norm.sqrt()).pow(2)


class Unranked:
    @hookimpl
    def secateurs_register_appliers(self, register):
        register("unranked-zero", UnrankedZero)


class ThirdParty:
    @hookimpl
    def secateurs_register_scorers(self, register):
        register("squared-wanda", SquaredWanda)

    @hookimpl
    def secateurs_register_appliers(self, register):
        register("scalar-only", ScalarOnlyApplier)


@pytest.fixture
def third_party() -> PluginManager:
    manager = PluginManager()
    manager.register(ThirdParty(), "third-party")
    return manager


def test_third_party_scorer_works_without_code_changes(third_party):
    result, _, _ = run_neuroal("squared-wanda", manager=third_party, **SMALL)
    reference, _, _ = run_neuroal("wanda", **SMALL)
    record = result.records["neuroal"]
    assert result.sparsity == pytest.approx(0.6, abs=0.005)
    # same ranking as Wanda, so the same masks, alignments and choices
    assert record["block_step"]["scores"] == pytest.approx(reference.records["neuroal"]["block_step"]["scores"])
    assert record["row_step"]["lambda"] == reference.records["neuroal"]["row_step"]["lambda"]


def test_applier_without_row_ratios_skips_the_row_step(third_party):
    result, _, messages = run_neuroal("wanda", "scalar-only", manager=third_party, block_grid=[0.1])
    assert "does not honour per-row ratios" in result.records["neuroal"]["row_step"]["skipped"]
    assert any("row step skipped" in m for m in messages)
    with pytest.raises(SecateursError, match="row_step = true"):
        run_neuroal("wanda", "scalar-only", manager=third_party, block_grid=[0.1], row_step=True)


def test_matrix_comparison_skips_the_row_step():
    result, _, messages = run_neuroal("magnitude", block_grid=[0.1])
    assert "comparison" in result.records["neuroal"]["row_step"]["skipped"]


def test_search_shares_block_zero_and_counts_its_work():
    result, _, _ = run_neuroal("magnitude", scorer_params={"comparison": "row"}, **SMALL)
    search = result.records["neuroal"]["search"]
    candidates = 3 + 2  # block grid + row grid without λ = 0
    assert search["candidates"] == candidates
    assert search["prunes"] == candidates * 3
    samples = search["samples"]
    # dense passes: block 0 once for both steps; blocks 1, 2 once per candidate stream
    dense = 1 + candidates * 2
    assert search["sample_forwards"] == samples * (dense + candidates * 3)


@attrs.frozen
class UnrankedZero(ZeroApplier):
    """The ``zero`` applier without ranking rows: every candidate sorts its own scores."""

    @property
    def ranks_rows(self) -> bool:
        return False


@pytest.mark.parametrize("scorer,params", [("wanda", {}), ("magnitude", {"comparison": "row"})])
def test_one_sort_per_linear_gives_the_same_search_as_sorting_per_candidate(scorer, params):
    manager = PluginManager()
    manager.register(Unranked(), "unranked")
    ranked, model_ranked, _ = run_neuroal(scorer, scorer_params=params, **SMALL)
    unranked, model_unranked, _ = run_neuroal(scorer, "unranked-zero", scorer_params=params, manager=manager, **SMALL)
    for step in ("block_step", "row_step"):
        assert ranked.records["neuroal"][step]["scores"] == unranked.records["neuroal"][step]["scores"]
    assert all(torch.equal(a, b) for a, b in zip(model_ranked.parameters(), model_unranked.parameters(), strict=True))



def test_row_grid_of_only_zero_and_batched_calibration():
    # λ_R = 0 alone: nothing to re-evaluate (no dense pass even for input-free scores);
    # work counts samples, not calibration batches
    result, _, _ = run_neuroal(
        "magnitude", scorer_params={"comparison": "row"}, layers=2, hidden=128, batch_size=2,
        block_grid=[0.1], row_grid=[0.0],
    )
    record = result.records["neuroal"]
    assert record["row_step"]["scores"] == record["block_step"]["scores"]
    assert record["row_sparsity"] == {}
    search = record["search"]
    assert search["samples"] == 4 and search["candidates"] == 1
    assert search["sample_forwards"] == 4 * (2 + 2)  # dense + sparse pass of both blocks


def test_search_options_are_applied():
    result, _, _ = run_neuroal(search_samples=2, search_seqlen=8, block_grid=[0.1], row_grid=[0.0])
    search = result.records["neuroal"]["search"]
    assert search["samples"] == 2 and search["seqlen"] == 8



@pytest.mark.parametrize(
    "params,match",
    [
        ({"block_grid": []}, "grid"),
        ({"row_grid": [1.5]}, "grid"),
        ({"search_samples": 0}, "search_samples"),
        ({"clip": [0.5, 0.2]}, "clip"),
    ],
)
def test_bad_parameters_are_clear_errors(params, match):
    from secateurs.plugins import get_manager

    with pytest.raises(SecateursError, match=match):
        get_manager().allocators.create("neuroal", **params)
