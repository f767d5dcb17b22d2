"""A third-party plugin that implements every hook runs a whole recipe with its own parts,
and parts implementing every optional member (``secateurs.protocols.OPTIONAL``) are used."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import ClassVar

import attrs
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import secateurs
from secateurs.errors import SecateursError
from secateurs.hookspecs import hookimpl
from secateurs.loading import find_adapter
from secateurs.offload import Budget
from secateurs.plugins import PluginManager
from secateurs.protocols import OPTIONAL, LoadedModel
from secateurs.block_inputs import Inputs
from secateurs.builtins.allocators import UniformAllocator
from secateurs.builtins.appliers import ZeroApplier
from secateurs.builtins.remove import RemoveApplier
from secateurs.builtins.scorers import MagnitudeScorer
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.testing import GaussianBatches, tiny_model
from secateurs.structured import remove_components, zero_components
from secateurs.types import Block, Group, ModelFacts, ParamSlice, RunPlan, UnitAllocation
from toy_plugin import GaussianInputs, InputWeighted, MLPStack, MLPStackAdapter, Ramp, ToyPlugin, ZeroAndCount


@pytest.fixture
def manager(tmp_path):
    manager = PluginManager(load_entry_points=False)
    manager.register(ToyPlugin(tmp_path / "packaged"), name="toy", distribution="secateurs-toy")
    try:
        yield manager
    finally:
        manager.unregister("toy")


def test_every_hook_of_the_toy_plugin_registers(manager):
    registered = manager.registered["toy"]
    assert registered == {
        "adapter": ["mlp-stack"],
        "scorer": ["input-weighted"],
        "allocator": ["ramp"],
        "applier": ["zero-and-count"],
        "exporter": ["summary"],
        "calibration": ["gaussian"],
        "evaluator": ["output-norm"],
        "model": ["toy-mlp"],
    }


def test_a_recipe_made_only_of_plugin_parts_runs_end_to_end(manager, tmp_path):
    recipe = {
        "model": "toy-mlp",  # secateurs_register_models: a packaged model by name
        "output": str(tmp_path / "out"),
        "sparsity": 0.5,
        "calibration": {"name": "gaussian", "nsamples": 8},  # secateurs_register_calibration_sources
        "scorer": "input-weighted",  # secateurs_register_scorers
        "allocator": {"name": "ramp", "delta": 0.2},  # secateurs_register_allocators
        "applier": "zero-and-count",  # secateurs_register_appliers
        "exporters": ["safetensors", "summary", "report"],  # secateurs_register_exporters
        "evaluate": "output-norm",  # secateurs_register_evaluators
    }
    outcome = secateurs.prune(recipe, manager=manager, progress=False)
    ratios = [u.sparsity for u in outcome.result.units]
    assert ratios == pytest.approx([11 / 16, 8 / 16, 4 / 16])  # floor(16 * [0.7, 0.5, 0.3]) of 16
    assert outcome.before["output_norm"] != outcome.after["output_norm"]
    out = tmp_path / "out"
    assert (out / "summary.txt").read_text() == f"sparsity {outcome.result.sparsity:.4f}\n"
    report = json.loads((out / "report.json").read_text())
    assert report["records"]["ramp"] == {"blocks": 3}
    reloaded = secateurs.load(out, manager=manager)  # secateurs_register_adapters: load + save
    assert isinstance(reloaded.model, MLPStack)
    for a, b in zip(reloaded.model.parameters(), outcome.loaded.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_plugin_commands_are_added_to_the_cli(manager):
    import click

    @click.group()
    def cli() -> None:
        pass

    manager.add_commands(cli)  # secateurs_register_commands
    result = CliRunner().invoke(cli, ["toy-hello"])
    assert result.exit_code == 0 and result.output == "hello from toy\n"


# -- every optional member -------------------------------------------------------------


@attrs.frozen
class ExplainingMLPAdapter(MLPStackAdapter):
    """The toy adapter with every optional adapter member; it loads nothing."""

    name: str = "mlp-explaining"
    group_kinds: ClassVar[tuple[str, ...]] = ("neurons",)

    def describe(self, path: Path) -> ModelFacts | None:
        return ModelFacts(str(path), max_positions=8)
    generic: ClassVar[bool] = False

    def load(self, path: Path, *, device: str, dtype: torch.dtype | None) -> LoadedModel | None:
        return None

    def load_within(self, path: Path, *, device: str, dtype: torch.dtype | None, budget) -> LoadedModel | None:
        return None

    def explain(self, model: nn.Module) -> str | None:
        return None if self.supports(model) else "only MLP stacks here"

    def explain_load(self, path: Path) -> str | None:
        return "never loads folders"

    def structured_refusal(self, model: nn.Module, kind: str) -> str | None:
        return f"MLP stacks have no {kind}"

    def resized(self, model: nn.Module, block: Block, group: Group, keep: torch.Tensor) -> None:
        raise AssertionError("no groups, so nothing is ever removed")

    def layer_refusal(self, model: nn.Module) -> str | None:
        return None if model.depth > 1 else "a one-layer stack keeps its layer"

    def remove_layers(self, model: nn.Module, keep) -> None:
        model.layers = nn.ModuleList(model.layers[i] for i in keep)
        model.depth = len(keep)

    def hidden_refusal(self, model: nn.Module, width: int | None) -> str | None:
        return None if model.depth > 1 else "a one-layer stack has no width between layers"

    def hidden_group(self, model: nn.Module) -> Group:
        """The width between layers: rows (and bias) of every layer but the head, columns of
        every layer but the first."""
        linears = [layer[0] for layer in model.layers]
        rows = [ParamSlice(m, "weight", 0) for m in linears]
        columns = [ParamSlice(m, "weight", 1) for m in (*linears[1:], model.head)]
        return Group("hidden", "hidden", model.width, (*rows, *columns))

    def remove_hidden(self, model: nn.Module, keep: torch.Tensor, calibration=None) -> None:
        remove_components([(self.hidden_group(model), keep)])
        model.width = int(keep.sum())


@attrs.frozen
class RecordingScorer(InputWeighted):
    """The toy scorer with every optional scorer member: records what it was given."""

    records: dict = attrs.field(factory=dict)

    def prepare(self, loaded: LoadedModel, calibration: list | None) -> None:
        self.records["recording"] = {"prepared_batches": len(calibration or ())}

    def score_group(self, group: Group, ctx) -> torch.Tensor:
        return torch.ones(group.size)

    def score_layer(self, block: Block, ctx) -> float:
        """How far the block moves its inputs."""
        return float(sum((y - x).norm() for x, y in zip(ctx.inputs, ctx.outputs, strict=True)))


@attrs.frozen
class CheckingZero(ZeroAndCount):
    """The toy applier with ``check``: refuses structured runs before any work."""

    def check(self, blocks, granularity: str) -> None:
        if granularity != "unstructured":
            raise SecateursError(f"checking-zero prunes entries, not {granularity}")


@attrs.define
class CheckingRamp(Ramp):
    """The toy allocator with ``check``: refuses targets above 0.6 before any work."""

    def check(self, plan: RunPlan) -> None:
        if plan.sparsity > 0.6:
            raise SecateursError(f"checking-ramp serves targets up to 0.6, not {plan.sparsity}")


@attrs.frozen
class CheckingGaussian(GaussianInputs):
    """The toy calibration source with ``check_model``: no more samples than positions."""

    def check_model(self, facts: ModelFacts) -> None:
        if self.nsamples > facts.max_positions:
            raise SecateursError(f"nsamples {self.nsamples} exceeds {facts.source}'s {facts.max_positions} positions")


OPTIONAL_PARTS = (
    ExplainingMLPAdapter(), RecordingScorer(), CheckingZero(), Ramp(), RemoveApplier(), ZeroApplier(),
    CheckingRamp(), CheckingGaussian(),
)


@attrs.define
class TriesEveryBlock:
    """A searching allocator that tries the target on every block and undoes it."""

    needs_scores: ClassVar[bool] = True

    def prepare(self, session, target: float) -> None:
        for block in session.blocks:
            allocation = {g.name: UnitAllocation(target) for g in block.groups if g.kind == session.granularity}
            with session.trial(block):
                session.prune_block(block, {}, Inputs(), allocation)
                assert block.module.up.out_features == 32  # zeroed in the trial, not removed

    def allocate(self, block: Block, scores, target: float):
        return {name: UnitAllocation(target) for name in scores}


@attrs.frozen
class BareRemove:
    """Removes components but does not say how to zero them instead (no ``in_place``)."""

    requires: ClassVar[frozenset[str]] = frozenset()
    row_ratios: ClassVar[bool] = False

    def apply(self, block, scores, allocation, ctx):
        return RemoveApplier().apply(block, scores, allocation, ctx)


def _trying(applier) -> PruneSpec:
    return PruneSpec(MagnitudeScorer(), TriesEveryBlock(), applier, 0.5, granularity="neurons", progress=False)


@attrs.define
class TriesRanked:
    """A searching allocator that prunes every block under two allocations, from ranks
    and from scores, and records whether masks and weights agree."""

    needs_scores: ClassVar[bool] = True
    per_row: bool = True
    agreed: list[bool] = attrs.field(factory=list)
    ranked: list[bool] = attrs.field(factory=list)

    def prepare(self, session, target: float) -> None:
        inputs = session.capture(session.calibration)
        for block in session.blocks:
            stats, next_inputs = session.collect(block, inputs, keep_outputs=True)
            scores = session.score(block, stats)
            ranks = session.ranks(block, scores)
            self.ranked.append(ranks is not None)
            for s in (0.3, 0.7):
                allocation = {u.name: UnitAllocation(s, rows=self._rows(u, s)) for u in block.units}
                results = []
                for use in (ranks, None):
                    with session.trial(block):
                        masks, _ = session.prune_block(block, stats, inputs, allocation, scores=scores, ranks=use)
                        results.append((masks, [u.weight.detach().clone() for u in block.units]))
                (m1, w1), (m2, w2) = results
                self.agreed.append(all(torch.equal(m1[k], m2[k]) for k in m1) and all(map(torch.equal, w1, w2)))
            inputs = next_inputs

    def _rows(self, unit, sparsity: float) -> torch.Tensor | None:
        return torch.linspace(0, sparsity, unit.rows).double() if self.per_row else None

    def allocate(self, block: Block, scores, target: float):
        return {name: UnitAllocation(target) for name in scores}


@pytest.mark.parametrize(
    "comparison,pattern,ranked", [("row", None, True), ("matrix", None, False), ("row", "2:4", False)]
)
def test_masks_from_ranks_equal_masks_from_scores(comparison, pattern, ranked):
    """Where the applier ranks rows, ``prune_block(ranks=)`` prunes exactly as from scores;
    elsewhere ``ranks`` is ``None`` (per-matrix comparison, N:M patterns)."""
    loaded, allocator = tiny_model(), TriesRanked(per_row=comparison == "row" and pattern is None)
    spec = PruneSpec(
        MagnitudeScorer(comparison=comparison), allocator, ZeroApplier(pattern=pattern), 0.5,
        calibration=GaussianBatches().batches(loaded), progress=False,
    )
    prune_model(loaded, spec)
    assert allocator.ranked == [ranked] * 3 and allocator.agreed == [True] * 6


def test_trials_with_a_resizing_applier_zero_then_undo():
    loaded = tiny_model()
    dense = loaded.model(torch.ones(2, 16))
    result = prune_model(loaded, _trying(RemoveApplier()))
    assert [b.up.out_features for b in loaded.model.blocks] == [16, 16, 16]  # the run itself removes
    assert result.sparsity == 0.5 and not torch.equal(loaded.model(torch.ones(2, 16)), dense)


def test_a_resizing_applier_without_in_place_is_refused_in_a_trial():
    with pytest.raises(SecateursError, match=r"changed the shape of blocks.0.up.weight inside a trial.*in_place"):
        prune_model(tiny_model(), _trying(BareRemove()))


class OptionalMembersPlugin:
    @hookimpl
    def secateurs_register_adapters(self, register):
        register("mlp-explaining", ExplainingMLPAdapter)

    @hookimpl
    def secateurs_register_scorers(self, register):
        register("recording", RecordingScorer)

    @hookimpl
    def secateurs_register_appliers(self, register):
        register("checking-zero", CheckingZero)

    @hookimpl
    def secateurs_register_allocators(self, register):
        register("checking-ramp", CheckingRamp)

    @hookimpl
    def secateurs_register_calibration_sources(self, register):
        register("checking-gaussian", CheckingGaussian)


@pytest.fixture
def optional_manager(manager):
    manager.register(OptionalMembersPlugin(), name="optional")
    try:
        yield manager
    finally:
        manager.unregister("optional")


@pytest.mark.parametrize("protocol", sorted({p for ps in OPTIONAL.values() for p in ps}, key=lambda p: p.__name__))
def test_every_optional_member_has_a_part_here(protocol):
    """Fails when an optional protocol is added without a part in this file implementing it."""
    assert any(isinstance(part, protocol) for part in OPTIONAL_PARTS), protocol.__name__


def _recipe(tmp_path, **changes):
    return {
        "model": "toy-mlp", "output": str(tmp_path / "out"), "sparsity": 0.5,
        "calibration": {"name": "gaussian", "nsamples": 8}, "scorer": "recording",
        "allocator": "ramp", "applier": "checking-zero", "exporters": ["report"], **changes,
    }


def test_a_layer_scorer_and_a_layer_removing_adapter_remove_the_lowest_scored_layers():
    model = MLPStack(depth=3)
    with torch.no_grad():
        model.layers[1][0].weight.copy_(torch.eye(16))  # ReLU(x) for x >= 0: barely moves
        model.layers[1][0].bias.zero_()
    kept = [model.layers[0], model.layers[2]]
    batches = [{"x": torch.rand(4, 16)} for _ in range(2)]
    loaded = LoadedModel(model, ExplainingMLPAdapter(), "toy")
    spec = PruneSpec(RecordingScorer(), UniformAllocator(), ZeroApplier(), 0.34, "layers", calibration=batches,
                     progress=False)
    result = prune_model(loaded, spec)
    assert list(model.layers) == kept and model.depth == 2
    assert result.records["layers"]["removed"] == ["layers.1"]
    assert result.params_pruned == 16 * 17 and result.records["recording"] == {"prepared_batches": 2}


def test_a_width_pruning_adapter_removes_the_lowest_scored_channels_as_zeroing_them_would():
    model = MLPStack(depth=3)
    adapter = ExplainingMLPAdapter()
    scores = MagnitudeScorer().score_group(adapter.hidden_group(model), None)
    keep = torch.ones(16, dtype=torch.bool)
    keep[torch.argsort(scores)[:4]] = False
    zeroed = copy.deepcopy(model)
    zero_components(adapter.hidden_group(zeroed), keep)
    spec = PruneSpec(MagnitudeScorer(), UniformAllocator(), ZeroApplier(), 0.25, "hidden", progress=False)
    result = prune_model(LoadedModel(model, adapter, "toy"), spec)
    assert model.width == 12 and model.head.in_features == 12 and model.layers[0][0].out_features == 12
    assert sorted(result.records["hidden"]["removed"]) == sorted((~keep).nonzero().view(-1).tolist())
    x = torch.rand(4, 16)
    torch.testing.assert_close(model(x), zeroed(x))
    assert result.params_pruned == 4 * 17 + 2 * (16 * 16 - 12 * 12 + 4) + 4 * 2  # first rows, inner squares, head columns


def test_scorer_and_allocator_records_reach_the_report(optional_manager, tmp_path):
    outcome = secateurs.prune(_recipe(tmp_path), manager=optional_manager, progress=False)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["records"]["ramp"] == {"blocks": 3}  # the allocator's
    assert report["records"]["recording"] == {"prepared_batches": 2}  # the scorer's, prepared once
    assert outcome.result.records == report["records"]


def test_an_applier_check_refuses_before_any_work(optional_manager, tmp_path):
    with pytest.raises(SecateursError, match="checking-zero prunes entries, not neurons"):
        secateurs.prune(_recipe(tmp_path, granularity="neurons"), manager=optional_manager, progress=False)


@pytest.mark.parametrize(
    "changes,needle",
    [
        ({"granularity": "filters"}, r"unknown granularity 'filters'; the 'mlp-explaining' adapter defines: neurons, unstructured"),
        ({"allocator": "checking-ramp", "sparsity": 0.7}, "checking-ramp serves targets up to 0.6, not 0.7"),
        ({"calibration": {"name": "checking-gaussian", "nsamples": 16}}, "nsamples 16 exceeds .*'s 8 positions"),
        ({"calibration": None}, "this scorer or applier needs calibration data"),
    ],
)
def test_checks_that_need_no_weight_run_before_the_model_loads(optional_manager, tmp_path, monkeypatch, changes, needle):
    """A ``GroupingAdapter``'s kinds, a ``CheckingAllocator``, a ``ModelChecking`` source given the
    ``DescribingAdapter``'s facts, and the calibration a scorer needs: refused before ``load``."""
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    recipe = _recipe(tmp_path, adapter="mlp-explaining", **changes)
    with pytest.raises(SecateursError, match=needle):
        secateurs.prune({k: v for k, v in recipe.items() if v is not None}, manager=optional_manager, progress=False)
    assert not (tmp_path / "out").exists()


