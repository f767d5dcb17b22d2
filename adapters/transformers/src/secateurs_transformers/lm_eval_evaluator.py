"""Evaluator ``lm-eval``: lm-evaluation-harness tasks on the in-memory model.

The model and tokenizer a run holds are wrapped in lm-eval's ``HFLM`` (nothing is
reloaded from disk, so a pruned model is measured as it is). lm-eval is the optional
extra ``secateurs-transformers[lm-eval]``; standard tasks download their data sets from
the Hugging Face dataset hub, so offline machines need tasks of their own
(``include_path``: a folder of task YAMLs over local JSON/JSONL files).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import attrs

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel

INSTALL_HINT = 'pip install "secateurs-transformers[lm-eval]"'


def _lm_eval(module: str = "lm_eval") -> ModuleType:
    """``module`` of lm-evaluation-harness, or one clear error saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise SecateursError(
            f"evaluator 'lm-eval' needs lm-evaluation-harness, which is not installed: {INSTALL_HINT}"
        ) from exc


def _task_list(value: str | list[str]) -> list[str]:
    """A list of task names; a string is a comma-separated list (``--set tasks=rte,boolq``)."""
    if isinstance(value, str):
        return [name.strip() for name in value.split(",") if name.strip()]
    return value


def _check_tasks(_inst: Any, _attribute: attrs.Attribute, value: Any) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"tasks must be a non-empty list of lm-eval task names, got {value!r}")


def _count(minimum: int, *, optional: bool = False) -> Any:
    """A validator: an integer >= ``minimum`` (or ``None`` when ``optional``)."""

    def check(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
        if optional and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ValueError(f"{attribute.name} must be an integer >= {minimum}, got {value!r}")

    return check


def _check_batch_size(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f'{attribute.name} must be a positive integer or "auto", got {value!r}')


def _check_folder(_inst: Any, attribute: attrs.Attribute, value: Any) -> None:
    if value is not None and not Path(value).expanduser().is_dir():
        raise ValueError(f"{attribute.name} must be a folder of lm-eval task YAMLs, got {value!r} (not a folder)")


def flatten_results(results: Mapping[str, Any]) -> dict[str, float]:
    """lm-eval's ``simple_evaluate`` output → ``{"task/metric": value}``.

    Metrics under lm-eval's default filter (``"acc,none"``) become ``task/acc``; other
    filters keep their name (``task/exact_match/strict-match``). Non-numeric entries
    (aliases, ``"N/A"`` stderrs) are left out; ``task/samples`` is the number of
    documents evaluated."""
    flat: dict[str, float] = {}
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            metric, sep, filter_name = key.partition(",")
            if not sep or isinstance(value, bool) or not isinstance(value, int | float):
                continue
            name = metric if filter_name == "none" else f"{metric}/{filter_name}"
            flat[f"{task}/{name}"] = float(value)
    for task, counts in results.get("n-samples", {}).items():
        flat[f"{task}/samples"] = float(counts["effective"])
    return flat


@attrs.frozen
class LmEval:
    """lm-evaluation-harness ``tasks`` run on the loaded model with ``num_fewshot`` examples,
    on the first ``limit`` documents of each task (all when ``None``), ``batch_size`` at a
    time. ``include_path``: a folder of task YAMLs, searched before lm-eval's own tasks.
    ``evaluate`` returns ``{"task/metric": value}`` (see ``flatten_results``)."""

    tasks: list[str] = attrs.field(converter=_task_list, validator=_check_tasks)
    num_fewshot: int = attrs.field(default=0, validator=_count(0))
    limit: int | None = attrs.field(default=None, validator=_count(1, optional=True))
    batch_size: int | str = attrs.field(default=1, validator=_check_batch_size)
    include_path: str | None = attrs.field(default=None, validator=_check_folder)

    def __attrs_post_init__(self) -> None:
        _lm_eval()  # fail when the recipe is read, not after the model is loaded

    def task_manager(self) -> Any:
        """lm-eval's ``TaskManager`` knowing every task in ``tasks``; lm-eval's own task
        index (seconds to build) is only built when ``include_path`` lacks some of them."""
        TaskManager = _lm_eval("lm_eval.tasks").TaskManager
        folder = None if self.include_path is None else str(Path(self.include_path).expanduser())
        if folder is not None:
            local = TaskManager(include_path=folder, include_defaults=False)
            if all(task in local.all_tasks for task in self.tasks):
                return local
        manager = TaskManager(include_path=folder)
        unknown = [task for task in self.tasks if task not in manager.all_tasks]
        if unknown:
            where = "lm-eval's tasks" + ("" if folder is None else f" or {folder}")
            raise SecateursError(
                f"evaluator 'lm-eval': unknown task(s) {', '.join(map(repr, unknown))} (not in {where}); "
                "`lm-eval ls tasks` lists them"
            )
        return manager

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        tokenizer = loaded.tokenizer
        if tokenizer is None:
            raise SecateursError(f"evaluator 'lm-eval': {loaded.source} was loaded without a tokenizer")
        if tokenizer.bos_token_id is None and tokenizer.eos_token_id is None:
            raise SecateursError(
                f"evaluator 'lm-eval': the tokenizer of {loaded.source} has neither a BOS nor an EOS token; "
                "lm-eval prefixes contexts with one of them"
            )
        HFLM = _lm_eval("lm_eval.models.huggingface").HFLM
        simple_evaluate = _lm_eval("lm_eval.evaluator").simple_evaluate
        # a copy: HFLM gives the tokenizer a pad token, which must not reach an exported model
        lm = HFLM(pretrained=loaded.model, tokenizer=copy.deepcopy(tokenizer), batch_size=self.batch_size)
        try:
            results = simple_evaluate(
                model=lm,
                tasks=list(self.tasks),
                num_fewshot=self.num_fewshot,
                limit=self.limit,
                task_manager=self.task_manager(),
                log_samples=False,
            )
        except ConnectionError as exc:  # datasets' "Couldn't reach ... on the Hub"
            raise SecateursError(
                f"evaluator 'lm-eval': {exc}. This machine cannot download the task's data set; "
                "give the data as local JSON/JSONL files with a task YAML in include_path (docs/evaluation.md)"
            ) from exc
        return flatten_results(results)
