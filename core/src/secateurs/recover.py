"""Recovery by distillation: train a pruned student to match its dense teacher.

Loss: ``T² · KL(softmax(teacher / T) ‖ softmax(student / T))`` over the next-token
distributions (the mean over tokens), plus ``hidden_mse`` times the mean squared error of
the hidden states leaving matched blocks. AdamW with a cosine or constant schedule after a
linear warmup, gradient accumulation, gradient norms clipped at 1.0.

The sparsity pattern is kept exactly: every prunable unit of the student (the adapter's
blocks) holding exact zeros keeps them — their gradients are zeroed before each step (so
Adam's moments stay clean) and the weights multiplied by their mask after it. A physically
smaller (structured) student has no such zeros and trains normally. A student in a 16-bit
dtype trains in float32 (against a teacher in its own dtype) and is cast back at the end.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from secateurs.errors import SecateursError
from secateurs.plugins import PluginManager
from secateurs.protocols import LoadedModel
from secateurs.recover_data import (
    TrainState,
    check_resume,
    eval_part,
    load_checkpoint,
    save_checkpoint,
    training_batches,
)
from secateurs.recover_spec import RecoverSpec

CLIP_NORM = 1.0
_CURVE_POINTS = 100


def unit_masks(loaded: LoadedModel) -> dict[str, torch.Tensor]:
    """State-dict name → keep mask (``weight != 0``) of every prunable unit holding exact
    zeros (unstructured or N:M pruned), in the parameter's own layout."""
    masks = {}
    for block in loaded.adapter.blocks(loaded.model):
        for unit in block.units:
            keep = unit.parameter.detach() != 0
            if not bool(keep.all()):
                masks[unit.qualified_name] = keep
    return masks


