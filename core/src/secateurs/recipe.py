"""TOML recipes validated into attrs objects, with errors that name the bad key.

A recipe::

    model = "smollm2-135m"          # a path, or a packaged model name
    output = "out/smollm2-wanda-50"
    sparsity = 0.5

    [calibration]                   # omit for data-free scorers
    name = "text"
    corpus = "shakespeare-train"
    nsamples = 128
    seqlen = 2048

    [scorer]
    name = "wanda"                  # every other key is a parameter of the part

    [allocator]
    name = "uniform"

    [applier]
    name = "zero"

    [evaluate]                      # optional: measured before and after pruning
    name = "perplexity"
    corpus = "shakespeare-test"

Instead of one ``sparsity`` and ``granularity``, a decoder recipe may state the smaller
model's sizes (``[sizes]``: config field names) or a parameter budget (``target_params =
"90M"``), with a scorer per step in ``[scorers]`` (``secateurs.shapes``)::

    [sizes]
    num_hidden_layers = 24
    intermediate_size = 1280

    [scorers]                       # optional; these are the defaults
    layers = "skip-loss"
    neurons = "activation"

A ``[recover]`` table distils the pruned model from the dense one right after pruning
(``secateurs.recover_spec``, docs/recovery.md).

``dtype`` (default ``"auto"``: the model's own dtype, in memory and on disk) may be
``"float32"``, ``"bfloat16"`` or ``"float16"``; text sources take ``seqlen = "max"`` for the
model's maximum positions. Paths the run reads are ``Recipe.read_paths()``; outputs stay clear
of them (``secateurs.outputs.check_output``).

Parts may also be given as a bare name (``scorer = "wanda"``); ``exporters`` is a list of
names or tables (default ``["safetensors", "report"]``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs

from secateurs.errors import SecateursError
from secateurs.validators import check_sparsity
from secateurs.protocols import UNSTRUCTURED
from secateurs.recover_spec import RecoverSpec
from secateurs.types import HIDDEN, LAYERS

HEADS, NEURONS = "heads", "neurons"
SIZE_STEPS = {
    "num_hidden_layers": LAYERS,
    "hidden_size": HIDDEN,
    "num_key_value_heads": HEADS,
    "num_attention_heads": HEADS,
    "intermediate_size": NEURONS,
}
"""The ``[sizes]`` keys (config field names) and the granularity whose step sets each."""
STEP_ORDER = (LAYERS, HIDDEN, HEADS, NEURONS)
"""The order of a sized run's steps on the same model."""
DEFAULT_STEP_SCORERS = {LAYERS: "skip-loss", HIDDEN: "activation", HEADS: "activation", NEURONS: "activation"}
"""Each step's scorer unless ``[scorers]`` names one."""


@attrs.frozen
class Part:
    """One named plugin part and its parameters."""

    name: str
    params: Mapping[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **self.params}


def _part(key: str, value: Any) -> Part:
    if isinstance(value, Part):
        return value
    if isinstance(value, str):
        return Part(value)
    if isinstance(value, Mapping):
        if "name" not in value or not isinstance(value["name"], str):
            raise SecateursError(f"recipe key {key!r} needs a string `name` (e.g. name = \"wanda\")")
        return Part(value["name"], {k: v for k, v in value.items() if k != "name"})
    raise SecateursError(f"recipe key {key!r} must be a name or a table, got {type(value).__name__}")


def _opt_part(key: str, value: Any) -> Part | None:
    return None if value is None else _part(key, value)


def _exporters(value: Any) -> tuple[Part, ...]:
    if not isinstance(value, list | tuple) or not value:
        raise SecateursError("recipe key 'exporters' must be a non-empty list of names or tables")
    return tuple(_part("exporters", v) for v in value)


def _patterns(key: str):
    def convert(value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return (value,)
        if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
            return tuple(value)
        raise SecateursError(f"recipe key {key!r} must be a glob pattern or a list of them")

    return convert


def _sparsity(_inst, _attr, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        raise SecateursError(f"recipe key 'sparsity' must be a number in [0, 1) (e.g. 0.5), got {str(value).lower()}")
    try:
        check_sparsity(value)
    except SecateursError as exc:
        raise SecateursError(f"recipe key 'sparsity': {exc}") from None


def _sizes(value: Any) -> dict[str, int] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping) or not value:
        raise SecateursError("recipe key 'sizes' must be a table of config sizes (e.g. [sizes] num_hidden_layers = 24)")
    for key, size in value.items():
        if key not in SIZE_STEPS:
            raise SecateursError(f"unknown size {key!r} in [sizes]; known sizes: {', '.join(SIZE_STEPS)}")
        if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
            raise SecateursError(f"[sizes] {key} must be a positive whole number (e.g. {key} = 24), got {size!r}")
    return dict(value)


def _scorers(value: Any) -> dict[str, Part]:
    if value is None:  # what ``to_dict`` writes for none
        return {}
    if not isinstance(value, Mapping):
        raise SecateursError('recipe key \'scorers\' must be a table keyed by granularity (e.g. layers = "skip-loss")')
    for key in value:
        if key not in STEP_ORDER:
            raise SecateursError(f"unknown step {key!r} in [scorers]; the steps are: {', '.join(STEP_ORDER)}")
    return {key: _part(f"scorers.{key}", part) for key, part in value.items()}


def _recover(value: Any) -> RecoverSpec | None:
    """``[recover]``: distil the pruned model from the dense one (``secateurs.recover``)."""
    return value if value is None or isinstance(value, RecoverSpec) else RecoverSpec.from_dict(value)


_UNITS = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9, "T": 10**12}


