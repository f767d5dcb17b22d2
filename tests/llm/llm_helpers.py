"""Shared by the LLM tests: a tiny Llama with its adapter, and a Wanda-scored spec for it."""

from __future__ import annotations

from typing import Any

from lm_models import tiny_causal_lm, token_batches
from secateurs.pipeline import PruneSpec
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel
from secateurs_transformers.llama import LlamaFamilyAdapter


def tiny_llama(layers: int = 2) -> LoadedModel:
    return LoadedModel(tiny_causal_lm("llama", layers=layers), LlamaFamilyAdapter(), "tiny")


def wanda_spec(
    allocator: str = "uniform", applier: Any = "zero", *, scorer: str = "wanda", sparsity: float = 0.6, **params
) -> PruneSpec:
    """A spec calibrated on 4 random 32-token batches; ``applier``: a name or an applier
    object; ``params`` go to the allocator."""
    manager = get_manager()
    return PruneSpec(
        scorer=manager.scorers.create(scorer),
        allocator=manager.allocators.create(allocator, **params),
        applier=manager.appliers.create(applier) if isinstance(applier, str) else applier,
        sparsity=sparsity,
        calibration=token_batches(4, 32),
        progress=False,
    )
