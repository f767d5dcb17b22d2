"""The CLI and recipes: a full run on a tiny saved model, and every bad input fails with a
clear message, a non-zero exit, and nothing written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cli_run import run_cli
from secateurs.errors import SecateursError
from secateurs.recipe import Recipe, load_recipe


def _recipe(tmp_path: Path, model: Path, text: Path, **extra) -> Path:
    lines = [
        f'model = "{model}"',
        f'output = "{tmp_path / "out"}"',
        f"sparsity = {extra.pop('sparsity', 0.5)}",
    ]
    lines += [f"{k} = {json.dumps(v)}" for k, v in extra.pop("top", {}).items()]
    lines += [
        "[calibration]", 'name = "text"', f'corpus = "{text}"', "nsamples = 4", "seqlen = 32",
        "[scorer]", f'name = "{extra.pop("scorer", "wanda")}"',
        "[applier]", 'name = "zero"', *[f'pattern = "{extra.pop("pattern")}"' for _ in [0] if "pattern" in extra],
        "[evaluate]", 'name = "perplexity"', f'corpus = "{text}"', "seqlen = 64", "max_windows = 4",
    ]
    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prune_command_writes_a_model_that_reloads_with_from_pretrained(tmp_path, tiny_lm_dir, text_file, capsys):
    from transformers import AutoModelForCausalLM

    recipe = _recipe(tmp_path, tiny_lm_dir, text_file)
    before = sorted((p.name, p.stat().st_mtime_ns) for p in tiny_lm_dir.iterdir())
    code, out, err = run_cli(["prune", str(recipe), "--quiet"], capsys)
    assert code == 0, err
    assert "perplexity:" in out and "saved to" in out
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out")
    for layer in reloaded.model.layers:
        for proj in (layer.self_attn.q_proj, layer.mlp.down_proj):
            assert torch.all((proj.weight == 0).sum(1) == proj.in_features // 2)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.5)
    assert report["recipe"]["scorer"] == {"name": "wanda"}
    assert {"before", "after"} <= set(report["records"]["evaluation"])
    assert sorted((p.name, p.stat().st_mtime_ns) for p in tiny_lm_dir.iterdir()) == before  # input untouched
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temporaries left


def test_flags_override_recipe_fields(tmp_path, tiny_lm_dir, text_file, capsys):
    recipe = _recipe(tmp_path, tiny_lm_dir, text_file)
    code, _, err = run_cli(
        ["prune", str(recipe), "-q", "--sparsity", "0.25", "--set", "scorer.comparison=\"row\"", "-o", str(tmp_path / "o2")],
        capsys,
    )
    assert code == 0, err
    report = json.loads((tmp_path / "o2" / "report.json").read_text())
    assert report["sparsity"] == pytest.approx(0.25) and report["recipe"]["scorer"]["comparison"] == "row"


BAD_INPUTS = {
    "sparsity above range": (dict(sparsity=1.2), "sparsity"),
    "negative sparsity": (dict(sparsity=-0.5), "sparsity"),
    "unknown scorer": (dict(scorer="wandaa"), "unknown scorer 'wandaa'; installed scorers:"),
    "unknown recipe key": (dict(top={"sparsty": 0.5}), "unknown recipe key 'sparsty'"),
    "nm not dividing": (dict(pattern="3:7"), "does not divide"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
def test_bad_recipes_fail_clearly_and_write_nothing(case, tmp_path, tiny_lm_dir, text_file, capsys):
    extra, message = BAD_INPUTS[case]
    recipe = _recipe(tmp_path, tiny_lm_dir, text_file, **extra)
    code, _, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 2 and message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["recipe.toml", "tiny-llama", "text.txt"])


def test_missing_model_path_is_refused(tmp_path, text_file, capsys):
    recipe = _recipe(tmp_path, tmp_path / "no-such-model", text_file)
    code, _, err = run_cli(["prune", str(recipe)], capsys)
    assert code == 2 and "does not exist" in err and "smollm2-135m" in err


def test_model_no_adapter_supports_is_refused_listing_adapters(tmp_path, text_file, capsys):
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0")
    code, _, err = run_cli(["prune", str(_recipe(tmp_path, folder, text_file))], capsys)
    assert code == 2 and "no installed adapter supports" in err and "llama" in err and "Writing an architecture adapter" in err


def test_a_named_adapter_that_cannot_load_the_model_is_one_line(tmp_path, text_file, capsys):
    folder = tmp_path / "mystery"
    folder.mkdir()
    (folder / "weights.bin").write_bytes(b"\0")
    code, _, err = run_cli(["prune", str(_recipe(tmp_path, folder, text_file)), "--set", "adapter=llama"], capsys)
    assert code == 2 and err.count("\n") == 1 and f"the 'llama' adapter cannot take the model at {folder}" in err


def test_non_empty_output_needs_overwrite(tmp_path, tiny_lm_dir, text_file, capsys):
    """A folder secateurs wrote is replaced only with --overwrite (tests/core/test_reliability.py:
    a folder it did not write never is)."""
    recipe = _recipe(tmp_path, tiny_lm_dir, text_file)
    assert run_cli(["prune", str(recipe), "-q"], capsys)[0] == 0
    code, _, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 2 and "--overwrite" in err
    code, _, err = run_cli(["prune", str(recipe), "-q", "--overwrite"], capsys)
    assert code == 0, err
    assert (tmp_path / "out" / "report.json").is_file()


def test_a_failure_while_exporting_leaves_no_output(tmp_path, tiny_lm_dir, text_file, monkeypatch):
    import secateurs
    from secateurs.builtins.exporters import ReportExporter

    def explode(self, loaded, result, directory):
        (directory / "partial.json").write_text("{")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ReportExporter, "export", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        secateurs.prune(load_recipe(_recipe(tmp_path, tiny_lm_dir, text_file)), progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["recipe.toml", "tiny-llama", "text.txt"])


def test_recipe_validation_names_the_bad_key():
    with pytest.raises(SecateursError, match="recipe is missing required key 'scorer'"):
        Recipe.from_dict({"model": "m", "sparsity": 0.5})
    with pytest.raises(SecateursError, match="'scorer' needs a string `name`"):
        Recipe.from_dict({"model": "m", "sparsity": 0.5, "scorer": {"comparison": "row"}})
    with pytest.raises(SecateursError, match="'model' must be a string"):
        Recipe.from_dict({"model": 3, "sparsity": 0.5, "scorer": "wanda"})
    with pytest.raises(SecateursError, match="unknown recipe key 'colour' in override"):
        Recipe.from_dict({"model": "m", "sparsity": 0.5, "scorer": "wanda"}).with_overrides({"colour.x": 1})


def test_recipe_round_trips_through_to_dict():
    recipe = Recipe.from_dict(
        {"model": "m", "sparsity": 0.5, "scorer": {"name": "magnitude", "comparison": "row"}, "exporters": ["report"]}
    )
    assert Recipe.from_dict({k: v for k, v in recipe.to_dict().items() if v is not None}) == recipe


def test_eval_command_reports_perplexity(tiny_lm_dir, text_file, capsys):
    code, out, err = run_cli(
        ["eval", str(tiny_lm_dir), "--set", f'corpus="{text_file}"', "--set", "seqlen=64", "--set", "max_windows=2", "--json"],
        capsys,
    )
    assert code == 0, err
    metrics = json.loads(out.strip().splitlines()[-1])
    assert metrics["windows"] == 2 and 1 < metrics["perplexity"] < 1000


def test_console_script_exits_non_zero_on_bad_input(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "from secateurs.cli import main; main()", "prune", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_quiet_silences_every_progress_bar(tmp_path, tiny_lm_dir, text_file):
    """``-q``: nothing on stderr, not even transformers' loading and saving bars."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    command = [sys.executable, "-c", "from secateurs.cli import main; main()", "prune", "-q"]
    proc = subprocess.run([*command, str(_recipe(tmp_path, tiny_lm_dir, text_file))],
                          capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "saved to" in proc.stdout


def test_prune_curve_of_a_language_model(tmp_path, tiny_lm_dir, text_file, capsys):
    from secateurs.run import evaluate

    recipe = _recipe(tmp_path, tiny_lm_dir, text_file, top={"allocator": "owl"})
    code, out, err = run_cli(["prune-curve", str(recipe), "--rates", "0,50,90", "--metric", "perplexity", "-q"], capsys)
    assert code == 0, err
    rows = [line.split() for line in out.splitlines()[1:4]]
    assert [row[0] for row in rows] == ["0%", "50%", "90%"]
    dense = evaluate(tiny_lm_dir, "perplexity", corpus=str(text_file), seqlen=64, max_windows=4)["perplexity"]
    perplexities = [float(row[1]) for row in rows]
    assert perplexities[0] == pytest.approx(dense, rel=1e-4)  # rate 0 is the dense model (OWL needs no zero target)
    assert all(p != pytest.approx(dense, rel=1e-4) for p in perplexities[1:])
