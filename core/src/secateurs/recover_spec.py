"""The ``[recover]`` table: how a pruned model is distilled from its dense teacher
(``secateurs.recover``), validated before anything is loaded.

::

    [recover]
    tokens = 200_000            # training tokens (the budget), rounded up to whole steps
    seqlen = 256                # tokens per window
    batch_size = 4              # windows per micro-batch
    grad_accum = 1              # micro-batches per optimizer step
    lr = 1e-4
    schedule = "cosine"         # or "constant"; after `warmup` (a fraction of the steps, or a step count)
    temperature = 1.0           # of the KL divergence
    hidden_mse = 0.0            # weight of a hidden-state MSE on matched layers (0: off)
    corpus = "shakespeare-train"  # or source = {name = "text", corpus = "my.txt"}
    eval_every = 0              # held-out evaluation every N steps (0: before and after only)
    checkpoint_every = 50       # steps between checkpoints (0: none)
    lora = {rank = 8, alpha = 16}  # optional: train LoRA adapters (peft), merged back at the end

Every bad key or value is one ``SecateursError`` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from secateurs.errors import SecateursError

SCHEDULES = ("cosine", "constant")
DEFAULT_SOURCE = {"name": "text", "corpus": "shakespeare-train"}
DEFAULT_EVAL = {"name": "perplexity", "corpus": "shakespeare-test", "max_windows": 8}
BUDGET_KEYS = ("nsamples", "seqlen", "batch_size", "seed")
"""Source parameters ``[recover]`` sets itself (from ``tokens``, ``seqlen``, ``batch_size``, ``seed``)."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _whole(key: str, value: Any, *, least: int = 1, example: int = 4) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = "a positive whole number" if least == 1 else f"a whole number >= {least}"
        raise SecateursError(f"[recover] {key} must be {what} (e.g. {key} = {example}), got {value!r}")
    return value


def _number(key: str, value: Any, *, positive: bool, example: str) -> float:
    if not _is_number(value) or value < 0 or (positive and value == 0):
        what = "a positive number" if positive else "a number >= 0"
        raise SecateursError(f"[recover] {key} must be {what} (e.g. {key} = {example}), got {value!r}")
    return float(value)


