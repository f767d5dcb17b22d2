"""The ``neuroal`` allocator: NeuroAL's block step and row step on top of any base method.

``prepare`` searches on ``search_samples`` calibration samples (cut to at most
``search_seqlen`` tokens) through the pipeline's session (``search.Search``):

* block step: every ``λ`` of the block grid gives a linear ramp of block sparsities
  (``ratios.block_ramp``); the ``λ`` with the lowest alignment score wins (ties: the
  smallest ``λ``);
* row step (when it applies, see ``row_step``): for each linear of every block but the
  last, per-row sparsity from the winning candidate's alignment vector of the linear that
  consumes its outputs (``consumers``); producers of a consumer whose rows do not match
  its inputs one to one (grouped-query attention: query, key and value under the attention output) keep
  uniform rows. Every ``λ`` of the row grid is scored the same way; ``λ = 0`` (uniform
  rows) is the block step's winner and is not evaluated again.

``allocate`` then hands the chosen ratios to the normal pruning pass over the full
calibration set. Units get plain ratios (the base applier works as it does alone), except
those the row step changes: their rows get integer counts summing exactly to what the
plain ratio prunes (``rows · floor(width · s)``), so the row step never changes a unit's
or a block's sparsity.

``records["neuroal"]`` holds the grids, every candidate's score (and per-block scores),
the chosen ``λ``s, the block and row sparsities and the search's profile.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import attrs
import torch
from secateurs.errors import SecateursError
from secateurs.protocols import STAT_HESSIAN, UNSTRUCTURED, SearchSession
from secateurs.types import Allocation, Block, RunPlan, Unit, UnitAllocation
from secateurs.validators import optional, positive_int

from secateurs_neuroal.batches import search_batches
from secateurs_neuroal.ratios import (
    HIGH,
    LOW,
    ROW_GRID,
    block_grid,
    block_ramp,
    row_counts,
    row_ratios,
    unit_total,
)
from secateurs_neuroal.search import Outcome, Plan, Search

def _grid(value: Sequence[float] | None) -> tuple[float, ...] | None:
    if value is None:
        return None
    grid = tuple(float(v) for v in value)
    if not grid or any(not 0.0 <= v < 1.0 for v in grid):
        raise ValueError(f"a λ grid must be a non-empty list of numbers in [0, 1), got {list(value)!r}")
    return grid


def _clip(value: Sequence[float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not 0.0 <= lo < hi < 1.0:
        raise ValueError(f"clip must be [low, high] with 0 <= low < high < 1, got {list(value)!r}")
    return lo, hi


def best(grid: Sequence[float], scores: Sequence[float]) -> int:
    """Index of the lowest score; ties go to the smallest λ."""
    return min(range(len(grid)), key=lambda i: (scores[i], grid[i]))


@attrs.define
class NeuroALAllocator:
    """NeuroAL (module docstring). Parameters (recipe ``[allocator]`` keys):

    ``block_grid`` / ``row_grid``: λ values searched (default: the paper's; 0.25 is
    dropped from the block grid at targets ≥ 0.8). ``search_samples``: calibration
    samples the search runs on (8). ``search_seqlen``: cut them to at most this many
    tokens (default: full length). ``row_step``: ``true`` / ``false`` / unset; unset runs it when
    the published method has one: the applier honours per-row ratios and selects by the
    scorer's scores (not SparseGPT-style appliers that choose masks from a Hessian).
    ``consumers``: role → consuming role, overriding what the adapter declares (default:
    ``Block.consumers()``, from the adapter's stages; the last stage's outputs feed the
    next block, whose alignment is not used: uniform rows). ``clip``: bounds of
    block and row sparsity ([0.01, 0.99]). ``max_streams``: candidate streams per dense
    forward (4: bounds the batch a block sees, attention scores grow with it).
    """

    block_grid: tuple[float, ...] | None = attrs.field(default=None, converter=_grid)
    row_grid: tuple[float, ...] = attrs.field(default=ROW_GRID, converter=_grid)
    search_samples: int = attrs.field(default=8, validator=positive_int)
    search_seqlen: int | None = attrs.field(default=None, validator=optional(positive_int))
    row_step: bool | None = None
    consumers: Mapping[str, str] | None = attrs.field(default=None, converter=attrs.converters.optional(dict))
    clip: tuple[float, float] = attrs.field(default=(LOW, HIGH), converter=_clip)
    max_streams: int | None = attrs.field(default=4, validator=optional(positive_int))

    needs_scores: ClassVar[bool] = False
    records: dict[str, Any] = attrs.field(factory=dict, init=False)
    _plan: Plan | None = attrs.field(default=None, init=False)

    # -- the protocol ------------------------------------------------------------------
    def prepare(self, session: SearchSession, target: float) -> None:
        started = time.perf_counter()
        plan = RunPlan(target, session.granularity, session.scorer, session.applier, bool(session.calibration))
        self.check(plan)
        run_rows, skipped = self._row_step_applies(plan)
        batches, taken = search_batches(session.calibration, self.search_samples, self.search_seqlen)
        search = Search(session, session.capture(batches), max_streams=self.max_streams)

        n_blocks, lo_hi = len(session.blocks), self.clip
        grid_b = block_grid(target, self.block_grid)
        ramps = [block_ramp(target, lam, n_blocks, *lo_hi) for lam in grid_b]
        block_out = search.evaluate([self._block_plan(r) for r in ramps], keep_vectors=run_rows)
        i_b = best(grid_b, [o.score for o in block_out])
        chosen, ramp = block_out[i_b], ramps[i_b]
        self._plan = self._block_plan(ramp)
        rows: dict[str, torch.Tensor] = {}
        record: dict[str, Any] = {
            "target": target,
            "blocks": n_blocks,
            "clip": list(lo_hi),
            "block_step": _step_record(grid_b, block_out, i_b),
        }
        if run_rows:
            grid_r = self.row_grid
            candidates = [self._row_ratios(session.blocks, ramp, chosen, lam) for lam in grid_r]
            fresh = [i for i, lam in enumerate(grid_r) if lam != 0]
            evaluated = search.evaluate([self._block_plan(ramp, candidates[i]) for i in fresh])
            row_out = [chosen] * len(grid_r)
            for i, outcome in zip(fresh, evaluated, strict=True):
                row_out[i] = outcome
            i_r = best(grid_r, [o.score for o in row_out])
            rows = candidates[i_r]
            self._plan = self._block_plan(ramp, rows)
            record["row_step"] = _step_record(grid_r, row_out, i_r)
        else:
            record["row_step"] = {"skipped": skipped}
            warnings.warn(f"neuroal: row step skipped: {skipped}", stacklevel=2)
        record["block_ratio"] = ramp.tolist()
        record["block_sparsity"] = [self._block_sparsity(b) for b in session.blocks]
        record["row_sparsity"] = self._row_record(session, rows)
        record["search"] = {
            "samples": taken,
            "seqlen": self.search_seqlen,
            "seconds": time.perf_counter() - started,
            **search.profile.to_dict(),
        }
        self.records = {"neuroal": record}

    def allocate(self, block: Block, scores: Mapping[str, torch.Tensor] | None, target: float) -> Allocation:
        if self._plan is None:
            raise SecateursError("neuroal: allocate() called before prepare()")
        return self._plan(block)

    # -- what applies --------------------------------------------------------------------
    def check(self, plan: RunPlan) -> None:
        """Refuse, before any work, a run NeuroAL cannot serve (``CheckingAllocator``):
        structured granularity, no calibration data, ``row_step = true`` where rows cannot
        be allocated."""
        if plan.granularity != UNSTRUCTURED:
            raise SecateursError(
                f"neuroal allocates unstructured sparsity; granularity {plan.granularity!r} is not supported"
            )
        if not plan.calibrated:
            raise SecateursError(
                "neuroal measures activations on calibration data, even for data-free scorers; "
                "add a [calibration] table to the recipe"
            )
        self._row_step_applies(plan)

    def _row_step_applies(self, plan: RunPlan) -> tuple[bool, str]:
        applier, scorer = plan.applier, plan.scorer
        reason = ""
        if not applier.row_ratios:
            reason = f"the applier {type(applier).__name__} does not honour per-row ratios"
        elif scorer.comparison != "row":
            reason = f"the scorer compares per {scorer.comparison!r}; per-row ratios need comparison = \"row\""
        if reason:
            if self.row_step:
                raise SecateursError(f"neuroal: row_step = true, but {reason}")
            return False, reason
        if self.row_step is None and STAT_HESSIAN in applier.requires:
            return False, (
                f"the applier {type(applier).__name__} chooses masks from the Hessian (SparseGPT-style); "
                "the published NeuroAL has no row step for it (set row_step = true to force it)"
            )
        if self.row_step is False:
            return False, "row_step = false in the recipe"
        return True, ""

    # -- plans -------------------------------------------------------------------------
    def _unit(self, unit: Unit, sparsity: float, ratios: torch.Tensor | None = None) -> UnitAllocation:
        """``sparsity`` for the unit, or per-row ``ratios`` turned into exact counts that
        prune as many entries as ``sparsity`` does (every row ``floor(width · s)``)."""
        if ratios is None:
            return UnitAllocation(float(sparsity))
        rows, width = unit.rows, unit.row_width
        counts = row_counts(ratios, width, unit_total(rows, width, float(sparsity), *self.clip), *self.clip)
        return UnitAllocation(float(counts.sum()) / (rows * width), rows=counts.double() / width)

    def _block_plan(self, ramp: torch.Tensor, rows: Mapping[str, torch.Tensor] | None = None) -> Plan:
        """Block ``i`` at ``ramp[i]``; units named in ``rows`` with those per-row ratios."""
        rows = rows or {}
        cache: dict[int, Allocation] = {}

        def plan(block: Block) -> Allocation:
            if block.index not in cache:
                s = float(ramp[block.index])
                cache[block.index] = {u.name: self._unit(u, s, rows.get(u.name)) for u in block.units}
            return cache[block.index]

        return plan

    def _row_ratios(self, blocks: Sequence[Block], ramp: torch.Tensor, chosen: Outcome, lam: float) -> dict[str, torch.Tensor]:
        """Per-row sparsity of every unit with informative consumer alignment (others: uniform)."""
        out: dict[str, torch.Tensor] = {}
        for block in blocks[:-1]:
            producers: dict[str, list[Unit]] = {}
            for unit, consumer in self._consumers(block):
                producers.setdefault(consumer.name, []).append(unit)
            for consumer_name, units in producers.items():
                v = chosen.vectors[consumer_name]
                if any(u.rows != v.numel() for u in units):  # e.g. GQA: key/value rows ≠ the attention output's inputs
                    continue
                ratios = row_ratios(v, float(ramp[block.index]), lam, *self.clip)
                if ratios is not None:
                    out.update(dict.fromkeys((u.name for u in units), ratios))
        return out

    def _consumers(self, block: Block) -> list[tuple[Unit, Unit]]:
        """``(producer, consumer)`` units of ``block``: the recipe's ``consumers`` (by role)
        when given, else what the adapter declares (``Block.consumers``)."""
        if self.consumers is not None:
            by_role = {u.role: u for u in block.units}
            pairs = [(u, by_role.get(self.consumers.get(u.role, ""))) for u in block.units]
        else:
            by_name, links = {u.name: u for u in block.units}, block.consumers()
            pairs = [(u, by_name.get(links.get(u.name, ""))) for u in block.units]
        return [(u, c) for u, c in pairs if c is not None]

    # -- records -----------------------------------------------------------------------
    def _block_sparsity(self, block: Block) -> float:
        allocation = self._plan(block)
        entries = sum(u.weight.numel() for u in block.units)
        return sum(allocation[u.name].sparsity * u.weight.numel() for u in block.units) / entries

    def _row_record(self, session: SearchSession, rows: Mapping[str, torch.Tensor]) -> dict[str, list[float]]:
        """Final per-row sparsity of the units the row step changed."""
        out = {}
        for block in session.blocks:
            allocation = self._plan(block)
            for unit in block.units:
                if unit.name in rows:
                    out[unit.name] = [round(x, 5) for x in allocation[unit.name].rows.tolist()]
        return out


def _step_record(grid: Sequence[float], outcomes: Sequence[Outcome], chosen: int) -> dict[str, Any]:
    return {
        "grid": list(grid),
        "scores": [o.score for o in outcomes],
        "block_scores": [o.blocks for o in outcomes],
        "lambda": grid[chosen],
        "index": chosen,
    }
