"""Pruning models dispatched with accelerate's big-model support (``device_map`` / offload).

A dispatched model keeps the weights of offloaded modules on the ``meta`` device;
accelerate's hooks load them from a weights map before each forward and drop them after.
Scorers read a block's weights and appliers write them, so the pipeline wraps each
block in ``materialized(block.module)``: inside, the block's offloaded weights are real
tensors on its execution device and the hooks leave them in place; on exit the (pruned)
values are saved to a secateurs-owned safetensors file that the hook reads from from
then on (the original offload storage, possibly the user's checkpoint, is never
written), and the tensors go back to ``meta``. Memory: the resident part of the model
plus one block, as in accelerate's own forward. Models without offload hooks are
untouched (``materialized`` is then a no-op), and accelerate is imported only when a
model uses it.

A memory budget (recipe keys ``max_memory`` and ``offload_folder``: ``Budget``) is met by
a device map with one entry per block (``block_device_map``), used two ways:

- streamed loading: an adapter that implements ``BudgetLoader`` builds the model on the
  meta device, asks ``block_device_map`` where each block goes, and lets its library load
  it (transformers: ``from_pretrained(device_map=...)``); weights of blocks on disk are
  then read lazily from the model's own safetensors shards, never all in memory;
- ``dispatch(loaded, max_memory=..., offload_folder=...)`` offloads a model already in
  memory (``prune(recipe, model=...)``).

A model that is only read, tensor by tensor, needs no budget of its own: loaded within
``Budget.disk_only()`` (every block stays in its shards), its tensors are read one at a
time by name through ``LazyState`` (KEN's reference model; the pruned model when its KEN
delta is written).

Saving an offloaded model goes shard by shard, each shard at most one device-map entry
(``offloaded_shard_size``). Host memory over a whole run: the resident entries (within
the budget, accelerate keeping room for one loaded entry), one loaded block, one block
boundary of calibration activations, and the process's fixed overhead.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import nn

from secateurs.errors import SecateursError
from secateurs.protocols import LoadedModel

MaxMemory = int | str | Mapping[str, int | str]


def _offload_hooks(module: nn.Module) -> list[tuple[nn.Module, Any]]:
    """(module, hook) for every active offloading accelerate hook in ``module``'s tree."""
    found = []
    for sub in module.modules():
        hook = getattr(sub, "_hf_hook", None)
        for h in getattr(hook, "hooks", (hook,)) if hook is not None else ():
            if getattr(h, "offload", False) and getattr(h, "weights_map", None) is not None:
                found.append((sub, h))
    return found


def _hook_keys(module: nn.Module, hook: Any) -> list[str]:
    """The tensor names the hook loads before a forward (as accelerate's ``pre_forward``)."""
    from accelerate.utils import named_module_tensors

    return [
        name
        for name, _ in named_module_tensors(
            module,
            include_buffers=hook.offload_buffers,
            recurse=hook.place_submodules,
            remove_non_persistent=True,
        )
    ]


def _tensor(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, attr = name.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, attr)


class StoredWeights(Mapping[str, torch.Tensor]):
    """A hook's weights map with the given tensors replaced by copies saved in a fresh
    safetensors file (under accelerate's offload folder when there is one, else the
    system temp dir), deleted when this map is garbage collected."""

    def __init__(self, base: Mapping[str, torch.Tensor], tensors: Mapping[str, torch.Tensor]) -> None:
        from safetensors.torch import save_file

        self.base = base.base if isinstance(base, StoredWeights) else base
        self.folder = tempfile.mkdtemp(prefix="secateurs-pruned-", dir=_store_root(self.base))
        weakref.finalize(self, shutil.rmtree, self.folder, True)
        self.file = os.path.join(self.folder, "weights.safetensors")  # a fresh private folder: no rename needed
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}, self.file)
        self.keys_saved = frozenset(tensors)

    def __getitem__(self, key: str) -> torch.Tensor:
        if key in self.keys_saved:
            from safetensors import safe_open

            with safe_open(self.file, framework="pt", device="cpu") as f:
                return f.get_tensor(key)
        return self.base[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys_saved or key in self.base

    def __iter__(self) -> Iterator[str]:
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)


