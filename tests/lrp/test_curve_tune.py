"""Pruning curves (nested masks, area) and the composite search, on tiny models."""

from __future__ import annotations

import json

import attrs
import pytest
import torch
from click.testing import CliRunner

from secateurs.curve import CurveSetup, curve_setup, parse_rates, plot_curves, pruning_curve
from secateurs.errors import SecateursError
from secateurs.plugins import get_manager
from secateurs.protocols import LoadedModel
from secateurs_lrp.composites import CompositeSpec
from secateurs_lrp.library import resolve_composite, save_composite
from secateurs_lrp.scorers import LrpScorer
from secateurs_lrp.tune import tune
from lrp_tiny import calibration, images, tiny  # noqa: F401 (fixtures)


@attrs.define
class Agreement:
    """Top-1 agreement with the dense model on fixed images; records which MLP neurons are
    zero at every call (to check that the masks nest)."""

    x: torch.Tensor
    reference: torch.Tensor
    zeros: list[torch.Tensor] = attrs.field(factory=list)

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        model = loaded.model
        self.zeros.append(torch.cat([(b.mlp.fc1.weight == 0).all(1) for b in model.blocks]))
        with torch.no_grad():
            return {"agreement": float((model(self.x).argmax(-1) == self.reference).float().mean())}


def _parts(scorer="lrp", allocator="global") -> CurveSetup:
    loaded = tiny("vit")
    x = images("vit", 32, seed=3)
    with torch.no_grad():
        reference = loaded.model(x).argmax(-1)
    recipe = {
        "scorer": {"name": scorer, **({"samples_per_class": 2} if scorer == "lrp" else {})},
        "allocator": allocator,
        "applier": "zero",
        "sparsity": 0.0,
        "granularity": "neurons",
    }
    return curve_setup(recipe, model=loaded, calibration=calibration("vit"), evaluator=Agreement(x, reference))


@pytest.mark.parametrize(("scorer", "allocator"), [("lrp", "global"), ("lrp", "uniform"), ("magnitude", "global"), ("random", "uniform")])
def test_curve_masks_nest(scorer, allocator, tmp_path):
    parts = _parts(scorer, allocator)
    dense = {k: v.clone() for k, v in parts.loaded.model.state_dict().items()}
    rates = (0.0, 0.25, 0.5, 0.75)
    curve = pruning_curve(parts, rates)
    zeros = parts.evaluator.zeros
    counts = [int(z.sum()) for z in zeros]
    assert counts == [int(r * zeros[0].numel()) for r in rates]
    for small, large in zip(zeros, zeros[1:]):
        assert (small & ~large).sum() == 0  # everything pruned at a rate stays pruned at the next
    assert curve.values[0] == 1.0 and curve.area == pytest.approx(sum(curve.values) / 4)
    assert all(torch.equal(v, parts.loaded.model.state_dict()[k]) for k, v in dense.items())  # dense model untouched
    png = plot_curves({scorer: curve}, tmp_path / "c.png", "tiny")
    assert png.stat().st_size > 1000


def test_parse_rates():
    assert parse_rates("0:95:5") == tuple(round(0.05 * i, 2) for i in range(20))
    assert parse_rates("0,10,50") == (0.0, 0.1, 0.5)
    with pytest.raises(SecateursError):
        parse_rates("0:100:50")


def test_tune_evaluates_presets_then_searches():
    parts = _parts()
    result = tune(
        parts,
        lambda spec: LrpScorer(composite=spec.to_dict(), samples_per_class=2),
        trials=7,
        seed=0,
        rates=(0.0, 0.5, 0.75),
        progress=False,
    )
    assert set(result.presets) == {"epsilon", "epsilon-cp", "gamma", "zplus", "alphabeta"}
    assert len(result.trials) == 7
    assert result.best_area >= max(result.presets.values())
    assert isinstance(result.best, CompositeSpec)


def test_saved_composite_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("SECATEURS_CONFIG", str(tmp_path))
    spec = CompositeSpec.from_dict({"low": {"rule": "gamma", "gamma": 0.1}, "fc": "zplus", "softmax": "cp"})
    path = save_composite("mine", spec, {"best_area": 0.5})
    assert json.loads(path.read_text())["best_area"] == 0.5
    assert resolve_composite("mine") == spec
    assert resolve_composite(str(path)) == spec
    with pytest.raises(SecateursError, match="preset"):
        save_composite("epsilon", spec)


def test_commands_are_registered():
    from secateurs.cli import cli

    get_manager().add_commands(cli)
    for command in ("prune-curve", "lrp-tune"):
        result = CliRunner().invoke(cli, [command, "--help"])
        assert result.exit_code == 0 and "RECIPE" in result.output
