"""The ``lm-eval`` evaluator, offline: a tiny multiple-choice task over a local JSONL file,
run on a tiny random Llama held in memory (alone, as a recipe's ``[evaluate]``, and from
``secateurs eval``)."""

from __future__ import annotations

import json
import sys

import pytest

from click.testing import CliRunner

from lm_models import char_tokenizer, tiny_causal_lm
from secateurs.cli import cli
from secateurs.errors import SecateursError
from secateurs.loading import load
from secateurs.plugins import LOAD_PLUGINS_ENV, reset_manager
from secateurs.run import prune
from tf_models import manager

TASK = "tiny_arith"
DOCS = 12

pytest.importorskip("lm_eval")


@pytest.fixture
def task_folder(tmp_path, monkeypatch):
    """A folder with one multiple-choice task YAML over a JSONL file of ``DOCS`` questions."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    data = tmp_path / "tiny_arith.jsonl"
    with data.open("w") as f:
        for i in range(DOCS):
            f.write(json.dumps({"question": f"{i} + 1 =", "choices": [str(i + 1), str(i + 2), "x"], "label": 0}) + "\n")
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "tiny_arith.yaml").write_text(
        f"task: {TASK}\n"
        "dataset_path: json\n"
        "dataset_kwargs:\n"
        f"  data_files:\n    test: {data}\n"
        f"  cache_dir: {tmp_path / 'datasets-cache'}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "Q: {{question}}\\nA:"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{label}}"\n'
        "metric_list:\n"
        "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
        "  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
        "metadata:\n  version: 1.0\n"
    )
    return folder


@pytest.fixture
def lm_dir(tmp_path):
    """A tiny random Llama folder with a character tokenizer (lm-eval needs an EOS or BOS token)."""
    folder = tmp_path / "tiny-llama"
    tiny_causal_lm("llama").save_pretrained(folder)
    tokenizer = char_tokenizer()
    tokenizer.eos_token = tokenizer.unk_token
    tokenizer.save_pretrained(folder)
    return folder


def evaluator(task_folder, **params):
    return manager().evaluators.create("lm-eval", tasks=[TASK], include_path=str(task_folder), **params)


def test_metrics_of_a_local_task_come_back_flat_and_limit_is_honoured(task_folder, lm_dir):
    loaded = load(lm_dir, manager=manager())
    metrics = evaluator(task_folder, limit=5).evaluate(loaded)
    assert metrics[f"{TASK}/samples"] == 5
    for name in ("acc", "acc_norm"):
        assert 0.0 <= metrics[f"{TASK}/{name}"] <= 1.0
        assert metrics[f"{TASK}/{name}"] * 5 == pytest.approx(round(metrics[f"{TASK}/{name}"] * 5))  # k of 5 docs
    assert all(isinstance(v, float) for v in metrics.values())
    assert loaded.tokenizer.pad_token is None  # lm-eval's pad token went to a copy


def test_a_pruned_models_metrics_go_in_the_report(task_folder, lm_dir, tmp_path):
    recipe = {
        "model": str(lm_dir),
        "output": str(tmp_path / "out"),
        "sparsity": 0.9,
        "scorer": "magnitude",
        "evaluate": {"name": "lm-eval", "tasks": [TASK], "include_path": str(task_folder), "batch_size": 4},
    }
    outcome = prune(recipe, progress=False, manager=manager())
    again = evaluator(task_folder)
    assert outcome.after == again.evaluate(outcome.loaded)  # the in-memory pruned model's numbers
    assert outcome.before == again.evaluate(load(lm_dir, manager=manager()))
    assert outcome.after[f"{TASK}/samples"] == DOCS
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["records"]["evaluation"] == {"before": outcome.before, "after": outcome.after}


def test_eval_command_runs_lm_eval(task_folder, lm_dir, monkeypatch):
    monkeypatch.setenv(LOAD_PLUGINS_ENV, "transformers")
    reset_manager()
    try:
        run = CliRunner().invoke(
            cli,
            ["eval", str(lm_dir), "--evaluator", "lm-eval", "--set", f'tasks=["{TASK}"]',
             "--set", "limit=3", "--set", f'include_path="{task_folder}"', "--json"],
            catch_exceptions=False,
        )
    finally:
        reset_manager()
    assert run.exit_code == 0, run.output
    metrics = json.loads(run.output[run.output.rindex("{"):])
    assert metrics[f"{TASK}/samples"] == 3 and 0.0 <= metrics[f"{TASK}/acc"] <= 1.0


def test_a_task_whose_data_is_on_the_unreachable_hub_says_to_use_local_data(task_folder, lm_dir):
    yaml = (task_folder / "tiny_arith.yaml").read_text()
    (task_folder / "tiny_arith.yaml").write_text(yaml.replace("dataset_path: json", "dataset_path: no-org/no-such-set"))
    with pytest.raises(SecateursError, match="cannot download the task's data set.*include_path"):
        evaluator(task_folder).evaluate(load(lm_dir, manager=manager()))


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "tasks"),
        ({"tasks": []}, "tasks must be a non-empty list"),
        ({"tasks": [TASK], "num_fewshot": -1}, "num_fewshot must be an integer >= 0"),
        ({"tasks": [TASK], "limit": 0}, "limit must be an integer >= 1"),
        ({"tasks": [TASK], "batch_size": "big"}, "batch_size must be a positive integer"),
        ({"tasks": [TASK], "include_path": "/no/such/folder"}, "include_path must be a folder"),
    ],
)
def test_bad_parameters_name_the_key(params, message):
    with pytest.raises(SecateursError, match=message):
        manager().evaluators.create("lm-eval", **params)


def test_a_comma_separated_string_is_a_task_list(task_folder):
    evaluator = manager().evaluators.create("lm-eval", tasks=f"{TASK}, other", include_path=str(task_folder))
    assert evaluator.tasks == [TASK, "other"]


@pytest.mark.slow  # builds lm-eval's index of its own tasks (~10 s)
def test_an_unknown_task_is_named(task_folder):
    unknown = manager().evaluators.create("lm-eval", tasks=[TASK, "no_such_task_xyz"], include_path=str(task_folder))
    with pytest.raises(SecateursError, match="unknown task.*'no_such_task_xyz'"):
        unknown.task_manager()


def test_without_lm_eval_installed_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(SecateursError, match=r'pip install "secateurs-transformers\[lm-eval\]"'):
        manager().evaluators.create("lm-eval", tasks=[TASK])
