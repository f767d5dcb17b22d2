"""Assertions a plugin author runs on a part: it satisfies its protocol and works in the
real pipeline (``secateurs.testing.toy``'s tiny model by default, or any model you pass).

Each ``check_*`` raises ``AssertionError`` saying what is wrong, and returns the run's
``PruneResult`` for further assertions.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import torch

from secateurs.pipeline import PruneSpec, dense_scores, prune_model
from secateurs.plugins import PluginManager, get_manager
from secateurs.protocols import (
    OPTIONAL,
    UNSTRUCTURED,
    Allocator,
    Applier,
    BlockContext,
    LoadedModel,
    RankingApplier,
    Scorer,
    StructuredScorer,
    missing_members,
)
from secateurs.testing.toy import GaussianBatches, tiny_model
from secateurs.masks import row_ranks
from secateurs.types import Group, PruneResult, Unit, UnitAllocation


def quiet_spec(
    applier: str = "zero",
    granularity: str = UNSTRUCTURED,
    *,
    scorer: str = "magnitude",
    sparsity: float = 0.5,
    allocator: str = "uniform",
    calibration: Sequence[Any] | None = None,
    applier_params: dict[str, Any] | None = None,
    allocator_params: dict[str, Any] | None = None,
    manager: PluginManager | None = None,
) -> PruneSpec:
    """A pruning run of registered parts (from ``manager``, default: the installed
    plugins) that shows no progress bars."""
    m = manager or get_manager()
    return PruneSpec(
        scorer=m.scorers.create(scorer),
        allocator=m.allocators.create(allocator, **(allocator_params or {})),
        applier=m.appliers.create(applier, **(applier_params or {})),
        sparsity=sparsity,
        granularity=granularity,
        calibration=None if calibration is None else list(calibration),
        progress=False,
    )


def assert_implements(part: object, protocol: type) -> None:
    """``part`` has every member of ``protocol`` (naming the missing ones), and every
    method it has of ``protocol`` or of its optional protocols (``protocols.OPTIONAL``:
    what the pipeline calls when present) is callable."""
    missing = missing_members(part, protocol)
    assert not missing, f"{type(part).__name__} is no {protocol.__name__}: it lacks {', '.join(missing)}"
    for declared in (protocol, *OPTIONAL.get(protocol, ())):
        for name, member in vars(declared).items():
            if callable(member) and not name.startswith("_") and hasattr(part, name):
                assert callable(inspect.getattr_static(part, name)), (
                    f"{type(part).__name__}.{name} is not callable, but {declared.__name__} declares it a method"
                )


@attrs.frozen
class Where:
    """What a check runs on: ``loaded`` (default: ``tiny_model()``), its ``calibration``
    batches (default: ``GaussianBatches``), the run's ``granularity`` and ``sparsity``,
    and a ``reference`` lookup (parameter name → tensor) for parts that need one."""

    loaded: LoadedModel | None = None
    calibration: Sequence[Any] | None = None
    granularity: str = UNSTRUCTURED
    sparsity: float = 0.5
    reference: Callable[[str], torch.Tensor] | None = None

    def run(self, scorer: Any, allocator: Any, applier: Any) -> tuple[LoadedModel, PruneSpec]:
        """The model and the run of these parts on it (nothing has run yet)."""
        loaded = self.loaded if self.loaded is not None else tiny_model()
        batches = list(self.calibration) if self.calibration is not None else GaussianBatches().batches(loaded)
        m = get_manager()
        spec = PruneSpec(
            scorer=m.scorers.create(scorer) if isinstance(scorer, str) else scorer,
            allocator=m.allocators.create(allocator) if isinstance(allocator, str) else allocator,
            applier=m.appliers.create(applier) if isinstance(applier, str) else applier,
            sparsity=self.sparsity,
            granularity=self.granularity,
            calibration=batches,
            reference=self.reference,
            progress=False,
        )
        return loaded, spec


def _expected_shape(target: Unit | Group) -> tuple[int, ...]:
    return (target.size,) if isinstance(target, Group) else tuple(target.weight.shape)


def _device(target: Unit | Group) -> torch.device:
    return (target.slices[0].tensor if isinstance(target, Group) else target.weight).device


def check_scorer(scorer: Scorer, where: Where = Where(), *, applier: str = "zero") -> PruneResult:
    """``scorer`` satisfies ``Scorer`` (and ``StructuredScorer`` for a structured
    granularity); on the dense model every target gets a floating, finite score of the
    target's shape (``[size]`` for a group) on the target's device; and a run with the
    uniform allocator and ``applier`` reaches the sparsity."""
    assert_implements(scorer, Scorer)
    granularity = where.granularity
    if granularity != UNSTRUCTURED:
        assert_implements(scorer, StructuredScorer)
    loaded, spec = where.run(scorer, "uniform", applier)
    if not scorer.selects:
        scores = dense_scores(loaded, spec, to_cpu=False)
        blocks = loaded.adapter.blocks(loaded.model)
        targets = [t for b in blocks for t in b.targets(granularity)]
        assert targets, f"the model has no {granularity!r} targets to score"
        for target in targets:
            score = scores.get(target.name)
            assert score is not None, f"no score for {target.name}"
            assert tuple(score.shape) == _expected_shape(target), (
                f"score of {target.name} has shape {tuple(score.shape)}, expected {_expected_shape(target)}"
            )
            assert score.is_floating_point(), f"score of {target.name} is {score.dtype}, not floating point"
            assert score.device == _device(target), f"score of {target.name} is on {score.device}"
            assert bool(torch.isfinite(score).all()), f"score of {target.name} is not finite"
    result = prune_model(loaded, spec)
    _assert_sparsity(result, where)
    return result


def check_allocator(
    allocator: Allocator, where: Where = Where(), *, scorer: str = "wanda", tolerance: float = 0.05
) -> PruneResult:
    """``allocator`` satisfies ``Allocator``; a run with the registered ``scorer`` and the
    zero applier gives every target a sparsity in [0, 1) and prunes the sparsity of the
    targets' entries within ``tolerance``."""
    assert_implements(allocator, Allocator)
    loaded, spec = where.run(scorer, allocator, "zero")
    result = prune_model(loaded, spec)
    for report in result.units:
        assert 0.0 <= report.target_sparsity < 1.0, f"{report.name}: target sparsity {report.target_sparsity}"
    _assert_sparsity(result, where, tolerance)
    return result