class LazyState(Mapping[str, torch.Tensor]):
    """``model``'s state dict (names as ``state_dict()``, taken when created) whose offloaded
    tensors (``meta`` under accelerate's hooks) are read from their hook's weights map on
    each access (the model's own shards, accelerate's offload folder, or a pruned block's
    file): one tensor at a time, never kept. Resident tensors are returned as they are.
    Reads give what ``state_dict()`` of the same model held in memory would."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model  # keeps the hooks' files (removed with the model) alive
        self.tensors = model.state_dict()
        prefixes = {id(sub): name for name, sub in model.named_modules()}
        self.offloaded = {
            f"{prefixes[id(sub)]}.{key}".lstrip("."): (hook, key)
            for sub, hook in _offload_hooks(model)
            for key in _hook_keys(sub, hook)
        }

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor = self.tensors[name]
        if tensor.device.type != "meta":
            return tensor
        if name not in self.offloaded:
            raise SecateursError(f"tensor {name!r} is on the meta device and no offload hook loads it")
        hook, key = self.offloaded[name]
        return hook.weights_map[key]

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)


def _store_root(base: Mapping[str, torch.Tensor]) -> str | None:
    """accelerate's own offload folder when there is one (the user's chosen scratch disk)."""
    folder = getattr(getattr(base, "dataset", base), "save_folder", None)
    return folder if folder and os.path.isdir(folder) else None


@contextmanager
def materialized(module: nn.Module, *, writeback: bool = True) -> Iterator[None]:
    """Within the context, ``module``'s offloaded weights are real tensors on their execution
    device, and forwards use them as they are; on exit they are saved for the hooks
    (unless ``writeback`` is false: nothing was changed) and offloaded again.

    Re-entrant (an inner call on a materialized module does nothing). Raises
    ``SecateursError`` when weights of ``module`` are offloaded by a hook on a parent
    module (offload whole blocks or smaller units).
    """
    hooks = _offload_hooks(module)
    if not hooks:
        if any(p.device.type == "meta" for p in module.parameters()):
            raise SecateursError(
                "some weights of this block are on the meta device without an offload hook on the block "
                "or inside it; dispatch the model with whole blocks (or smaller) per device_map entry"
            )
        yield
        return
    from accelerate.utils import set_module_tensor_to_device

    entered: list[tuple[nn.Module, Any, list[str]]] = []
    ready = False
    try:
        for sub, hook in hooks:
            keys = _hook_keys(sub, hook)
            entered.append((sub, hook, keys))
            for key in keys:
                set_module_tensor_to_device(sub, key, hook.execution_device, value=hook.weights_map[key])
            hook.offload = False
        if any(p.device.type == "meta" for p in module.parameters()):
            raise SecateursError(
                "some weights of this block are offloaded by a hook on a parent module; dispatch the "
                "model with whole blocks (or smaller) per device_map entry"
            )
        ready = True
        yield
    finally:
        for sub, hook, keys in entered:
            if writeback and ready:
                tensors = {key: _tensor(sub, key) for key in keys}
                hook.weights_map = StoredWeights(hook.weights_map, tensors)
            for key in keys:
                set_module_tensor_to_device(sub, key, "meta")
            hook.offload = True


def _key(name: str) -> Any:
    """accelerate's ``max_memory`` key of a device: GPU index, or ``cpu`` / ``disk``."""
    dev = torch.device(name)
    return (dev.index or 0) if dev.type == "cuda" else dev.type


def _budget(max_memory: MaxMemory, device: str) -> dict[Any, int | str]:
    """accelerate's ``max_memory`` dict: GPU keys as indices, ``cpu`` / ``disk`` as is."""
    if isinstance(max_memory, int | str):
        return {_key(device): max_memory}
    if not isinstance(max_memory, Mapping) or not max_memory:
        raise SecateursError("max_memory must be a size (\"2GiB\", bytes) or a table of device = size")
    try:
        return {_key(str(k)): v for k, v in max_memory.items()}
    except RuntimeError as exc:
        raise SecateursError(f"max_memory: {exc}") from None


@attrs.frozen
class Budget:
    """A memory budget: ``max_memory`` (a size for the compute device, or ``{device: size}``
    with ``cpu`` / GPU keys, accelerate's meaning) and the folder under which blocks that
    do not fit go to disk (default: the system temp dir)."""

    max_memory: MaxMemory
    offload_folder: str | Path | None = None

    def scratch(self) -> str:
        """A fresh folder under ``offload_folder`` for a model's offloaded weights (the
        caller removes it with the model: ``remove_with``)."""
        root = Path(self.offload_folder or tempfile.gettempdir()).expanduser()
        root.mkdir(parents=True, exist_ok=True)
        return tempfile.mkdtemp(prefix="secateurs-offload-", dir=root)

    def disk_only(self) -> Budget:
        """This budget's offload folder with nothing resident: every block stays on disk and
        is read when used (a model that is only looked up, such as KEN's reference model,
        read tensor by tensor through ``LazyState``)."""
        return Budget({"cpu": 0}, self.offload_folder)


def remove_with(model: nn.Module, folder: str) -> None:
    """Remove ``folder`` when ``model`` is garbage collected (or at exit)."""
    weakref.finalize(model, shutil.rmtree, folder, True)