def test_a_structured_refusal_says_why(optional_manager, tmp_path):
    recipe = _recipe(tmp_path, model=None, granularity="neurons", applier="zero-and-count", adapter="mlp-explaining")
    with pytest.raises(SecateursError, match="MLP stacks have no neurons"):
        secateurs.prune(recipe, model=MLPStack(), manager=optional_manager, progress=False)


def test_adapter_explanations_name_why_they_decline(optional_manager, tmp_path):
    with pytest.raises(SecateursError, match="the .mlp-explaining. adapter cannot take Linear: only MLP stacks here"):
        find_adapter(nn.Linear(2, 2), "mlp-explaining", optional_manager)
    with pytest.raises(SecateursError, match="the .mlp-explaining. adapter cannot take the model at .*: never loads folders"):
        secateurs.load(tmp_path, adapter="mlp-explaining", manager=optional_manager)


def test_a_budgeted_load_uses_load_within_and_refuses_adapters_without_it(optional_manager, tmp_path):
    budget = Budget("1MiB")
    with pytest.raises(SecateursError, match="the 'mlp-explaining' adapter cannot take .* within max_memory: never loads"):
        secateurs.load(tmp_path, adapter="mlp-explaining", manager=optional_manager, budget=budget)
    with pytest.raises(SecateursError, match=r"mlp-stack.* cannot load within max_memory \(no streaming loader"):
        secateurs.load(tmp_path, adapter="mlp-stack", manager=optional_manager, budget=budget)
