"""Pruning curves are the core's, for any scorer, and honour every recipe key."""

from __future__ import annotations

import json

import pytest
import torch

from secateurs.curve import curve_setup, pruning_curve
from secateurs.errors import SecateursError
from secateurs.plugins import get_manager
from secateurs.testing import TinyPlugin, tiny_model
from cli_run import run_cli

RATES = (0.0, 0.25, 0.5, 0.75)


@pytest.fixture
def manager():
    manager = get_manager()
    manager.register(TinyPlugin(), "tiny")
    yield manager
    manager.unregister("tiny")


@pytest.fixture
def tiny_dir(tmp_path):
    folder = tmp_path / "tiny"
    folder.mkdir()
    loaded = tiny_model()
    loaded.adapter.save(loaded, folder)
    return folder


def _recipe(model_dir, **keys):
    return {
        "model": str(model_dir),
        "scorer": "magnitude",
        "sparsity": 0.0,
        "calibration": "gaussian",
        "evaluate": "output-agreement",
        **keys,
    }


def _fraction(names, model) -> float:
    sizes = dict((k, v.numel()) for k, v in model.state_dict().items())
    return sum(sizes[n] for n in names) / sum(sizes.values())


def test_curve_of_any_scorer_nests_and_keeps_the_dense_model(manager, tiny_dir):
    setup = curve_setup(_recipe(tiny_dir, scorer="wanda"), manager=manager)
    dense = {k: v.clone() for k, v in setup.loaded.model.state_dict().items()}
    curve = pruning_curve(setup, RATES)
    assert curve.values[0] == 1.0 and curve.values[-1] < 1.0
    unit_weights = [f"blocks.{i}.{n}.weight" for i in range(3) for n in ("up", "down")]
    expected = [r * _fraction(unit_weights, setup.loaded.model) for r in RATES]
    assert list(curve.params_pruned) == pytest.approx(expected, rel=1e-3)
    assert all(torch.equal(v, setup.loaded.model.state_dict()[k]) for k, v in dense.items())


def test_curve_honours_targets_and_exclude(manager, tiny_dir):
    recipe = _recipe(tiny_dir, targets=["blocks.*.weight"], exclude=["blocks.2.*"])
    curve = pruning_curve(curve_setup(recipe, manager=manager), RATES)
    pruned = [f"blocks.{i}.{n}.weight" for i in range(2) for n in ("up", "down")]
    fraction = _fraction(pruned, tiny_model().model)
    assert list(curve.params_pruned) == pytest.approx([r * fraction for r in RATES], rel=1e-3)


def test_curve_honours_reference_model(manager, tiny_dir, tmp_path):
    with pytest.raises(SecateursError, match="reference_model"):
        pruning_curve(curve_setup(_recipe(tiny_dir, scorer="delta-magnitude"), manager=manager), RATES)
    reference = tmp_path / "reference"
    reference.mkdir()
    other = tiny_model(seed=1)
    other.adapter.save(other, reference)
    recipe = _recipe(tiny_dir, scorer="delta-magnitude", reference_model=str(reference))
    assert pruning_curve(curve_setup(recipe, manager=manager), RATES).values[0] == 1.0


def test_curve_under_max_memory_streams_each_rate_and_matches(tiny_lm_dir, text_file):
    pytest.importorskip("accelerate")
    recipe = {
        "model": str(tiny_lm_dir),
        "scorer": "wanda",
        "sparsity": 0.0,
        "calibration": {"name": "text", "corpus": str(text_file), "nsamples": 4, "seqlen": 32},
        "evaluate": {"name": "perplexity", "corpus": str(text_file), "seqlen": 64, "max_windows": 4},
    }
    plain = pruning_curve(curve_setup(recipe), RATES)
    budget = pruning_curve(curve_setup({**recipe, "max_memory": "64KiB"}), RATES)
    assert budget.values == pytest.approx(plain.values, rel=1e-5) and budget.params_pruned == plain.params_pruned


def test_curve_refusals(manager, tiny_dir):
    with pytest.raises(SecateursError, match="no\\s+fixed ranking"):
        curve_setup(_recipe(tiny_dir, scorer="ken", reference_model=str(tiny_dir)), manager=manager)
    with pytest.raises(SecateursError, match="needs an evaluator"):
        curve_setup({k: v for k, v in _recipe(tiny_dir).items() if k != "evaluate"}, manager=manager)
    with pytest.raises(SecateursError, match="reloads the model for every rate"):
        curve_setup(_recipe(tiny_dir, max_memory="1GiB"), model=tiny_model(), manager=manager)


def test_prune_curve_command(manager, tiny_dir, tmp_path, capsys):
    recipe = tmp_path / "curve.toml"
    recipe.write_text(
        f'model = "{tiny_dir}"\nsparsity = 0.0\nscorer = "magnitude"\ncalibration = "gaussian"\n'
        'granularity = "neurons"\napplier = "remove"\n[evaluate]\nname = "output-agreement"\n'
    )
    out = tmp_path / "out"
    code, stdout, stderr = run_cli(["prune-curve", str(recipe), "-o", str(out), "--rates", "0,50", "-q"], capsys)
    assert code == 0, stderr
    record = json.loads((out / "curve.json").read_text())["curve"]
    assert record["rates"] == [0.0, 0.5] and record["values"][0] == 1.0
    assert (out / "curve.png").stat().st_size > 1000 and "area under the curve" in stdout