def check_applier(applier: Applier, where: Where = Where(), *, scorer: str = "magnitude") -> PruneResult:
    """``applier`` satisfies ``Applier``; a ``RankingApplier`` gives the same masks and
    weights from ranks as from scores (tied scores, per-row keep counts); a run with the
    registered ``scorer`` and the uniform allocator reaches the sparsity."""
    assert_implements(applier, Applier)
    loaded, spec = where.run(scorer, "uniform", applier)
    if isinstance(applier, RankingApplier) and applier.ranks_rows and where.granularity == UNSTRUCTURED:
        _check_ranked(applier, loaded)
    result = prune_model(loaded, spec)
    _assert_sparsity(result, where)
    return result


def _check_ranked(applier: RankingApplier, loaded: LoadedModel) -> None:
    block = loaded.adapter.blocks(loaded.model)[0]
    gen = torch.Generator().manual_seed(0)
    scores = {u.name: torch.randint(0, 4, u.weight.shape, generator=gen).float() for u in block.units}  # many ties
    allocation = {
        u.name: UnitAllocation(0.5, rows=torch.rand(u.rows, generator=gen, dtype=torch.float64) * 0.9)
        for u in block.units
    }
    ranks = {u.name: row_ranks(u.as_rows(scores[u.name])) for u in block.units}
    ctx = BlockContext(block=block, stats={}, comparison="row", generator=gen, recollect=lambda units: {})
    saved = {u.name: u.weight.detach().clone() for u in block.units}
    by_scores = applier.apply(block, scores, allocation, ctx)
    pruned = {u.name: u.weight.detach().clone() for u in block.units}
    with torch.no_grad():
        for u in block.units:
            u.weight.copy_(saved[u.name])
    by_ranks = applier.apply_ranked(block, ranks, allocation, ctx)
    for u in block.units:
        assert torch.equal(by_scores[u.name], by_ranks[u.name]), f"apply_ranked's mask of {u.name} differs from apply's"
        assert torch.equal(u.weight, pruned[u.name]), f"apply_ranked pruned {u.name}'s weights differently from apply"
        with torch.no_grad():
            u.weight.copy_(saved[u.name])


def _assert_sparsity(result: PruneResult, where: Where, tolerance: float = 0.02) -> None:
    assert result.units, f"nothing was pruned at granularity {where.granularity!r}"
    assert abs(result.sparsity - where.sparsity) <= tolerance, (
        f"the run pruned {result.sparsity:.4f} of the targets' entries, not {where.sparsity} (± {tolerance})"
    )