def parse_count(value: Any) -> int | None:
    """A parameter count: an int, or a number with a suffix K, M, B (or G), T
    (``"90M"``, ``"1.2B"``, ``"500K"``); ``None`` stays ``None``."""
    if value is None:
        return None
    text = value.strip().upper() if isinstance(value, str) else None
    try:
        if isinstance(value, int) and not isinstance(value, bool):
            count = value
        elif text and text[-1:] in _UNITS:
            count = round(float(text[:-1]) * _UNITS[text[-1]])
        elif text:
            count = int(text)
        else:
            raise ValueError
    except ValueError:
        count = 0
    if count <= 0:
        raise SecateursError(
            f"recipe key 'target_params' must be a positive parameter count (e.g. \"90M\", \"1.2B\", 500000), got {value!r}"
        )
    return count


_SEED_RANGE = (-(2**63), 2**64 - 1)
"""What ``torch.manual_seed`` takes."""


def _seed(_inst, _attr, value: Any) -> None:
    lo, hi = _SEED_RANGE
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SecateursError(f"recipe key 'seed' must be a whole number (e.g. seed = 0), got {value!r}")


@attrs.frozen
class Recipe:
    """A validated pruning run. ``Recipe.from_dict`` / ``load_recipe`` build one."""

    scorer: Part | None = attrs.field(default=None, converter=lambda v: _opt_part("scorer", v))
    sparsity: float | None = attrs.field(default=None, validator=_sparsity)
    model: str | None = None  # required unless the model is given in Python (``prune(model=...)``)
    output: str | None = None
    allocator: Part = attrs.field(default=Part("uniform"), converter=lambda v: _part("allocator", v))
    applier: Part = attrs.field(default=Part("zero"), converter=lambda v: _part("applier", v))
    exporters: tuple[Part, ...] = attrs.field(
        default=(Part("safetensors"), Part("report")), converter=_exporters
    )
    calibration: Part | None = attrs.field(default=None, converter=lambda v: _opt_part("calibration", v))
    evaluate: Part | None = attrs.field(default=None, converter=lambda v: _opt_part("evaluate", v))
    granularity: str = UNSTRUCTURED
    targets: tuple[str, ...] | None = attrs.field(default=None, converter=_patterns("targets"))
    exclude: tuple[str, ...] = attrs.field(default=(), converter=lambda v: _patterns("exclude")(v) or ())
    reference_model: str | None = None
    adapter: str | None = None
    device: str = "cpu"
    dtype: str = "auto"  # the model's own dtype in memory and on disk; "float32" upcasts
    seed: int = attrs.field(default=0, validator=_seed)
    max_memory: int | str | dict[str, int | str] | None = None  # offload: budget ("2GiB" or {device = size})
    offload_folder: str | None = None  # offload: where blocks that do not fit go (default: temp dir)
    sizes: dict[str, int] | None = attrs.field(default=None, converter=_sizes)  # a sized run (secateurs.shapes)
    target_params: int | None = attrs.field(default=None, converter=parse_count)  # a searched run
    scorers: dict[str, Part] = attrs.field(factory=dict, converter=_scorers)  # each step's scorer
    recover: RecoverSpec | None = attrs.field(default=None, converter=_recover)  # distil after pruning

    def __attrs_post_init__(self) -> None:
        if not self.shaped:
            if self.scorers:
                raise SecateursError("[scorers] names the scorers of a run with [sizes] or target_params; use `scorer`")
            missing = [k for k in ("scorer", "sparsity") if getattr(self, k) is None]
            if missing:
                raise SecateursError(
                    f"recipe is missing required key {missing[0]!r} (or state the sizes: [sizes] or target_params)"
                )
            return
        what = "[sizes]" if self.sizes is not None else "target_params"
        if self.sizes is not None and self.target_params is not None:
            raise SecateursError("give either [sizes] or target_params, not both")
        given = [k for k in ("sparsity", "scorer") if getattr(self, k) is not None]
        given += ["granularity"] if self.granularity != UNSTRUCTURED else []
        given += [k for k in ("targets", "reference_model") if getattr(self, k)]
        if given:
            raise SecateursError(
                f"{what} sets every step's size itself; remove the recipe's {given[0]!r} "
                "(each step's scorer goes in [scorers], e.g. layers = \"skip-loss\")"
            )
        if self.target_params is not None and self.max_memory is not None:
            raise SecateursError(
                "target_params prunes a copy of the model for each candidate, so it holds the model twice in "
                "memory; drop max_memory, or state the sizes in [sizes]"
            )
        for kind, allowed in (("allocator", ("uniform",)), ("applier", ("zero", "remove"))):
            if getattr(self, kind).name not in allowed:
                raise SecateursError(
                    f"{what} runs each step with the 'uniform' allocator and removes what it prunes; "
                    f"remove the recipe's {kind} {getattr(self, kind).name!r}"
                )

    @property
    def shaped(self) -> bool:
        """Whether the run states sizes (``[sizes]`` or ``target_params``) instead of a sparsity."""
        return self.sizes is not None or self.target_params is not None

    def require_single(self, command: str) -> None:
        """Refuse a sized run in ``command``, which runs one sparsity at one granularity."""
        if self.shaped:
            raise SecateursError(
                f"{command} runs one sparsity at one granularity; [sizes] and target_params runs go "
                "through `secateurs prune`"
            )

    def step_scorer(self, granularity: str) -> Part:
        """The scorer of a sized run's ``granularity`` step: ``[scorers]``, else the default."""
        return self.scorers.get(granularity) or Part(DEFAULT_STEP_SCORERS[granularity])

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Recipe:
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SecateursError(
                f"unknown recipe key {unknown[0]!r}; known keys: {', '.join(sorted(known))}"
            )
        for key in ("model", "output", "reference_model", "adapter", "device", "dtype", "granularity", "offload_folder"):
            if key in data and data[key] is not None and not isinstance(data[key], str):
                raise SecateursError(f"recipe key {key!r} must be a string, got {data[key]!r}")
        return cls(**data)

    def read_paths(self) -> list[tuple[str, str]]:
        """``(key, path)`` for every path the run reads or fills, which an output must stay
        clear of: ``model``, ``reference_model`` and ``offload_folder``, and every string of a
        part's parameters that names an existing file or folder (corpus files...)."""
        found = [("offload_folder", self.offload_folder)] if self.offload_folder else []
        for key in ("model", "reference_model"):  # a path, a factory "file.py:name", or a packaged name
            value = getattr(self, key)
            found += [(key, p) for p in {value, str(value).rpartition(":")[0]} if p and Path(p).expanduser().exists()]
        for key, value in self.to_dict().items():
            tables = value if isinstance(value, list) else [value]
            for table in tables:
                if not isinstance(table, dict):
                    continue
                for param, text in table.items():
                    if param != "name" and isinstance(text, str) and text and Path(text).expanduser().exists():
                        found.append((f"{key}.{param}", text))
        return found

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for field in attrs.fields(type(self)):
            value = getattr(self, field.name)
            if isinstance(value, Part):
                value = value.to_dict()
            elif isinstance(value, tuple) and value and isinstance(value[0], Part):
                value = [p.to_dict() for p in value]
            elif field.name == "scorers":
                value = {k: p.to_dict() for k, p in value.items()} or None
            elif isinstance(value, RecoverSpec):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[field.name] = value
        return out

    def with_overrides(self, overrides: Mapping[str, Any]) -> Recipe:
        """A copy with dotted keys replaced (``{"sparsity": 0.6, "scorer.comparison": "row"}``)."""
        data = self.to_dict()
        for key, value in overrides.items():
            head, _, tail = key.partition(".")
            if head not in data:
                raise SecateursError(f"unknown recipe key {head!r} in override {key!r}")
            if tail:
                if not isinstance(data[head], dict):
                    raise SecateursError(f"override {key!r}: {head!r} is not a table")
                data[head] = {**data[head], tail: value}
            else:
                data[head] = value
        return Recipe.from_dict({k: v for k, v in data.items() if v is not None})


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """``("scorer.comparison=row", "sparsity=0.6")`` → dotted keys with TOML-parsed values
    (a value that is not TOML stays a string). What ``Recipe.with_overrides`` takes;
    commands parse their ``--set KEY=VALUE`` options with it."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SecateursError(f"--set takes KEY=VALUE (e.g. scorer.comparison=row), got {pair!r}")
        out[key.strip()] = _parse_value(value.strip())
    return out


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a TOML recipe file."""
    return Recipe.from_dict(read_toml(path))


def read_toml(path: str | Path) -> dict[str, Any]:
    """The table of a TOML file; one ``SecateursError`` when it is missing, unreadable,
    not UTF-8 or not TOML."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise SecateursError(f"recipe file {file} does not exist")
    try:
        data = tomllib.loads(file.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise SecateursError(f"recipe {file} cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SecateursError(
            f"recipe {file} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8, as TOML requires"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise SecateursError(f"recipe {file} is not valid TOML: {exc}") from None
    return data
