"""What a recovery run reads and keeps: its training batches (windows of a calibration
source, as many as the token budget needs), its held-out evaluator, and its checkpoints.

A checkpoint is a folder written atomically (``secateurs.outputs.atomic_output_dir``):
``student.safetensors`` (the student's weights, LoRA adapters included) and ``state.pt``
(optimizer and scheduler state, RNG states, the step — which is also the position in the
batches, since they are drawn from the seed —, the loss curve, evaluations, and the
``[recover]`` table it was made with). A run resumed from it continues bit for bit where
the checkpoint was written.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import torch
from safetensors.torch import load_model, save_model
from torch import nn

from secateurs.errors import SecateursError
from secateurs.outputs import atomic_output_dir
from secateurs.plugins import PluginManager
from secateurs.protocols import LoadedModel
from secateurs.recipe import Part
from secateurs.recover_spec import RecoverSpec

CHECKPOINT_SUFFIX = ".recover-checkpoint"
_WEIGHTS, _STATE = "student.safetensors", "state.pt"


def source_part(spec: RecoverSpec, manager: PluginManager, windows: int = 1) -> Any:
    """The training data's calibration source, asked for ``windows`` windows of
    ``spec.seqlen`` tokens in batches of ``spec.batch_size``, drawn from ``spec.seed``."""
    from secateurs.run import create_part

    params = {k: v for k, v in spec.source.items() if k != "name"}
    budget = {"nsamples": windows, "seqlen": spec.seqlen, "batch_size": spec.batch_size, "seed": spec.seed or 0}
    return create_part(manager.calibration_sources, Part(spec.source["name"], params), **budget)


def eval_part(spec: RecoverSpec, manager: PluginManager) -> Any:
    """The held-out evaluator (``None`` when ``eval = false``), on ``spec.seqlen`` windows
    unless its table says otherwise, without a progress bar of its own."""
    from secateurs.run import create_part

    if spec.eval is None:
        return None
    params = {k: v for k, v in spec.eval.items() if k != "name"}
    return create_part(manager.evaluators, Part(spec.eval["name"], params), progress=False, seqlen=spec.seqlen)


def training_batches(spec: RecoverSpec, loaded: LoadedModel, manager: PluginManager) -> list[Any]:
    """The micro-batches of the whole run, ``spec.steps * spec.grad_accum`` of them (a
    source that cannot draw that many is cycled)."""
    count = spec.steps * spec.grad_accum
    batches = list(source_part(spec, manager, windows=count * spec.batch_size).batches(loaded))
    if not batches:
        raise SecateursError(f"the [recover] source {spec.source['name']!r} gave no batches")
    return [batches[i % len(batches)] for i in range(count)]


@attrs.define
class TrainState:
    """Where a run is: optimizer steps done, the loss of each, evaluations (``{"step": n,
    metric: value}``), and the training seconds spent (over every resumed part)."""

    step: int = 0
    losses: list[float] = attrs.field(factory=list)
    evals: list[dict[str, float]] = attrs.field(factory=list)
    seconds: float = 0.0


def checkpoint_folder(spec: RecoverSpec, output: str | Path | None) -> Path | None:
    """Where checkpoints go: ``spec.checkpoint_dir``, else ``OUTPUT.recover-checkpoint``
    beside the output; ``None`` (no checkpoints) without either or with ``checkpoint_every = 0``."""
    if spec.checkpoint_every == 0:
        return None
    if spec.checkpoint_dir is not None:
        return Path(spec.checkpoint_dir).expanduser().resolve()
    if output is None:
        return None
    out = Path(output).expanduser().resolve()
    return out.with_name(out.name + CHECKPOINT_SUFFIX)


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, state: TrainState, spec: RecoverSpec
) -> None:
    """Write the checkpoint of ``state`` to ``folder`` atomically, replacing an earlier one."""
    with atomic_output_dir(folder, overwrite=True) as tmp:
        save_model(model, str(tmp / _WEIGHTS))
        torch.save(
            {
                "spec": spec.to_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "train": attrs.asdict(state),
            },
            tmp / _STATE,
        )


def _has_checkpoint(folder: Path | None) -> bool:
    return folder is not None and (folder / _STATE).is_file() and (folder / _WEIGHTS).is_file()


def check_resume(folder: Path | None, resume: bool) -> None:
    """Refuse, before any work, ``resume`` without a checkpoint in ``folder`` (or without
    checkpoints at all), and a fresh start over an existing one."""
    if resume and folder is None:
        raise SecateursError("--resume needs checkpoints: an output (or [recover] checkpoint_dir) and checkpoint_every > 0")
    if resume and not _has_checkpoint(folder):
        raise SecateursError(f"--resume: no recovery checkpoint in {folder}; run without --resume to start one")
    if not resume and _has_checkpoint(folder):
        raise SecateursError(f"a checkpoint of an interrupted recovery is in {folder}: resume it (--resume) or delete it")


def load_checkpoint(
    folder: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, spec: RecoverSpec
) -> TrainState:
    """Restore the run ``folder`` holds into ``model``, ``optimizer`` and ``scheduler`` and
    the RNGs; refused (one line) when it was made with another ``[recover]`` table."""
    check_resume(folder, True)
    saved = torch.load(folder / _STATE, map_location="cpu", weights_only=True)
    ours = spec.to_dict()
    changed = sorted(k for k in ours.keys() | saved["spec"].keys() if ours.get(k) != saved["spec"].get(k))
    if changed:
        key = changed[0]
        raise SecateursError(
            f"--resume: the checkpoint in {folder} was made with [recover] {key} = {saved['spec'].get(key)!r}, this run "
            f"has {ours.get(key)!r}; resume with the same settings, or delete the checkpoint to start again"
        )
    missing, unexpected = load_model(model, str(folder / _WEIGHTS), strict=False)
    if missing or unexpected:
        raise SecateursError(
            f"--resume: the checkpoint in {folder} does not fit this student ({len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected, e.g. {(missing + unexpected)[0]!r}); delete it to start again"
        )
    optimizer.load_state_dict(saved["optimizer"])
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(saved["rng"])
    return TrainState(**saved["train"])
