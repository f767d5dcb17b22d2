"""The ``[recover]`` table (``secateurs.recover_spec``): every bad key or value is one line,
before any model is loaded, in a prune recipe and in ``secateurs recover``."""

from __future__ import annotations

import sys

import pytest

from cli_run import run_cli
from secateurs.errors import SecateursError
from secateurs.recipe import Recipe
from secateurs.recover_spec import RecoverSpec
from secateurs.run import prune

BAD = [
    ({"tokens": 0}, "[recover] tokens must be a positive whole number"),
    ({"tokens": 1.5}, "[recover] tokens must be a positive whole number"),
    ({"seqlen": "long"}, "[recover] seqlen must be a positive whole number"),
    ({"batch_size": True}, "[recover] batch_size must be a positive whole number"),
    ({"lr": -1}, "[recover] lr must be a positive number"),
    ({"temperature": 0}, "[recover] temperature must be a positive number"),
    ({"schedule": "linear"}, "[recover] schedule must be one of cosine, constant"),
    ({"warmup": 1.5}, "[recover] warmup must be a fraction"),
    ({"hidden_mse": -0.1}, "[recover] hidden_mse must be a number >= 0"),
    ({"layer_map": [0, -1]}, "[recover] layer_map must list"),
    ({"checkpoint_every": -1}, "[recover] checkpoint_every must be a whole number >= 0"),
    ({"gradient_checkpointing": "yes"}, "gradient_checkpointing must be true or false"),
    ({"lora": {"rank": 0}}, "[recover] lora.rank must be a positive whole number"),
    ({"lora": {"ranks": 8}}, "unknown key 'ranks' in [recover] lora"),
    ({"epochs": 3}, "unknown key 'epochs' in [recover]"),
    ({"corpus": "x", "source": {"name": "text"}}, "either corpus or source"),
    ({"source": {"name": "text", "nsamples": 8}}, "source sets 'nsamples', which [recover] sets itself"),
]


@pytest.mark.parametrize(("table", "message"), BAD, ids=[m.split(" must")[0] for _, m in BAD])
def test_a_bad_value_is_one_line(table, message):
    with pytest.raises(SecateursError) as error:
        Recipe.from_dict({"model": "m", "scorer": "magnitude", "sparsity": 0.5, "recover": table})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_table_round_trips_and_counts_whole_steps():
    spec = RecoverSpec.from_dict({"tokens": 1000, "seqlen": 100, "batch_size": 2, "grad_accum": 2, "lora": True})
    assert spec.steps == 3 and spec.tokens_per_step == 400 and spec.warmup_steps == 0
    assert RecoverSpec.from_dict(spec.to_dict()) == spec
    recipe = Recipe.from_dict({"model": "m", "scorer": "magnitude", "sparsity": 0.5, "recover": {"tokens": 10}})
    assert recipe.with_overrides({"recover.lr": 0.001}).recover.lr == 0.001


def _recipe(tiny_lm_dir, text_file, **recover):
    data = {} if "source" in recover else {"corpus": str(text_file)}
    return {"model": str(tiny_lm_dir), "scorer": "magnitude", "sparsity": 0.5,
            "recover": {"seqlen": 32, "eval": False} | data | recover}


@pytest.mark.parametrize(
    ("recover", "message"),
    [
        ({"source": {"name": "no-such-source"}}, "no-such-source"),
        ({"corpus": "no-such-corpus"}, "[recover] source corpus 'no-such-corpus' is neither a known corpus"),
        ({"seqlen": 4096}, "seqlen 4096 exceeds the maximum positions"),
        ({"eval": {"name": "perplexity", "corpus": "shakespeare-test", "seqlen": 1000}}, "exceeds the maximum positions"),
    ],
)
def test_parts_that_cannot_run_are_refused_before_loading(tiny_lm_dir, text_file, monkeypatch, recover, message):
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SecateursError) as error:
        prune(_recipe(tiny_lm_dir, text_file, **recover), progress=False)
    assert message in str(error.value)


def test_lora_without_peft_says_how_to_install_it(tiny_lm_dir, text_file, monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # import peft raises ImportError
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(SecateursError, match="pip install peft"):
        prune(_recipe(tiny_lm_dir, text_file, lora={"rank": 4}), progress=False)


def test_the_command_refuses_in_one_line(tmp_path, tiny_lm_dir, capsys):
    code, _, err = run_cli(["recover", str(tiny_lm_dir), "-o", str(tmp_path / "out"), "--set", "lr=0"], capsys)
    assert code == 2 and err.strip() == "error: [recover] lr must be a positive number (e.g. lr = 1e-4), got 0"
    code, _, err = run_cli(["recover", str(tiny_lm_dir), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and "no teacher" in err and "--teacher MODEL" in err
    code, _, err = run_cli(["recover", str(tiny_lm_dir), "--teacher", str(tiny_lm_dir)], capsys)
    assert code == 2 and "give -o OUTPUT" in err
    assert not (tmp_path / "out").exists()


def test_docs_list_every_key():
    import re
    from pathlib import Path

    import attrs

    doc = (Path(__file__).resolve().parents[2] / "docs" / "recovery.md").read_text()
    listed = set(re.findall(r"^\| `(\w+)`", doc, flags=re.MULTILINE))
    listed |= set(re.findall(r"^\| `\w+` / `(\w+)`", doc, flags=re.MULTILINE))
    assert listed == {f.name for f in attrs.fields(RecoverSpec)} | {"corpus"}