def _table(key: str, value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        return {"name": value}
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise SecateursError(f"[recover] {key} must be a table with a string `name` (e.g. {key} = {{name = \"text\"}})")
    return dict(value)


@attrs.frozen
class LoraSpec:
    """LoRA adapters (``peft``) on the ``targets`` modules (module-name suffixes; default:
    every prunable unit's module), merged back into the weights at the end."""

    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: tuple[str, ...] | None = None

    @classmethod
    def from_value(cls, value: Any) -> LoraSpec | None:
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if not isinstance(value, Mapping):
            raise SecateursError("[recover] lora must be a table (e.g. lora = {rank = 8, alpha = 16}) or true")
        unknown = sorted(set(value) - {"rank", "alpha", "dropout", "targets"})
        if unknown:
            raise SecateursError(f"unknown key {unknown[0]!r} in [recover] lora; known keys: alpha, dropout, rank, targets")
        targets = value.get("targets")
        if targets is not None and (
            not isinstance(targets, list | tuple) or not targets or not all(isinstance(t, str) for t in targets)
        ):
            raise SecateursError('[recover] lora.targets must be a list of module names (e.g. ["q_proj", "v_proj"])')
        dropout = _number("lora.dropout", value.get("dropout", 0.0), positive=False, example="0.05")
        if dropout >= 1:
            raise SecateursError(f"[recover] lora.dropout must be below 1, got {dropout!r}")
        return cls(
            rank=_whole("lora.rank", value.get("rank", 8), example=8),
            alpha=_number("lora.alpha", value.get("alpha", 16.0), positive=True, example="16"),
            dropout=dropout,
            targets=None if targets is None else tuple(targets),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"rank": self.rank, "alpha": self.alpha, "dropout": self.dropout}
        return out | ({"targets": list(self.targets)} if self.targets else {})


@attrs.frozen
class RecoverSpec:
    """A validated ``[recover]`` table (``RecoverSpec.from_dict``); see the module docstring.
    ``seed`` ``None``: the run's seed. ``eval`` ``None``: no held-out evaluation."""

    tokens: int = 200_000
    seqlen: int = 256
    batch_size: int = 4
    grad_accum: int = 1
    lr: float = 1e-4
    schedule: str = "cosine"
    warmup: float | int = 0.05
    weight_decay: float = 0.0
    temperature: float = 1.0
    hidden_mse: float = 0.0
    layer_map: tuple[int, ...] | None = None
    source: Mapping[str, Any] = attrs.field(factory=lambda: dict(DEFAULT_SOURCE))
    eval: Mapping[str, Any] | None = attrs.field(factory=lambda: dict(DEFAULT_EVAL))
    eval_every: int = 0
    checkpoint_every: int = 50
    checkpoint_dir: str | None = None
    seed: int | None = None
    gradient_checkpointing: bool = False
    lora: LoraSpec | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.seqlen * self.batch_size * self.grad_accum

    @property
    def steps(self) -> int:
        """Optimizer steps: the token budget rounded up to whole steps."""
        return -(-self.tokens // self.tokens_per_step)

    @property
    def warmup_steps(self) -> int:
        return round(self.warmup * self.steps) if isinstance(self.warmup, float) else self.warmup

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecoverSpec:
        """The spec of a ``[recover]`` table; one ``SecateursError`` for the first bad key or value."""
        if not isinstance(data, Mapping):
            raise SecateursError("recipe key 'recover' must be a table ([recover] with tokens = ...)")
        known = {f.name for f in attrs.fields(cls)} | {"corpus"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SecateursError(f"unknown key {unknown[0]!r} in [recover]; known keys: {', '.join(sorted(known))}")
        d = dict(data)
        values: dict[str, Any] = {}
        for key, example in (("tokens", 200_000), ("seqlen", 256), ("batch_size", 4), ("grad_accum", 1)):
            if key in d:
                values[key] = _whole(key, d[key], example=example)
        for key, example in (("eval_every", 100), ("checkpoint_every", 50)):
            if key in d:
                values[key] = _whole(key, d[key], least=0, example=example)
        for key, positive, example in (
            ("lr", True, "1e-4"), ("temperature", True, "1.0"), ("weight_decay", False, "0.01"), ("hidden_mse", False, "1.0"),
        ):
            if key in d:
                values[key] = _number(key, d[key], positive=positive, example=example)
        if "schedule" in d:
            if d["schedule"] not in SCHEDULES:
                raise SecateursError(f"[recover] schedule must be one of {', '.join(SCHEDULES)}, got {d['schedule']!r}")
            values["schedule"] = d["schedule"]
        if "warmup" in d:
            values["warmup"] = _warmup(d["warmup"])
        if d.get("layer_map") is not None:
            values["layer_map"] = _layer_map(d["layer_map"])
        values["source"] = _source(d)
        if "eval" in d:
            values["eval"] = None if d["eval"] is False else _table("eval", d["eval"])
        for key in ("checkpoint_dir",):
            if d.get(key) is not None:
                if not isinstance(d[key], str) or not d[key]:
                    raise SecateursError(f"[recover] {key} must be a folder path (a string), got {d[key]!r}")
                values[key] = d[key]
        if d.get("seed") is not None:
            if isinstance(d["seed"], bool) or not isinstance(d["seed"], int) or d["seed"] < 0:
                raise SecateursError(f"[recover] seed must be a whole number >= 0 (e.g. seed = 0), got {d['seed']!r}")
            values["seed"] = d["seed"]
        if "gradient_checkpointing" in d:
            if not isinstance(d["gradient_checkpointing"], bool):
                raise SecateursError(f"[recover] gradient_checkpointing must be true or false, got {d['gradient_checkpointing']!r}")
            values["gradient_checkpointing"] = d["gradient_checkpointing"]
        values["lora"] = LoraSpec.from_value(d.get("lora"))
        return cls(**values)

    def with_seed(self, seed: int) -> RecoverSpec:
        """This spec with ``seed`` unless it sets its own."""
        return self if self.seed is not None else attrs.evolve(self, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The table again (``from_dict(to_dict())`` is this spec); ``None`` values left out."""
        out = attrs.asdict(self, recurse=False)
        out["layer_map"] = None if self.layer_map is None else list(self.layer_map)
        if set(self.source) == {"name", "corpus"} and self.source["name"] == "text":
            out["corpus"] = self.source["corpus"]  # the shorthand, so that `--set corpus=...` replaces it
            del out["source"]
        else:
            out["source"] = dict(self.source)
        out["eval"] = False if self.eval is None else dict(self.eval)
        out["lora"] = None if self.lora is None else self.lora.to_dict()
        return {k: v for k, v in out.items() if v is not None}


def _warmup(value: Any) -> float | int:
    if isinstance(value, float) and 0 <= value < 1:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise SecateursError(
        f"[recover] warmup must be a fraction of the steps in [0, 1) (e.g. warmup = 0.05) or a step count "
        f"(e.g. warmup = 10), got {value!r}"
    )


def _layer_map(value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
    ):
        raise SecateursError(
            "[recover] layer_map must list the teacher layer matched to each student layer (e.g. layer_map = [0, 1, 3])"
        )
    return tuple(value)


def _source(d: Mapping[str, Any]) -> dict[str, Any]:
    """The training data's calibration source: ``source`` (a table), ``corpus`` (a corpus
    name or text file for the ``text`` source), or the default."""
    if "source" in d and "corpus" in d:
        raise SecateursError("[recover] takes either corpus or source, not both")
    if "corpus" in d:
        if not isinstance(d["corpus"], str) or not d["corpus"]:
            raise SecateursError(f"[recover] corpus must be a corpus name or a text file path, got {d['corpus']!r}")
        return {"name": "text", "corpus": d["corpus"]}
    if "source" not in d:
        return dict(DEFAULT_SOURCE)
    table = _table("source", d["source"])
    budget = [k for k in BUDGET_KEYS if k in table]
    if budget:
        raise SecateursError(
            f"[recover] source sets {budget[0]!r}, which [recover] sets itself; give tokens, seqlen, batch_size "
            "and seed in [recover] instead"
        )
    return table
