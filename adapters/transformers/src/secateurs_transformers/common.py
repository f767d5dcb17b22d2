"""What every transformers adapter shares: loading a model folder, saving it, running it."""

from __future__ import annotations

import json
import pickle
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn

from secateurs.errors import SecateursError
from secateurs.offload import Budget, block_device_map, execution_device, offloaded_shard_size, remove_with
from secateurs.protocols import LoadedModel
from secateurs.types import ModelFacts
from secateurs.weight_checks import unsafe_pickle, unsafe_pickle_error
from secateurs_transformers import secateurs_resized, weights
from secateurs_transformers.secateurs_resized import LAYER_SIZES, PREFIX, layers, resized_class, stock_class


def read_config(path: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` as a dict, or ``None`` when it is not a transformers folder.
    A ``config.json`` that is not a JSON object raises ``SecateursError`` naming it."""
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        data = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SecateursError(f"{config} is not valid JSON ({exc}); fix it or copy the model's config.json again") from None
    if not isinstance(data, dict):
        raise SecateursError(f"{config} holds a JSON {type(data).__name__}, not an object; copy the model's config.json again")
    return data


def folder_facts(path: Path, accepts: Callable[[dict[str, Any]], bool]) -> ModelFacts | None:
    """What the folder's config says (``DescribingAdapter.describe``) when ``accepts(config)``;
    ``None`` otherwise, or when transformers cannot read the config (``load`` says why).
    Reads ``config.json`` only."""
    config = read_config(path)
    if config is None or not accepts(config):
        return None
    from transformers import AutoConfig

    try:
        parsed = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except (ValueError, KeyError, OSError):
        return None
    layers = getattr(parsed, "num_hidden_layers", None)
    sizes = {k: v for k, v in parsed.to_dict().items() if isinstance(v, int) and not isinstance(v, bool)}
    return ModelFacts(str(path), getattr(parsed, "max_position_embeddings", None), layers if isinstance(layers, int) else None, sizes)


WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_folder(path: Path, config: dict[str, Any]) -> None:
    """Refuse, with one clear line, a folder ``from_pretrained`` would fail on with a traceback:
    no weights, a ``model_type`` transformers does not know, malformed ``LAYER_SIZES``."""
    from transformers import CONFIG_MAPPING

    if not any((Path(path) / name).is_file() for name in WEIGHT_FILES):
        raise SecateursError(
            f"{path} has a config.json but no weights ({' or '.join(WEIGHT_FILES[::2])}); copy the weights into it"
        )
    model_type = config.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise SecateursError(
            f"{path}/config.json: model_type {model_type!r} is not an architecture the installed transformers "
            "knows; fix model_type or upgrade transformers"
        )
    sizes = config.get(LAYER_SIZES)
    if LAYER_SIZES in config and not (
        isinstance(sizes, list) and sizes
        and all(isinstance(layer, dict) and layer and all(isinstance(v, int) and not isinstance(v, bool) and v > 0
                                                          for v in layer.values()) for layer in sizes)
        and len(sizes) == config.get("num_hidden_layers", len(sizes))
    ):
        raise SecateursError(
            f"{path}/config.json: {LAYER_SIZES} must list one {{size name: positive integer}} table per layer "
            f"({config.get('num_hidden_layers')} layers); fix it or remove the key"
        )


def meta_model(path: Path, auto_class: Any) -> nn.Module | str:
    """The model ``auto_class`` (an Auto class or a model class) builds from the folder's
    config, on the meta device (no weights read, no memory used), or why it cannot be built."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
        build = getattr(auto_class, "from_config", None) or auto_class._from_config
        with torch.device("meta"):
            return build(config)
    except (ValueError, KeyError, OSError) as exc:
        return f"{auto_class.__name__} cannot build it: {exc}"


def find_layers(model: nn.Module) -> tuple[nn.ModuleList, str] | None:
    """The model's transformer layers (``secateurs_resized.layers``: LLaMA ``<base>.layers``
    or BERT ``<base>.encoder.layer``) and their qualified name; ``None`` when it has none."""
    try:
        found = layers(model)
    except TypeError:
        return None
    if not len(found):
        return None
    return found, next(name for name, module in model.named_modules() if module is found)


def load_folder(
    adapter: Any,
    path: Path,
    config: dict[str, Any],
    auto_class: Any,
    *,
    device: str,
    dtype: torch.dtype | None,
    budget: Budget | None = None,
) -> LoadedModel | None:
    """Load a model (with ``auto_class``) and its tokenizer from a local folder, offline;
    ``config`` is the folder's ``config.json`` (``read_config``). ``None`` when ``adapter``
    does not support the model.

    A model whose config records per-layer sizes (``LAYER_SIZES``, written by structured
    removal) is built as ``Resized<class>`` from ``secateurs_resized`` (the class the
    folder's ``auto_map`` names for ``trust_remote_code=True``, taken here from the
    installed package, not from the folder), so the layers have their saved shapes
    before the weights load.

    Before any weight is read, the model is built on the meta device (``meta_model``): a
    model ``adapter`` does not support gives ``None``, and the weight files are checked
    (``weights.check_files``: no float stored as an integer, one warning for NaN/Inf). A
    pickled ``.bin`` that ``weights_only`` loading refuses is one line
    (``secateurs.weight_checks.unsafe_pickle_error``); nothing in it runs.

    ``budget``: ``adapter.blocks`` of the model built on the meta device are placed by
    ``block_device_map`` and ``from_pretrained(device_map=...)`` loads only the resident
    entries; accelerate reads the others from the folder's safetensors shards when a
    block runs (or from its offload folder, when ``dtype`` converts them).
    """
    from transformers import CONFIG_MAPPING, AutoTokenizer

    check_folder(path, config)
    model_class = auto_class
    if LAYER_SIZES in config:
        model_class = resized_class(auto_class._model_mapping[CONFIG_MAPPING[config["model_type"]]])
    placement: dict[str, Any] = {}
    meta = meta_model(path, model_class)
    if isinstance(meta, str) and budget is not None:
        raise SecateursError(f"cannot load the model at {path} within max_memory: {meta}")
    if not isinstance(meta, str):  # else from_pretrained says what is wrong
        if not adapter.supports(meta):
            return None
        weights.check_files(path, meta, dtype, config)
    if budget is not None:
        placement = _placement(adapter, meta, device=device, dtype=dtype or config.get("dtype"), budget=budget)
    scratch = placement.get("offload_folder")
    try:
        model = model_class.from_pretrained(str(path), dtype=dtype or "auto", local_files_only=True, **placement)
    except (SafetensorError, OSError, KeyError, RuntimeError, TypeError, ValueError, EOFError,
            pickle.UnpicklingError) as exc:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        if unsafe_pickle(exc):
            raise unsafe_pickle_error(weights.pickle_files(path)) from None
        raise SecateursError(
            f"cannot load the model at {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}; "
            "the weights may be truncated or corrupt, or not match config.json: copy the model folder again"
        ) from None
    weights.check_loaded(path, model)
    if budget is None:
        model.to(device)
    elif scratch is not None:  # accelerate's scratch files go with the model
        remove_with(model, scratch)
    model.eval()
    if not adapter.supports(model):
        return None
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError):
        tokenizer = None
    return LoadedModel(model=model, adapter=adapter, source=str(path), tokenizer=tokenizer)


def _placement(adapter: Any, meta: nn.Module, *, device: str, dtype: Any, budget: Budget) -> dict[str, Any]:
    """``from_pretrained`` keywords loading within ``budget``: the device map of the model
    built on the meta device, and a fresh offload folder when anything goes to disk."""
    device_map = block_device_map(meta, [b.module for b in adapter.blocks(meta)], budget, device=device, dtype=dtype)
    placement: dict[str, Any] = {"device_map": device_map}
    if "disk" in device_map.values():
        placement["offload_folder"] = budget.scratch()
    return placement


def save_folder(loaded: LoadedModel, directory: Path) -> list[Path]:
    """``save_pretrained`` layout (safetensors) for the model and, if any, its tokenizer;
    with per-layer sizes, also the ``secateurs_resized`` module and ``auto_map``
    (``write_auto_map``). An offloaded model is written shard by shard, each shard at most
    one device-map entry (``offloaded_shard_size``), so saving stays within its budget."""
    shard = offloaded_shard_size(loaded.model)
    options = {} if shard is None else {"max_shard_size": shard, "state_dict": _untied_state_dict(loaded.model)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Attempting to save a model with offloaded modules")
        loaded.model.save_pretrained(str(directory), safe_serialization=True, **options)
    write_auto_map(loaded.model, Path(directory))
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(str(directory))
    return sorted(p for p in Path(directory).iterdir() if p.is_file())


def _untied_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict without the tied copies ``save_pretrained`` leaves out. accelerate's
    hooks replace offloaded parameters by new ``meta`` ones after each forward, so tied
    parameters are no longer one object and ``save_pretrained`` would write both."""
    state = model.state_dict()
    for target, source in (getattr(model, "all_tied_weights_keys", None) or {}).items():
        if source in state:
            state.pop(target, None)
    return state


def model_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go (its execution device when accelerate offloads it)."""
    return execution_device(model)


def first_output(output: Any) -> torch.Tensor:
    """A block's hidden state: the output itself, or the first element of a tuple."""
    return output[0] if isinstance(output, tuple | list) else output


# -- models whose layers were shrunk by structured removal -----------------------------


def record_layer_sizes(config: Any, sizes: list[dict[str, int]], expressible: set[str]) -> None:
    """Write the layers' ``sizes`` into ``config``.

    Every size that is the same in all layers and in ``expressible`` (the config fields
    the architecture builds its modules from) is set on the config, so plain
    ``from_pretrained`` builds the right shapes. If any other size remains, the whole
    per-layer list is stored under ``LAYER_SIZES``: the saved model then reloads with
    ``trust_remote_code=True`` (``write_auto_map``) or ``load_folder``.
    """
    leftover = False
    for key in sizes[0]:
        values = {layer[key] for layer in sizes}
        if len(values) == 1 and key in expressible:
            setattr(config, key, values.pop())
        elif len(values) > 1 or getattr(config, key, None) != sizes[0][key]:
            leftover = True
    if leftover:
        setattr(config, LAYER_SIZES, sizes)
    elif hasattr(config, LAYER_SIZES):
        delattr(config, LAYER_SIZES)


# -- reloading per-layer sizes with the stock loader ------------------------------------

MODULE_FILE = Path(secateurs_resized.__file__)
"""The self-contained modeling file saved next to weights with per-layer sizes."""
HEADS = (
    "ForSequenceClassification",
    "ForTokenClassification",
    "ForQuestionAnswering",
    "ForMultipleChoice",
    "ForMaskedLM",
    "ForPreTraining",
    "ForNextSentencePrediction",
)
"""Encoder head suffixes loaded with ``AutoModel<suffix>``; ``*Model`` loads with ``AutoModel``."""
AUTO_CLASSES = ("AutoModel", "AutoModelForCausalLM", *(f"AutoModel{suffix}" for suffix in HEADS))
"""Auto classes ``auto_map`` may name (those that build the saved class or its base model)."""


def auto_map(model: nn.Module) -> dict[str, str]:
    """``{Auto class: "secateurs_resized.Resized<class>"}`` for every Auto class that builds
    ``model``'s transformers class (``AutoModel``: its base model's class)."""
    import transformers

    targets = {stock_class(type(model)), stock_class(type(model.base_model))}
    mapping = {}
    for name in AUTO_CLASSES:  # _model_mapping: the config -> class table Auto classes load with
        built = getattr(transformers, name)._model_mapping.get(type(model.config), None)
        if built in targets:
            mapping[name] = f"{MODULE_FILE.stem}.{PREFIX}{built.__name__}"
    return mapping


def write_auto_map(model: nn.Module, directory: Path) -> None:
    """Make a ``save_pretrained`` folder reload with the stock Auto classes.

    ``architectures`` names the transformers class (never ``Resized<class>``). With
    per-layer sizes (``LAYER_SIZES`` in the config) the folder also gets
    ``secateurs_resized.py`` and an ``auto_map`` naming its classes, so
    ``AutoModel*.from_pretrained(directory, trust_remote_code=True)`` builds the layers at
    their sizes; without, any ``auto_map`` entry and file of ours is removed.
    """
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config["architectures"] = [stock_class(type(model)).__name__]
    ours = f"{MODULE_FILE.stem}."
    mapping = {k: v for k, v in (config.get("auto_map") or {}).items() if not str(v).startswith(ours)}
    copy = directory / MODULE_FILE.name
    if config.get(LAYER_SIZES):
        mapping |= auto_map(model)
        shutil.copyfile(MODULE_FILE, copy)
    else:
        copy.unlink(missing_ok=True)
    config.pop("auto_map", None)
    if mapping:
        config["auto_map"] = mapping
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