def _masked(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[tuple[nn.Parameter, torch.Tensor]]:
    return [(model.get_parameter(name), keep) for name, keep in masks.items()]


def apply_masks(masked: Sequence[tuple[nn.Parameter, torch.Tensor]], *, grads: bool = False) -> None:
    """Zero the pruned entries of each parameter (``grads``: of its gradient)."""
    with torch.no_grad():
        for param, keep in masked:
            target = param.grad if grads else param
            if target is not None:
                target.mul_(keep)


def _logits(output: Any) -> torch.Tensor:
    logits = getattr(output, "logits", output)
    if not isinstance(logits, torch.Tensor):
        raise SecateursError(f"the model's forward gave {type(output).__name__}, not logits; recovery needs logits")
    return logits.reshape(-1, logits.shape[-1]).float()


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T² · KL(softmax(teacher / T) ‖ softmax(student / T))``, the mean over rows
    (tokens) of ``[tokens, classes]`` logits."""
    t = temperature
    kl = F.kl_div(F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1), log_target=True, reduction="batchmean")
    return kl * t * t


def layer_map(
    spec: RecoverSpec, student: LoadedModel, teacher: LoadedModel, removed: Sequence[str] | None
) -> list[int]:
    """The teacher block matched to each student block, for ``hidden_mse``: ``layer_map``
    when given, else the same blocks when the depths agree, else the teacher blocks the
    pruning kept (``removed``: the block names its report lists as removed)."""
    n_student = len(student.adapter.blocks(student.model))
    teacher_blocks = teacher.adapter.blocks(teacher.model)
    if spec.layer_map is not None:
        mapping = list(spec.layer_map)
    elif n_student == len(teacher_blocks):
        mapping = list(range(n_student))
    elif removed is not None:
        gone = set(removed)
        mapping = [i for i, block in enumerate(teacher_blocks) if block.name not in gone]
    else:
        raise SecateursError(
            f"hidden_mse: the student has {n_student} layers and the teacher {len(teacher_blocks)}, and no report "
            "says which were removed; give [recover] layer_map (the teacher layer of each student layer)"
        )
    if len(mapping) != n_student or max(mapping) >= len(teacher_blocks):
        raise SecateursError(
            f"hidden_mse: the layer map {mapping} must name one teacher layer (0 to {len(teacher_blocks) - 1}) for "
            f"each of the student's {n_student} layers"
        )
    return mapping


@contextlib.contextmanager
def _captured(loaded: LoadedModel, indices: Sequence[int], store: dict[int, torch.Tensor]) -> Iterator[None]:
    """While open, the hidden state leaving block ``i`` of ``loaded`` is ``store[i]``."""
    blocks = loaded.adapter.blocks(loaded.model)
    handles = []
    for i in indices:
        def keep(_module: nn.Module, _args: Any, output: Any, i: int = i) -> None:
            store[i] = loaded.adapter.block_output(output)

        handles.append(blocks[i].module.register_forward_hook(keep))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _schedule(spec: RecoverSpec) -> Callable[[int], float]:
    warmup, total = spec.warmup_steps, spec.steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if spec.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return factor


def _with_lora(model: nn.Module, spec: RecoverSpec, loaded: LoadedModel) -> Any:
    """``model`` with LoRA adapters injected (``peft``); returns the peft wrapper."""
    try:
        import peft
    except ImportError:
        raise SecateursError("[recover] lora needs peft: pip install peft (or pip install 'secateurs[lora]')") from None
    lora = spec.lora
    targets = lora.targets or sorted(
        {unit.qualified_name.rsplit(".", 2)[-2] for block in loaded.adapter.blocks(model) for unit in block.units}
    )
    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets))
    try:
        return peft.get_peft_model(model, config)
    except ValueError as exc:
        raise SecateursError(f"[recover] lora: {exc}") from None


def _checkpointing(model: nn.Module, on: bool) -> None:
    """Turn transformers' activation (gradient) checkpointing on or off: the newer
    ``activation_checkpointing_*`` where the model has it, else ``gradient_checkpointing_*``."""
    for kind, kwargs in (("activation", "activation_checkpointing_kwargs"), ("gradient", "gradient_checkpointing_kwargs")):
        enable = getattr(model, f"{kind}_checkpointing_enable", None)
        if enable is not None:
            if on:
                enable(**{kwargs: {"use_reentrant": False}})
            else:
                getattr(model, f"{kind}_checkpointing_disable")()
            return
    raise SecateursError("gradient_checkpointing: this model has no gradient checkpointing (transformers models do); set it to false")


class _Run:
    """One recovery: the student, the teacher, the batches and the optimizer."""

    def __init__(self, student: LoadedModel, teacher: LoadedModel, spec: RecoverSpec, manager: PluginManager,
                 removed: Sequence[str] | None) -> None:
        self.student, self.teacher, self.spec = student, teacher, spec
        self.batches = training_batches(spec, student, manager)
        self.evaluator = eval_part(spec, manager)
        self.masks = unit_masks(student)
        self.matched = layer_map(spec, student, teacher, removed) if spec.hidden_mse else []
        self.dtype = next(student.model.parameters()).dtype
        model = student.model
        if self.dtype in (torch.float16, torch.bfloat16):
            model.float()
        teacher.model.eval().requires_grad_(False)
        self.peft = _with_lora(model, spec, student) if spec.lora else None
        if self.peft is None:
            model.requires_grad_(True)
        if spec.gradient_checkpointing:
            _checkpointing(model, True)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=spec.lr, weight_decay=spec.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _schedule(spec))
        self.masked = [] if self.peft else _masked(model, self.masks)

    def loss(self, batch: Any) -> torch.Tensor:
        s_hidden: dict[int, torch.Tensor] = {}
        t_hidden: dict[int, torch.Tensor] = {}
        with torch.no_grad(), _captured(self.teacher, self.matched, t_hidden):
            t_logits = _logits(self.teacher.adapter.forward(self.teacher.model, batch))
        with _captured(self.student, range(len(self.matched)), s_hidden):
            s_logits = _logits(self.student.adapter.forward(self.student.model, batch))
        loss = distillation_loss(s_logits, t_logits.to(s_logits.device), self.spec.temperature)
        if self.matched:
            loss = loss + self.spec.hidden_mse * self._hidden_mse(s_hidden, t_hidden)
        return loss

    def _hidden_mse(self, student: Mapping[int, torch.Tensor], teacher: Mapping[int, torch.Tensor]) -> torch.Tensor:
        terms = []
        for i, j in enumerate(self.matched):
            s, t = student[i], teacher[j]
            if s.shape != t.shape:
                raise SecateursError(
                    f"hidden_mse: student layer {i} gives hidden states {tuple(s.shape)}, teacher layer {j} "
                    f"{tuple(t.shape)}; a narrowed student has no matching hidden states: set hidden_mse = 0"
                )
            terms.append(F.mse_loss(s.float(), t.to(s.device).float()))
        return torch.stack(terms).mean()

    def step(self, state: TrainState) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; the mean loss."""
        accum = self.spec.grad_accum
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for batch in self.batches[state.step * accum : (state.step + 1) * accum]:
            loss = self.loss(batch) / accum
            loss.backward()
            total += float(loss.detach())
        apply_masks(self.masked, grads=True)
        torch.nn.utils.clip_grad_norm_(self.params, CLIP_NORM)
        self.optimizer.step()
        self.scheduler.step()
        apply_masks(self.masked)
        state.step += 1
        state.losses.append(total)
        return total

    def evaluate(self, loaded: LoadedModel) -> dict[str, float]:
        model = loaded.model
        was_training = model.training
        model.eval()
        try:
            return dict(self.evaluator.evaluate(loaded))
        finally:
            model.train(was_training)

    def finish(self) -> None:
        """Free the gradients, merge LoRA adapters back, re-apply the masks, cast back to the
        student's dtype."""
        model = self.student.model
        self.optimizer.zero_grad(set_to_none=True)
        if self.spec.gradient_checkpointing:
            _checkpointing(model, False)
        if self.peft is not None:
            self.peft.merge_and_unload()
        apply_masks(_masked(model, self.masks))
        model.to(self.dtype).eval()


def distil(
    student: LoadedModel,
    teacher: LoadedModel,
    spec: RecoverSpec,
    manager: PluginManager,
    *,
    checkpoint: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    removed: Sequence[str] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Distil ``teacher`` into ``student`` in place as ``spec`` says (``spec.seed`` must be
    set: ``RecoverSpec.with_seed``); returns the record a report keeps.

    ``checkpoint``: the folder checkpoints go to every ``checkpoint_every`` steps; with
    ``resume`` the run continues from the one there (refused when there is none), without
    it an existing one is refused. ``removed``: block names the pruning removed (the layer
    map of ``hidden_mse``). ``on_step(step, loss)`` is called after every step."""
    if spec.seed is None:
        raise ValueError("distil needs spec.seed set (RecoverSpec.with_seed)")
    check_resume(checkpoint, resume)
    torch.manual_seed(spec.seed)
    random.seed(spec.seed)
    run = _Run(student, teacher, spec, manager, removed)
    state = TrainState()
    if resume:
        state = load_checkpoint(checkpoint, student.model, run.optimizer, run.scheduler, spec)
    resumed_from = state.step if resume else None
    teacher_eval = before = None
    if run.evaluator is not None and not state.evals:
        teacher_eval = run.evaluate(teacher)
        before = run.evaluate(student)
        state.evals.append({"step": 0, **before, "teacher": teacher_eval})
    student.model.train()
    session_tokens, session_seconds = 0, 0.0
    with tqdm(total=spec.steps, initial=state.step, desc="recover", unit="step", disable=not progress) as bar:
        while state.step < spec.steps:
            started = time.perf_counter()
            loss = run.step(state)
            spent = time.perf_counter() - started
            state.seconds += spent
            session_seconds += spent
            session_tokens += spec.tokens_per_step
            bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{session_tokens / session_seconds:.0f}")
            bar.update()
            unfinished = state.step < spec.steps
            if run.evaluator is not None and spec.eval_every and state.step % spec.eval_every == 0 and unfinished:
                state.evals.append({"step": state.step, **run.evaluate(student)})
            if checkpoint is not None and state.step % spec.checkpoint_every == 0 and unfinished:
                save_checkpoint(checkpoint, student.model, run.optimizer, run.scheduler, state, spec)
            if on_step is not None:
                on_step(state.step, loss)
    run.finish()
    after = run.evaluate(student) if run.evaluator is not None else None
    if after is not None:
        state.evals.append({"step": state.step, **after})
    return _record(spec, state, run, resumed_from, after)


def _record(spec: RecoverSpec, state: TrainState, run: _Run, resumed_from: int | None,
            after: Mapping[str, float] | None) -> dict[str, Any]:
    losses = state.losses
    stride = max(1, len(losses) // _CURVE_POINTS)
    first = state.evals[0] if state.evals else None
    tokens = state.step * spec.tokens_per_step
    return {
        "steps": state.step,
        "tokens": tokens,
        "seconds": state.seconds,
        "tokens_per_second": tokens / state.seconds if state.seconds else None,
        "loss": {
            "first": losses[0] if losses else None,
            "last": losses[-1] if losses else None,
            "curve": [[i + 1, losses[i]] for i in range(0, len(losses), stride)],
        },
        "evaluation": None if first is None else {
            "teacher": first["teacher"],
            "before": {k: v for k, v in first.items() if k not in ("step", "teacher")},
            "after": dict(after) if after is not None else None,
            "during": state.evals[1:-1],
        },
        "masked_units": len(run.masks),
        "resumed_from_step": resumed_from,
        "recover": spec.to_dict(),
    }
