"""Every scorer x allocator x applier combination runs from a recipe dict on a tiny Llama."""

from __future__ import annotations

import json

import pytest

import secateurs


@pytest.mark.parametrize("applier", ["zero", "sparsegpt", {"name": "sparsegpt", "pattern": "2:4"}])
@pytest.mark.parametrize("allocator", ["uniform", "global", "owl"])
@pytest.mark.parametrize("scorer", ["magnitude", "wanda"])
def test_scorer_allocator_applier_combination(tiny_lm_dir, text_file, tmp_path, scorer, allocator, applier):
    nm = isinstance(applier, dict)
    if nm and allocator != "uniform":
        pytest.skip("an N:M pattern fixes every unit at N/M whatever the allocator")
    recipe = {
        "model": str(tiny_lm_dir),
        "sparsity": 0.5 if nm else 0.6,
        "scorer": scorer,
        "allocator": {"name": allocator, "lam": 0.05} if allocator == "owl" else allocator,
        "applier": applier,
        "calibration": {"name": "text", "corpus": str(text_file), "nsamples": 4, "seqlen": 32},
        "output": str(tmp_path / "out"),
    }
    outcome = secateurs.prune(recipe, progress=False)
    result = outcome.result
    assert result.sparsity == pytest.approx(0.5 if nm else 0.6, abs=1 / 64)
    for unit in result.units:  # every unit gets exactly what the allocation asked
        per_matrix = int(unit.numel * unit.target_sparsity + 1e-9)
        per_row = unit.shape[0] * int(unit.shape[1] * unit.target_sparsity + 1e-9)
        assert unit.pruned in (per_matrix, per_row), unit.name
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    if allocator == "owl":
        assert set(report["records"]["owl"]["sparsity"]) == {"model.layers.0", "model.layers.1"}
    params = outcome.loaded.model.state_dict()
    zeros = sum(int((params[f"{u.name}.weight"] == 0).sum()) for u in result.units)
    assert zeros >= sum(u.pruned for u in result.units)
