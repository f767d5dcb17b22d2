"""A plugin author's first plugin, written from the docs alone: a structured scorer and a
searching allocator (a greedy choice between two candidate ratios per block), using only
``secateurs.protocols``, ``secateurs.testing``, ``secateurs.types`` and the public
``secateurs.prune``, registered at run time, run on a tiny BERT and a tiny Llama."""

from __future__ import annotations

from typing import ClassVar

import attrs
import pytest
import torch
import transformers

import secateurs
from secateurs.hookspecs import hookimpl
from secateurs.protocols import Allocator, ScoreContext, SearchSession, StructuredScorer
from secateurs.testing import Where, check_allocator, check_scorer
from secateurs.types import Allocation, Block, Group, UnitAllocation

VOCAB = 64


@attrs.frozen
class ComponentNorm:
    """Structured scorer: a component's score is the L2 norm of all its entries, over
    every slice of its group (``Group``/``ParamSlice`` in docs/plugins.md)."""

    requires: ClassVar[frozenset[str]] = frozenset()
    comparison: ClassVar[str] = "matrix"
    selects: ClassVar[bool] = False

    def score(self, unit, ctx: ScoreContext) -> torch.Tensor:
        return unit.weight.detach().abs()

    def score_group(self, group: Group, ctx: ScoreContext) -> torch.Tensor:
        total = torch.zeros(group.size)
        for s in group.slices:
            part = s.tensor.detach().narrow(s.dim, s.start, s.span).movedim(s.dim, 0)
            total += part.reshape(group.size, -1).float().pow(2).sum(1).cpu()
        return total.sqrt()


@attrs.define
class TwoRatioGreedy:
    """Searching allocator: every block is tried at ``target - delta`` and ``target + delta``
    (on dense inputs, restored after each try); the half of the blocks whose output error
    grows least from the lower to the higher ratio get the higher one."""

    delta: float = 0.2
    needs_scores: ClassVar[bool] = True
    choice: dict[str, float] = attrs.field(factory=dict)
    records: dict = attrs.field(factory=dict)

    def prepare(self, session: SearchSession, target: float) -> None:
        low, high = max(target - self.delta, 0.0), min(target + self.delta, 0.95)
        inputs = session.capture(session.calibration)
        growth = {}
        for block in session.blocks:
            stats, dense = session.collect(block, inputs, keep_outputs=True)
            errors = []
            for ratio in (low, high):
                with session.trial(block):
                    allocation = {t.name: UnitAllocation(ratio) for t in block.targets(session.granularity)}
                    session.prune_block(block, stats, inputs, allocation)
                    pruned = session.run(block, inputs)
                    errors.append(sum(float((p - d).pow(2).sum()) for p, d in zip(pruned.hidden, dense.hidden)))
            growth[block.name] = errors[1] - errors[0]
            inputs = dense
        ranked = sorted(growth, key=growth.__getitem__)
        sparser = set(ranked[: len(ranked) // 2])
        self.choice = {name: high if name in sparser else low for name in growth}
        if len(ranked) % 2:  # odd count: the middle block keeps the target
            self.choice[ranked[len(ranked) // 2]] = target
        self.records = {"two-ratio-greedy": {"growth": growth, "choice": self.choice}}

    def allocate(self, block: Block, scores, target: float) -> Allocation:
        return {name: UnitAllocation(self.choice[block.name]) for name in scores}


class AuthorPlugin:
    @hookimpl
    def secateurs_register_scorers(self, register) -> None:
        register("component-norm", ComponentNorm)

    @hookimpl
    def secateurs_register_allocators(self, register) -> None:
        register("two-ratio-greedy", TwoRatioGreedy)


def _bert() -> torch.nn.Module:
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


def _llama() -> torch.nn.Module:
    config = transformers.LlamaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval()


def _batches() -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    return [{"input_ids": torch.randint(1, VOCAB, (2, 12), generator=gen)} for _ in range(2)]


@pytest.fixture
def manager():
    manager = secateurs.get_manager()
    manager.register(AuthorPlugin(), "author")
    yield manager
    manager.unregister("author")


@pytest.mark.parametrize("family", [_bert, _llama], ids=["bert", "llama"])
def test_the_authors_parts_pass_the_kit(family, manager):
    from secateurs.loading import wrap

    scorer, allocator = manager.scorers.create("component-norm"), manager.allocators.create("two-ratio-greedy")
    assert isinstance(scorer, StructuredScorer) and isinstance(allocator, Allocator)
    for granularity in ("neurons", "heads"):
        check_scorer(scorer, Where(loaded=wrap(family()), calibration=_batches(), granularity=granularity),
                     applier="remove")
    # 64 neurons per block: the two ratios round to whole components that average to the target
    where = Where(loaded=wrap(family()), calibration=_batches(), granularity="neurons")
    check_allocator(allocator, where, scorer="component-norm", tolerance=0.01)


@pytest.mark.parametrize("family", [_bert, _llama], ids=["bert", "llama"])
def test_the_authors_search_runs_from_a_recipe(family, manager):
    model = family()
    recipe = {
        "scorer": "component-norm",
        "allocator": {"name": "two-ratio-greedy", "delta": 0.25},
        "applier": "remove",
        "granularity": "neurons",
        "sparsity": 0.5,
    }
    outcome = secateurs.prune(recipe, model=model, calibration=_batches(), progress=False, manager=manager)
    record = outcome.result.records["two-ratio-greedy"]
    assert sorted(record["choice"].values()) == [0.25, 0.75]  # one block each way
    sparser = min(record["growth"], key=record["growth"].__getitem__)
    assert record["choice"][sparser] == 0.75
    assert outcome.result.sparsity == pytest.approx(0.5)
    assert outcome.result.params_kept == sum(p.numel() for p in model.parameters())  # removed for real
    with torch.no_grad():
        assert torch.isfinite(outcome.loaded.adapter.forward(model, _batches()[0]).last_hidden_state
                              if family is _bert else model(**_batches()[0]).logits).all()
