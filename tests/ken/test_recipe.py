"""A recipe-driven KEN run through the core pipeline equals the one-call API."""

import pytest
import torch

from secateurs.errors import SecateursError
from secateurs.run import prune
from secateurs_ken.api import ken_state
from secateurs_ken.parts import KenKAllocator
from secateurs_ken.delta import load_ken_delta


def test_recipe_run_matches_api(pair, tmp_path):
    pre, ft = pair
    pre.save_pretrained(tmp_path / "pre")
    ft.save_pretrained(tmp_path / "ft")
    recipe = {
        "model": str(tmp_path / "ft"), "reference_model": str(tmp_path / "pre"),
        "output": str(tmp_path / "out"), "sparsity": 0.0, "targets": ["*"],
        "scorer": "ken", "allocator": {"name": "ken-k", "k": 6}, "applier": "restore",
        "exporters": ["safetensors", "report", "ken-delta"],
    }
    outcome = prune(recipe, progress=False)
    expected, _ = ken_state(pre.state_dict(), ft.state_dict(), k=6)
    got = outcome.loaded.model.state_dict()
    for name, t in expected.items():
        assert torch.equal(got[name], t), name
    rebuilt = load_ken_delta(pre.state_dict(), outcome.output / "ken-delta.safetensors")
    assert all(torch.equal(rebuilt[n], t) for n, t in expected.items())
    assert any(p.suffix == ".safetensors" for p in outcome.output.iterdir())


@pytest.mark.parametrize(
    "params, sparsity, msg",
    [({"k": 6}, 0.5, "contradicts k = 6"), ({"fraction": 0.5}, 0.2, "contradicts fraction = 0.5"),
     ({"reduction": 0.3}, 0.5, "contradicts reduction = 0.3"), ({}, 0.0, "needs k, fraction or reduction")],
)
def test_ken_k_refuses_a_sparsity_it_would_ignore(params, sparsity, msg):
    with pytest.raises(SecateursError, match=msg):
        KenKAllocator(**params).solve([(4, 10)], sparsity)


@pytest.mark.parametrize("params, sparsity", [({}, 0.3), ({"reduction": 0.3}, 0.3), ({"reduction": 0.3}, 0.0)])
def test_ken_k_reaches_the_reduction_or_the_recipe_sparsity(params, sparsity):
    alloc = KenKAllocator(**params)
    alloc.solve([(4, 10)], sparsity)
    assert alloc.keep(10) == 7 and alloc.records == {"ken_k": 7}  # the largest k removing >= 30%


def test_ken_k_takes_one_keep_count_parameter():
    with pytest.raises(ValueError, match="not several"):
        KenKAllocator(k=3, fraction=0.5)
