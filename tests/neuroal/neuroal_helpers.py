"""NeuroAL test helper: a tiny pruning run through the real pipeline (``tests/conftest.py``
already runs every test on one torch thread)."""

from __future__ import annotations

import warnings

from lm_models import tiny_causal_lm, token_batches
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.plugins import PluginManager, get_manager
from secateurs.protocols import LoadedModel


def run_neuroal(
    scorer: str = "wanda",
    applier: str = "zero",
    *,
    sparsity: float = 0.6,
    scorer_params: dict | None = None,
    manager: PluginManager | None = None,
    layers: int = 3,
    hidden: int = 256,
    family: str = "llama",
    batch_size: int = 1,
    **allocator_params,
):
    """Prune a tiny random decoder with ``neuroal``; return (result, model, warnings)."""
    manager = manager or get_manager()
    model = tiny_causal_lm(family, layers=layers, hidden=hidden)
    adapter = manager.adapters.create("llama")
    allocator_params.setdefault("search_samples", 4)
    spec = PruneSpec(
        scorer=manager.scorers.create(scorer, **(scorer_params or {})),
        allocator=manager.allocators.create("neuroal", **allocator_params),
        applier=manager.appliers.create(applier),
        sparsity=sparsity,
        calibration=token_batches(8, 24, batch_size=batch_size),
        progress=False,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = prune_model(LoadedModel(model, adapter, "tiny"), spec)
    return result, model, [str(w.message) for w in caught]