def block_device_map(
    model: nn.Module,
    blocks: Sequence[nn.Module],
    budget: Budget,
    *,
    device: str = "cpu",
    dtype: torch.dtype | str | None = None,
) -> dict[str, Any]:
    """accelerate's device map of ``model`` (real or on the meta device) for ``budget``, with
    every one of ``blocks`` its own entry: the unit accelerate loads (from the CPU or the
    disk) before that block's forward and drops after, and the unit ``materialized``
    works on. Blocks are never split; ``dtype``: the dtype the weights will have.

    The budget of ``device`` covers the resident entries, one loaded entry (accelerate
    keeps room for the largest offloaded entry on the devices that load it) and the work
    on it (scores, sorts, masks, updated copies: room for two more blocks is kept here).
    """
    from accelerate import infer_auto_device_map
    from accelerate.utils import convert_file_size_to_int

    no_split = sorted({type(b).__name__ for b in blocks})
    limits = _budget(budget.max_memory, device)
    work = _key(device)
    try:
        if work in limits:
            block = max(_loaded_bytes(b, dtype) for b in blocks)
            limits[work] = max(convert_file_size_to_int(limits[work]) - 2 * block, 1)
        device_map = infer_auto_device_map(
            model, max_memory=limits, no_split_module_classes=no_split, dtype=dtype, clean_result=False
        )
    except (ValueError, RuntimeError) as exc:
        raise SecateursError(f"max_memory {budget.max_memory!r}: {exc}") from None
    ids = {id(b) for b in blocks}
    names = [name for name, module in model.named_modules() if id(module) in ids]
    return _split_to_blocks(model, device_map, names)


def _loaded_bytes(module: nn.Module, dtype: torch.dtype | str | None) -> int:
    """Bytes of ``module``'s parameters once loaded in ``dtype`` (``None``: their own)."""
    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return sum(p.numel() * (dtype.itemsize if dtype else p.element_size()) for p in module.parameters())


def _split_to_blocks(model: nn.Module, device_map: Mapping[str, Any], blocks: Sequence[str]) -> dict[str, Any]:
    """``device_map`` with every entry that holds a block replaced by its children (same
    device), recursively, so that no entry holds more than one block."""
    def holds_block(name: str) -> bool:
        return any(b != name and (not name or b.startswith(name + ".")) for b in blocks)

    out: dict[str, Any] = {}
    pending = list(device_map.items())
    while pending:
        name, dev = pending.pop(0)
        if holds_block(name):
            children = model.get_submodule(name).named_children()
            pending[:0] = [(f"{name}.{child}" if name else child, dev) for child, _ in children]
        else:
            out[name] = dev
    return out


def execution_device(model: nn.Module) -> torch.device:
    """Where ``model``'s inputs go: the device of its first parameter, or, when that one is
    offloaded, the execution device of the accelerate hook that loads it."""
    name, param = next(iter(model.named_parameters()))
    if param.device.type != "meta":
        return param.device
    path = name.split(".")[:-1]
    for depth in range(len(path), -1, -1):
        hook = getattr(model.get_submodule(".".join(path[:depth])), "_hf_hook", None)
        for h in getattr(hook, "hooks", (hook,)) if hook is not None else ():
            if getattr(h, "execution_device", None) is not None:
                return torch.device(h.execution_device)
    return param.device


def offloaded_shard_size(model: nn.Module) -> int | None:
    """The bytes of ``model``'s largest offloaded device-map entry (``None`` when accelerate
    offloads none): the shard size that keeps writing the model within the budget, one
    entry's weights loaded at a time."""
    device_map = getattr(model, "hf_device_map", None) or {}
    sizes = [
        sum(t.numel() * t.element_size() for t in tensors)
        for tensors in (list(model.get_submodule(name).parameters()) for name in device_map)
        if any(t.device.type == "meta" for t in tensors)
    ]
    return max(max(sizes), 1) if sizes else None


def dispatch(
    loaded: LoadedModel,
    *,
    max_memory: MaxMemory,
    offload_folder: str | Path | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Dispatch ``loaded.model`` (in memory) with accelerate to fit ``max_memory``; blocks that
    do not fit go to the CPU (when ``device`` is a GPU and the budget names ``cpu``) or to
    disk under ``offload_folder`` (``Budget.scratch``). Returns the device map
    (``block_device_map``: one entry per block at most)."""
    try:
        from accelerate import dispatch_model
    except ImportError:
        raise SecateursError("offloading needs accelerate: pip install 'secateurs[offload]'") from None
    model = loaded.model
    if getattr(model, "hf_device_map", None) is not None:
        raise SecateursError(
            "this model is already dispatched with a device_map; do not set max_memory again"
        )
    budget = Budget(max_memory, offload_folder)
    device_map = block_device_map(model, [b.module for b in loaded.adapter.blocks(model)], budget, device=device)
    folder = budget.scratch() if "disk" in device_map.values() else None
    if folder is not None:
        remove_with(model, folder)
    main = "cpu" if torch.device(device).type == "cpu" else torch.device(device)
    dispatch_model(model, device_map, main_device=main, offload_dir=folder)
    return dict(device_map)
