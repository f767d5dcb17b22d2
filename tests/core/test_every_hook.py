"""A third-party plugin that implements every hook runs a whole recipe with its own parts."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import secateurs
from secateurs.plugins import PluginManager
from toy_plugin import MLPStack, ToyPlugin


@pytest.fixture
def manager(tmp_path):
    manager = PluginManager(load_entry_points=False)
    manager.register(ToyPlugin(tmp_path / "packaged"), name="toy", distribution="secateurs-toy")
    try:
        yield manager
    finally:
        manager.unregister("toy")


def test_every_hook_of_the_toy_plugin_registers(manager):
    registered = manager.registered["toy"]
    assert registered == {
        "adapter": ["mlp-stack"],
        "scorer": ["input-weighted"],
        "allocator": ["ramp"],
        "applier": ["zero-and-count"],
        "exporter": ["summary"],
        "calibration": ["gaussian"],
        "evaluator": ["output-norm"],
        "model": ["toy-mlp"],
    }


def test_a_recipe_made_only_of_plugin_parts_runs_end_to_end(manager, tmp_path):
    recipe = {
        "model": "toy-mlp",  # secateurs_register_models: a packaged model by name
        "output": str(tmp_path / "out"),
        "sparsity": 0.5,
        "calibration": {"name": "gaussian", "nsamples": 8},  # secateurs_register_calibration_sources
        "scorer": "input-weighted",  # secateurs_register_scorers
        "allocator": {"name": "ramp", "delta": 0.2},  # secateurs_register_allocators
        "applier": "zero-and-count",  # secateurs_register_appliers
        "exporters": ["safetensors", "summary", "report"],  # secateurs_register_exporters
        "evaluate": "output-norm",  # secateurs_register_evaluators
    }
    outcome = secateurs.prune(recipe, manager=manager, progress=False)
    ratios = [u.sparsity for u in outcome.result.units]
    assert ratios == pytest.approx([11 / 16, 8 / 16, 4 / 16])  # floor(16 * [0.7, 0.5, 0.3]) of 16
    assert outcome.before["output_norm"] != outcome.after["output_norm"]
    out = tmp_path / "out"
    assert (out / "summary.txt").read_text() == f"sparsity {outcome.result.sparsity:.4f}\n"
    report = json.loads((out / "report.json").read_text())
    assert report["records"]["ramp"] == {"blocks": 3}
    reloaded = secateurs.load(out, manager=manager)  # secateurs_register_adapters: load + save
    assert isinstance(reloaded.model, MLPStack)
    for a, b in zip(reloaded.model.parameters(), outcome.loaded.model.parameters(), strict=True):
        assert torch.equal(a, b)


def test_plugin_commands_are_added_to_the_cli(manager):
    import click

    @click.group()
    def cli() -> None:
        pass

    manager.add_commands(cli)  # secateurs_register_commands
    result = CliRunner().invoke(cli, ["toy-hello"])
    assert result.exit_code == 0 and result.output == "hello from toy\n"
