"""A recipe-driven KEN run through the core pipeline equals the one-call API."""

import torch

from secateurs.run import prune
from secateurs_ken.api import ken_state
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
