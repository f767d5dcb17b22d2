"""``secateurs inspect``: adapter, blocks, units with shapes and sparsity, groups."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from secateurs.cli import cli
from secateurs.inspection import describe, render
from secateurs.pipeline import prune_model
from secateurs.plugins import LOAD_PLUGINS_ENV, reset_manager
from tf_models import ADAPTER, loaded_tiny, spec


def prune(loaded, applier: str, granularity: str) -> None:
    prune_model(loaded, spec(applier, granularity))


def test_describe_reports_units_groups_and_outside_parameters(family):
    loaded = loaded_tiny(family)
    report = describe(loaded)
    config = loaded.model.config
    assert report["adapter"] == ADAPTER[family] and len(report["blocks"]) == config.num_hidden_layers
    block = report["blocks"][0]
    assert {g["kind"] for g in block["groups"]} == {"heads", "neurons"}
    assert all(u["sparsity"] == 0 and u["params"] == u["shape"][0] * u["shape"][1] for u in block["units"])
    outside = sum(o["params"] for o in report["not_pruned"])
    inside = sum(b["other_params"] + sum(u["params"] for u in b["units"]) for b in report["blocks"])
    assert outside + inside == report["params"]  # every parameter is accounted for once
    assert any("embed" in o["module"] for o in report["not_pruned"])


@pytest.mark.parametrize("family", ["llama", "bert"])
def test_describe_shows_the_sparsity_of_a_pruned_model(family):
    loaded = loaded_tiny(family)
    prune(loaded, "zero", "unstructured")
    report = describe(loaded)
    assert report["unit_sparsity"] == pytest.approx(0.5)
    assert all(u["sparsity"] == pytest.approx(0.5) for b in report["blocks"] for u in b["units"])
    assert "sparsity 50.00%" in render(report)


def test_describe_counts_zeroed_components_and_removed_shapes():
    zeroed, removed = loaded_tiny("bert"), loaded_tiny("bert")
    prune(zeroed, "zero", "neurons")
    prune(removed, "remove", "neurons")
    z, r = describe(zeroed), describe(removed)
    neurons = [g for g in z["blocks"][0]["groups"] if g["kind"] == "neurons"][0]
    assert (neurons["components"], neurons["zero_components"]) == (64, 32)
    neurons = [g for g in r["blocks"][0]["groups"] if g["kind"] == "neurons"][0]
    assert (neurons["components"], neurons["zero_components"]) == (32, 0)
    assert r["params"] < z["params"]


def test_inspect_command_text_and_json(tmp_path, monkeypatch):
    loaded = loaded_tiny("bert-cls")
    prune(loaded, "remove", "heads")
    loaded.adapter.save(loaded, tmp_path)
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "transformers")
    reset_manager()
    try:
        text = CliRunner().invoke(cli, ["inspect", str(tmp_path)], catch_exceptions=False)
        as_json = CliRunner().invoke(cli, ["inspect", str(tmp_path), "--json"], catch_exceptions=False)
    finally:
        reset_manager()
    assert text.exit_code == 0 and as_json.exit_code == 0
    assert "adapter  bert" in text.output and "bert.encoder.layer.1.attention.self.query" in text.output
    assert "16x32" in text.output  # 2 of 4 heads of width 8 left
    assert "classifier" in text.output and "pooler" in text.output
    report = json.loads(as_json.output[as_json.output.index("{"):])
    heads = [g for g in report["blocks"][0]["groups"] if g["kind"] == "heads"][0]
    assert heads["components"] == 2


def test_inspect_command_on_an_unsupported_model_fails_clearly(tmp_path, capsys, monkeypatch):
    import transformers

    from secateurs.cli import main

    config = transformers.T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
    transformers.T5ForConditionalGeneration(config).save_pretrained(tmp_path)
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "transformers")
    reset_manager()
    try:
        with pytest.raises(SystemExit) as exit_:
            main(["inspect", str(tmp_path)])
    finally:
        reset_manager()
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "no installed adapter supports" in err and "decoder: config.json names no causal LM" in err
    assert "Writing an architecture adapter" in err
