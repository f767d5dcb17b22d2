"""secateurs.testing: every registered part passes its check on the tiny model, the
checks fail on broken parts, and the tiny plugin runs recipes through the CLI."""

from __future__ import annotations

import json
from typing import ClassVar

import attrs
import pytest
import torch
from secateurs.builtins.appliers import ZeroApplier
from secateurs.plugins import get_manager
from secateurs.protocols import LAYER_COMPARISON, NEEDS_REFERENCE, Allocator, Scorer, StructuredScorer
from secateurs.run import prune
from secateurs.testing import (
    GaussianBatches,
    TinyPlugin,
    Where,
    assert_implements,
    check_allocator,
    check_applier,
    check_scorer,
    propagation_error,
    tiny_model,
)

MANAGER = get_manager()
#: parts that need a pre-trained reference model, checked with the dense weights as reference
NEEDS_REFERENCE_MODEL = {"restore", "dare"}
#: scorers that explain an image classifier (labelled image batches): checked in tests/lrp
ATTRIBUTION = {"lrp", "taylor"}
#: scorers of structured components only (they refuse unstructured runs): checked at neurons
STRUCTURED_ONLY = {"activation"}


def _reference():
    tensors = {k: v.clone() for k, v in tiny_model(seed=1).model.state_dict().items()}
    return tensors.__getitem__


@pytest.mark.parametrize("name", MANAGER.scorers.names())
def test_every_scorer_passes_its_check(name):
    scorer = MANAGER.scorers.create(name)
    if name in ATTRIBUTION:
        pytest.skip(f"{name} explains image classifiers; tests/lrp/test_scorers.py checks it")
    if scorer.selects:
        pytest.skip(f"{name} selects given keep counts; check_allocator('ken-k') covers it")
    if scorer.comparison == LAYER_COMPARISON:
        pytest.skip(f"{name} scores whole layers; tests/transformers/test_tf_layers.py checks it")
    where = Where(reference=_reference() if NEEDS_REFERENCE in scorer.requires else None)
    if name not in STRUCTURED_ONLY:
        check_scorer(scorer, where)
    if isinstance(scorer, StructuredScorer):
        check_scorer(MANAGER.scorers.create(name), attrs.evolve(where, granularity="neurons"), applier="remove")


@pytest.mark.parametrize("name", MANAGER.allocators.names())
def test_every_allocator_passes_its_check(name):
    scorer = "ken" if name == "ken-k" else "wanda"
    where = Where(reference=_reference() if name == "ken-k" else None)
    check_allocator(MANAGER.allocators.create(name), where, scorer=scorer)


@pytest.mark.parametrize("name", MANAGER.appliers.names())
def test_every_applier_passes_its_check(name):
    where = Where(
        granularity="neurons" if name == "remove" else "unstructured",
        reference=_reference() if name in NEEDS_REFERENCE_MODEL else None,
    )
    check_applier(MANAGER.appliers.create(name), where, scorer="delta-magnitude" if where.reference else "magnitude")


def test_the_tiny_adapter_propagates_exactly():
    loaded = tiny_model()
    assert propagation_error(loaded, GaussianBatches().batches(loaded)) == 0.0


@attrs.frozen
class WrongShape:
    requires: ClassVar[frozenset[str]] = frozenset()
    comparison: ClassVar[str] = "row"
    selects: ClassVar[bool] = False

    def score(self, unit, ctx) -> torch.Tensor:
        return unit.weight.detach().abs().flatten()


@attrs.frozen
class HalfStructured(WrongShape):
    def score(self, unit, ctx) -> torch.Tensor:
        return unit.weight.detach().abs()

    def score_group(self, group, ctx) -> torch.Tensor:
        return torch.ones(group.size + 1)


@attrs.frozen
class Greedy:
    """Lacks ``needs_scores``."""

    def prepare(self, session, target) -> None: ...

    def allocate(self, block, scores, target):
        return {}


def test_checks_name_what_is_wrong():
    with pytest.raises(AssertionError, match=r"blocks.0.up has shape \(512,\), expected \(32, 16\)"):
        check_scorer(WrongShape())
    with pytest.raises(AssertionError, match=r"blocks.0.neurons has shape \(33,\), expected \(32,\)"):
        check_scorer(HalfStructured(), Where(granularity="neurons"))
    with pytest.raises(AssertionError, match="is no Allocator: it lacks needs_scores"):
        check_allocator(Greedy())
    assert isinstance(HalfStructured(), Scorer) and not isinstance(Greedy(), Allocator)
    with pytest.raises(AssertionError, match="apply_ranked's mask of blocks.0.up differs from apply's"):
        check_applier(RanksUpsideDown())


@attrs.frozen
class RanksUpsideDown(ZeroApplier):
    """``apply_ranked`` keeps the lowest-ranked entries: not ``apply``'s masks."""

    def apply_ranked(self, block, ranks, allocation, ctx):
        return super().apply_ranked(block, {n: r.shape[1] - 1 - r for n, r in ranks.items()}, allocation, ctx)


def test_an_optional_member_that_is_no_method_is_named():
    @attrs.frozen
    class Recorded(WrongShape):
        records: ClassVar[dict] = {}

    assert_implements(Recorded(), Scorer)  # Recording's member is data

    class PrepareIsNone(WrongShape):
        prepare = None

    with pytest.raises(AssertionError, match="PrepareIsNone.prepare is not callable, but PreparingScorer"):
        assert_implements(PrepareIsNone(), Scorer)


def test_tiny_plugin_runs_a_recipe_and_reloads(tmp_path):
    manager = get_manager()
    manager.register(TinyPlugin(), "tiny")
    try:
        model_dir = tmp_path / "tiny"
        model_dir.mkdir()
        loaded = tiny_model()
        loaded.adapter.save(loaded, model_dir)
        recipe = {
            "model": str(model_dir),
            "scorer": "wanda",
            "sparsity": 0.5,
            "calibration": "gaussian",
            "evaluate": "output-agreement",
            "output": str(tmp_path / "out"),
        }
        outcome = prune(recipe, progress=False, manager=manager)
        assert outcome.before == {"agreement": 1.0} and outcome.after["agreement"] < 1.0
        report = json.loads((tmp_path / "out" / "report.json").read_text())
        assert report["sparsity"] == pytest.approx(0.5)
    finally:
        manager.unregister("tiny")
