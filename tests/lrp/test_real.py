"""The commands end to end on the packaged Fashion-MNIST VGG (trained on first use, then cached)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from secateurs.cli import cli
from secateurs.plugins import get_manager

RECIPE = Path(__file__).resolve().parents[2] / "plugins/lrp/recipes/fashion-mnist-vgg-lrp.toml"
pytestmark = pytest.mark.real


def _invoke(*args: str):
    get_manager().add_commands(cli)
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_prune_curve_command(tmp_path):
    out = tmp_path / "curve"
    result = _invoke("prune-curve", str(RECIPE), "-o", str(out), "--rates", "0,40,80", "-q",
                     "--set", "evaluate.samples=300", "--set", "calibration.nsamples=150",
                     "--set", "scorer.samples_per_class=3")
    assert result.exit_code == 0, result.output
    record = json.loads((out / "curve.json").read_text())["curve"]
    assert record["rates"] == [0.0, 0.4, 0.8]
    assert record["values"][0] > 0.7 and record["values"][2] < record["values"][0]
    assert (out / "curve.png").stat().st_size > 1000
    assert "area under the curve" in result.output


def test_lrp_tune_command_saves_a_usable_composite(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CONFIG", str(tmp_path / "config"))
    result = _invoke("lrp-tune", str(RECIPE), "--trials", "2", "--rates", "0,50", "--name", "vgg-test", "-q",
                     "--heldout", "samples=200", "--heldout", "seed=1", "--set", "calibration.nsamples=150",
                     "--set", "scorer.samples_per_class=3", "-o", str(tmp_path / "tune"))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "config/lrp-composites/vgg-test.json").is_file()
    trials = json.loads((tmp_path / "tune/trials.json").read_text())
    assert len(trials["trials"]) == 2 and trials["best_area"] >= max(trials["presets"].values())
    pruned = _invoke("prune", str(RECIPE), "-o", str(tmp_path / "pruned"), "-q", "--set", "scorer.composite=vgg-test",
                     "--set", "calibration.nsamples=150", "--set", "scorer.samples_per_class=3",
                     "--set", "evaluate.samples=200")
    assert pruned.exit_code == 0, pruned.output
    assert "accuracy" in pruned.output
