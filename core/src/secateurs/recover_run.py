"""Where recovery runs: ``secateurs recover`` on a pruned output folder (``recover_model``),
and a prune recipe's ``[recover]`` table right after pruning (``PruneRecovery``).

A recovery file for ``secateurs recover recover.toml``::

    student = "out/smollm2-wanda-50"   # a pruned output folder
    teacher = "smollm2-135m"           # default: the model its report.json says was pruned
    output = "out/smollm2-wanda-50-recovered"

    [recover]
    tokens = 50_000

Every check that needs no weight (keys, values, parts, device, seqlen against the model's
config, the output) is made before anything is loaded.
"""

from __future__ import annotations

import copy
import json
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from secateurs.corpora import corpus_names
from secateurs.devices import check_device
from secateurs.errors import SecateursError
from secateurs.loading import load
from secateurs.outputs import Reads, atomic_output_dir, check_output, weights_size, write_json
from secateurs.plugins import PluginManager, get_manager
from secateurs.preflight import check_against_model
from secateurs.protocols import LoadedModel
from secateurs.recipe import Recipe, read_toml
from secateurs.recover import distil
from secateurs.recover_data import check_resume, checkpoint_folder, eval_part, source_part
from secateurs.recover_spec import RecoverSpec
from secateurs.types import PruneResult

REPORT = "report.json"


def check_recover(spec: RecoverSpec, manager: PluginManager, model: str | None, adapter: str | None = None) -> None:
    """Every check of ``spec`` that needs no weight: its source and evaluator are registered
    and take their parameters, their ``seqlen`` fits ``model``'s positions, and ``peft`` is
    installed when it asks for LoRA."""
    parts = [source_part(spec, manager), eval_part(spec, manager)]
    for key, table in (("source", spec.source), ("eval", spec.eval or {})):
        corpus = table.get("corpus")
        if isinstance(corpus, str) and corpus not in corpus_names() and not Path(corpus).expanduser().is_file():
            raise SecateursError(
                f"[recover] {key} corpus {corpus!r} is neither a known corpus ({', '.join(corpus_names())}) "
                "nor an existing text file"
            )
    check_against_model(model, parts, manager, adapter)
    if spec.lora is not None:
        try:
            import peft  # noqa: F401
        except ImportError:
            raise SecateursError("[recover] lora needs peft: pip install peft (or pip install 'secateurs[lora]')") from None


def spec_reads(spec: RecoverSpec) -> list[tuple[str, str]]:
    """``(key, path)`` of every file the spec's source and evaluator read (corpus files)."""
    tables = {"recover.source": spec.source, "recover.eval": spec.eval or {}}
    return [
        (f"{key}.{param}", value)
        for key, table in tables.items()
        for param, value in table.items()
        if param != "name" and isinstance(value, str) and value and Path(value).expanduser().exists()
    ]


@attrs.frozen
class RecoverJob:
    """What ``secateurs recover`` does: distil ``student`` (a pruned output folder) from
    ``teacher`` (default: the model its ``report.json`` records) into ``output``."""

    student: str
    output: str | None = None
    teacher: str | None = None
    device: str = "cpu"
    dtype: str = "auto"
    adapter: str | None = None
    recover: RecoverSpec = attrs.field(factory=RecoverSpec, converter=lambda v: v if isinstance(v, RecoverSpec) else RecoverSpec.from_dict(v))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecoverJob:
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SecateursError(f"unknown key {unknown[0]!r} in the recovery file; known keys: {', '.join(sorted(known))}")
        if "student" not in data:
            raise SecateursError("the recovery file is missing required key 'student' (the pruned model's folder)")
        for key in known - {"recover"}:
            if data.get(key) is not None and not isinstance(data[key], str):
                raise SecateursError(f"recovery file key {key!r} must be a string, got {data[key]!r}")
        return cls(**data)

    def with_overrides(self, options: Mapping[str, Any], sets: Mapping[str, Any]) -> RecoverJob:
        """A copy with the given ``options`` (``None``: not given) and ``sets``, dotted
        ``[recover]`` keys (``lr``, ``lora.rank``), applied."""
        table = self.recover.to_dict()
        if "corpus" in sets or "source" in sets:
            table.pop("corpus", None)
            table.pop("source", None)
        for key, value in sets.items():
            head, _, tail = key.partition(".")
            if tail:
                if not isinstance(table.get(head), Mapping):
                    raise SecateursError(f"--set {key}: [recover] {head} is not a table")
                table[head] = {**table[head], tail: value}
            else:
                table[head] = value
        given = {k: v for k, v in options.items() if v is not None}
        return attrs.evolve(self, **given, recover=RecoverSpec.from_dict(table))


def load_job(path: str | Path) -> RecoverJob:
    """The recovery file at ``path`` (TOML), validated."""
    return RecoverJob.from_dict(read_toml(path))


def _pruning_report(folder: str) -> dict[str, Any]:
    """The ``report.json`` a prune run wrote into ``folder`` (empty when there is none)."""
    path = Path(folder).expanduser() / REPORT
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


