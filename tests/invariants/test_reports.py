"""Report invariants: the parameters a structured run reports as kept are the parameters
the removed model really has (each entry counted once), for zeroing and removing alike;
groups whose sparsity rounds to no component are reported, never silent."""

from __future__ import annotations

import pytest
import torch

from secateurs.errors import SecateursError
from secateurs.pipeline import PruneSpec, prune_model
from secateurs.testing import quiet_spec

from tf_models import loaded_tiny
from timm_models import tiny

CASES = [("timm", "vgg", "channels"), ("timm", "vgg_nobn", "channels"), ("timm", "resnet", "channels"),
         ("timm", "bottleneck", "channels"), ("timm", "vit", "heads"), ("timm", "vit", "neurons"),
         ("tf", "bert", "heads"), ("tf", "bert", "neurons"), ("tf", "llama", "heads"), ("tf", "llama", "neurons")]


def _loaded(zoo: str, family: str):
    return tiny(family) if zoo == "timm" else loaded_tiny(family)


def _spec(applier: str, kind: str, sparsity: float) -> PruneSpec:
    return quiet_spec(applier, kind, sparsity=sparsity)


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(("zoo", "family", "kind"), CASES)
def test_params_kept_is_what_the_removed_model_has(zoo, family, kind):
    zeroed, removed = _loaded(zoo, family), _loaded(zoo, family)
    by_zero = prune_model(zeroed, _spec("zero", kind, 0.5))
    by_remove = prune_model(removed, _spec("remove", kind, 0.5))
    assert by_remove.params_kept == _n_params(removed.model) < by_remove.params_total
    assert by_zero.params_kept == by_remove.params_kept


def test_groups_rounding_to_no_component_warn_with_the_rate_that_removes_one():
    loaded = tiny("vgg")  # channel groups of several sizes: 25 % removes none of the smallest
    sizes = {g.size for b in loaded.adapter.blocks(loaded.model) for g in b.groups}
    sparsity = 1.5 / max(sizes)
    assert min(sizes) * sparsity < 1 <= max(sizes) * sparsity
    with pytest.warns(UserWarning, match=r"groups lose no component.*at least"):
        result = prune_model(loaded, _spec("zero", "channels", sparsity))
    assert result.params_pruned > 0


def test_a_run_that_would_remove_no_component_is_refused():
    loaded = loaded_tiny("bert")  # 4 heads per layer: 20 % rounds down to 0 heads
    with pytest.raises(SecateursError, match=r"nothing was pruned.*at least 0\.25 removes one of 4"):
        prune_model(loaded, _spec("zero", "heads", 0.2))