@attrs.frozen
class RecoverOutcome:
    """A finished ``recover_model``: the record, the recovered model, where it was written."""

    record: Mapping[str, Any]
    loaded: LoadedModel
    teacher: str
    output: Path | None


def recover_model(
    job: RecoverJob,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    manager: PluginManager | None = None,
    reads: Reads = (),
    on_step: Callable[[int, float], None] | None = None,
) -> RecoverOutcome:
    """Run ``job``: check everything, load the student and the teacher, distil, write the
    recovered model and ``report.json`` (the recovery record, and the pruning report the
    student came with) atomically, then remove the checkpoint folder. ``on_step(step, loss)``
    is called after every optimizer step."""
    manager = manager or get_manager()
    if job.output is None:
        raise SecateursError("recover needs an output folder: give -o OUTPUT (or output = \"...\" in the recovery file)")
    pruning = _pruning_report(job.student)
    teacher = job.teacher or pruning.get("recipe", {}).get("model")
    if teacher is None:
        raise SecateursError(
            f"no teacher: {job.student} has no report.json naming the model it was pruned from; give --teacher MODEL"
        )
    spec = job.recover.with_seed(pruning.get("recipe", {}).get("seed", 0))
    check_recover(spec, manager, job.student, job.adapter)
    check_device(job.device)
    teacher_path = [("teacher", teacher)] if Path(teacher).expanduser().exists() else []
    reads = [("student", job.student), *teacher_path, *spec_reads(spec), *reads]
    check_output(job.output, reads=reads, overwrite=overwrite, needs_bytes=weights_size(job.student))
    checkpoint = checkpoint_folder(spec, job.output)
    check_resume(checkpoint, resume)
    student = load(job.student, device=job.device, dtype=job.dtype, adapter=job.adapter, manager=manager)
    dense = load(teacher, device=job.device, dtype=job.dtype, adapter=job.adapter, manager=manager)
    removed = pruning.get("records", {}).get("layers", {}).get("removed")
    started = time.perf_counter()
    record = distil(student, dense, spec, manager, checkpoint=checkpoint, resume=resume, progress=progress,
                    removed=removed, on_step=on_step)
    record["total_seconds"] = time.perf_counter() - started
    with atomic_output_dir(job.output, overwrite=overwrite, reads=reads) as tmp:
        student.adapter.save(student, tmp)
        write_json(tmp / REPORT, {"recover": record, "student": job.student, "teacher": teacher, "pruning": pruning or None})
    _remove(checkpoint)
    return RecoverOutcome(record, student, teacher, Path(job.output).expanduser().resolve())


def _remove(checkpoint: Path | None) -> None:
    if checkpoint is not None:
        shutil.rmtree(checkpoint, ignore_errors=True)


@attrs.frozen
class PruneRecovery:
    """The ``[recover]`` step of a prune run: ``plan`` before loading (every check),
    ``keep_teacher`` before pruning, ``run`` after it, ``finished`` once the output is written."""

    spec: RecoverSpec
    checkpoint: Path | None
    resume: bool = False

    @classmethod
    def plan(cls, recipe: Recipe, manager: PluginManager, *, resume: bool = False) -> PruneRecovery | None:
        """``None`` without ``[recover]``; else the step, checked (``check_recover``;
        ``resume``: from the checkpoint beside the output, which must be there)."""
        if recipe.recover is None:
            return None
        if recipe.max_memory is not None:
            raise SecateursError("[recover] trains the whole model in memory; drop max_memory (or [recover])")
        spec = recipe.recover.with_seed(recipe.seed)
        check_recover(spec, manager, recipe.model, recipe.adapter)
        checkpoint = checkpoint_folder(spec, recipe.output)
        check_resume(checkpoint, resume)
        return cls(spec, checkpoint, resume)

    def keep_teacher(self, loaded: LoadedModel, *, given: bool) -> LoadedModel | None:
        """A dense copy of ``loaded`` when it was ``given`` in Python (the teacher is then
        not loaded from the recipe's model); ``None`` otherwise."""
        return attrs.evolve(loaded, model=copy.deepcopy(loaded.model)) if given else None

    def run(
        self,
        recipe: Recipe,
        loaded: LoadedModel,
        result: PruneResult,
        teacher: LoadedModel | None,
        manager: PluginManager,
        *,
        progress: bool = True,
    ) -> dict[str, Any]:
        """Distil the teacher (``teacher``, else ``recipe.model`` loaded as the student
        was) into the pruned ``loaded``; the record for ``result.records["recover"]``."""
        if teacher is None:
            teacher = load(recipe.model, device=recipe.device, dtype=recipe.dtype, adapter=recipe.adapter, manager=manager)
        removed = result.records.get("layers", {}).get("removed")
        return distil(loaded, teacher, self.spec, manager, checkpoint=self.checkpoint, resume=self.resume,
                      progress=progress, removed=removed)

    def finished(self) -> None:
        """The output is written: the checkpoint folder goes."""
        _remove(self.checkpoint)
