"""The KEN delta file: only the kept fine-tuned values and their positions.

``<name>.safetensors`` holds, for every tensor that differs from the base model,
``<tensor>::values`` (the kept fine-tuned values, row-major order) and either
``<tensor>::bits`` (a row-wise bitmask packed 8 per byte) or ``<tensor>::cols`` (int16 or
int32 column indices plus ``<tensor>::counts`` per row), whichever is smaller. The JSON
manifest names the base model and holds the sha256 of its state (``states.checksum``);
loading refuses any other base. Rebuilding = base + scatter(values) is bit-identical to
the KEN model: the positions stored are exactly the entries whose bits differ from the base.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import attrs
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from secateurs.errors import SecateursError
from secateurs.offload import LazyState
from secateurs.outputs import atomic_file
from secateurs.protocols import LoadedModel
from secateurs.recipe import Recipe
from secateurs.run import reference_state
from secateurs.tensor_files import Add, streamed_safetensors
from secateurs.types import PruneResult
from secateurs_ken.states import Checksum, State, as_rows, check_names, check_shapes, checksum, state_of

FORMAT = "secateurs-ken-delta/1"
_BITS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)


def _differs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Bitwise inequality (so -0.0 vs 0.0 and NaN payloads count)."""
    ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return a.contiguous().view(ints) != b.contiguous().view(ints)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """``[R, n]`` bool → ``[R, ceil(n/8)]`` uint8, most significant bit first (``np.packbits``)."""
    rows, n = mask.shape
    pad = (-n) % 8
    padded = torch.nn.functional.pad(mask.to(torch.uint8), (0, pad)).view(rows, -1, 8)
    return (padded * _BITS.to(mask.device)).sum(dim=2, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, n: int) -> torch.Tensor:
    bits = (packed.unsqueeze(2) & _BITS.to(packed.device)) != 0
    return bits.view(packed.shape[0], -1)[:, :n]


CHUNK = 2**20
"""Entries of the row chunks a tensor's delta is computed and encoded in: the memory it
needs besides the two tensors."""


def _row_chunks(ken_rows: torch.Tensor, base_rows: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(ken rows, changed mask)`` of consecutive row chunks of about ``CHUNK`` entries."""
    step = max(1, CHUNK // max(ken_rows.shape[1], 1))
    for start in range(0, ken_rows.shape[0], step):
        ken = ken_rows[start : start + step]
        yield ken, _differs(ken, base_rows[start : start + step])


def _encode(name: str, ken_rows: torch.Tensor, base_rows: torch.Tensor, kept: int) -> dict[str, Iterator[torch.Tensor]]:
    """The delta tensors of ``name`` (``kept`` entries changed), each as its row-chunk pieces
    in order (``streamed_safetensors`` concatenates them): ``::values`` and ``::bits`` or
    ``::cols`` + ``::counts``, whichever is smaller."""
    rows, width = ken_rows.shape

    def chunks() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return _row_chunks(ken_rows, base_rows)

    out = {f"{name}::values": (ken[mask] for ken, mask in chunks())}
    index_dtype = torch.int16 if width <= 32767 else torch.int32
    col_bytes = kept * (2 if index_dtype == torch.int16 else 4) + rows * 4
    if col_bytes < rows * ((width + 7) // 8):
        out[f"{name}::cols"] = (torch.nonzero(mask)[:, 1].to(index_dtype) for _, mask in chunks())
        out[f"{name}::counts"] = (mask.sum(dim=1).to(torch.int32) for _, mask in chunks())
    else:
        out[f"{name}::bits"] = (pack_bits(mask) for _, mask in chunks())
    return out


def _decode(name: str, tensors: dict[str, torch.Tensor], rows: int, width: int) -> torch.Tensor:
    if f"{name}::bits" in tensors:
        packed = tensors[f"{name}::bits"]
        expected = (rows, (width + 7) // 8)
        if packed.dtype != torch.uint8 or tuple(packed.shape) != expected:
            raise ValueError(f"{name}::bits is {packed.dtype} {tuple(packed.shape)}, expected uint8 {expected}")
        return unpack_bits(packed, width)
    counts, cols = tensors[f"{name}::counts"].long(), tensors[f"{name}::cols"].long()
    in_range = not cols.numel() or 0 <= int(cols.min()) <= int(cols.max()) < width
    if counts.shape != (rows,) or int(counts.sum()) != cols.numel() or not in_range:
        raise ValueError(f"{name}::counts / ::cols do not describe a {rows}x{width} mask")
    row_idx = torch.repeat_interleave(torch.arange(rows), counts)
    mask = torch.zeros(rows, width, dtype=torch.bool)
    mask[row_idx, cols] = True
    return mask


_REWRITE = "write it again with save_ken_delta"


def _read_manifest(manifest_path: Path) -> dict:
    """The manifest, checked: a ``SecateursError`` naming the file for bad JSON or keys."""
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SecateursError(f"KEN delta manifest {manifest_path} is not valid JSON ({exc}); {_REWRITE}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise SecateursError(f"{manifest_path} is not a KEN delta manifest ({FORMAT})")
    kinds = (("base_sha256", str), ("tensors", list), ("base_model", str))
    wrong = [k for k, kind in kinds if not isinstance(manifest.get(k), kind)]
    if wrong or not all(isinstance(t, str) for t in manifest["tensors"]):
        bad = ", ".join(wrong) or "tensors"
        raise SecateursError(f"KEN delta manifest {manifest_path} lacks or mangles {bad}; {_REWRITE}")
    return manifest


def _write_delta(name: str, base: torch.Tensor, ken: torch.Tensor, add: Add, digest: Checksum) -> tuple[int, int]:
    """Add the delta tensors of ``name`` (none when unchanged) and the base tensor to the
    checksum; returns how many entries changed, and of how many."""
    b, k = base.detach().cpu(), ken.detach().cpu()
    check_shapes(name, b, k)
    if b.dtype != k.dtype:
        raise SecateursError(f"tensor {name!r} is {k.dtype} in the KEN model but {b.dtype} in the base")
    digest.update(name, b)
    count = sum(int(mask.sum()) for _, mask in _row_chunks(as_rows(k), as_rows(b)))
    for key, pieces in _encode(name, as_rows(k), as_rows(b), count).items() if count else ():
        add(key, pieces)
    return count, b.numel()


def save_ken_delta(base: nn.Module | State, ken: nn.Module | State, path: str | Path, base_name: str = "") -> list[Path]:
    """Write the delta of ``ken`` over ``base`` to ``path`` (``.safetensors``) and its
    manifest (``path`` with ``.json``), atomically. Returns both paths.

    Streams: one tensor of each model is read at a time (a state may be lazy, such as
    ``secateurs.offload.LazyState`` of an offloaded model) and its encoding is computed and
    written out in row chunks (``CHUNK``, ``streamed_safetensors``), so memory holds one
    pair of tensors and one chunk's work, not the models."""
    base_sd, ken_sd = state_of(base), state_of(ken)
    check_names(base_sd, ken_sd)
    path = Path(path)
    digest, counts = Checksum(), {}
    with streamed_safetensors(path, metadata={"format": FORMAT}) as add:
        for name in sorted(ken_sd):  # one call per pair: the previous pair is freed before the next is read
            counts[name] = _write_delta(name, base_sd[name], ken_sd[name], add, digest)
    changed = [name for name, (kept, _) in counts.items() if kept]
    kept, total = (sum(c[i] for c in counts.values()) for i in (0, 1))
    manifest = {
        "format": FORMAT,
        "base_model": base_name,
        "base_sha256": digest.hexdigest(),
        "tensors": changed,
        "kept_values": kept,
        "base_values": total,
    }
    manifest_path = path.with_suffix(".json")
    with atomic_file(manifest_path) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2))
    return [path, manifest_path]


def load_ken_delta(base: nn.Module | State, path: str | Path) -> nn.Module | dict[str, torch.Tensor]:
    """Rebuild the KEN model from its base and a delta file. Given a module, returns a new
    module (a deep copy of ``base`` with the KEN weights); given a state dict, a new state
    dict. ``base`` is never modified. A base whose checksum differs is refused."""
    path = Path(path)
    manifest_path = path.with_suffix(".json")
    if not path.is_file() or not manifest_path.is_file():
        raise SecateursError(f"KEN delta {path} (and its manifest {manifest_path.name}) not found")
    manifest = _read_manifest(manifest_path)
    base_sd = state_of(base)
    if checksum(base_sd) != manifest["base_sha256"]:
        raise SecateursError(
            f"this KEN delta was made for base model {manifest['base_model'] or '(unnamed)'} "
            f"(sha256 {manifest['base_sha256'][:12]}…); the given base model differs. "
            "Load it onto the exact pre-trained model it was made from"
        )
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise SecateursError(f"KEN delta {path} cannot be read ({exc}): truncated or corrupt; copy it again") from None
    out = {name: t.detach().clone() for name, t in base_sd.items()}
    for name in manifest["tensors"]:
        if name not in out:
            raise SecateursError(f"KEN delta {path} names tensor {name!r}, which the base model does not have")
        rows = as_rows(out[name])
        try:
            mask = _decode(name, tensors, *rows.shape)
            values = tensors[f"{name}::values"]
            if values.numel() != int(mask.sum()):
                raise ValueError(f"{name}::values holds {values.numel()} values for {int(mask.sum())} positions")
        except KeyError as exc:
            raise SecateursError(f"KEN delta {path} lacks tensor {exc.args[0]!r}; {_REWRITE}") from None
        except ValueError as exc:
            raise SecateursError(f"KEN delta {path}: {exc}; {_REWRITE}") from None
        rows[mask] = values.to(rows.dtype)
    if isinstance(base, nn.Module):
        import copy

        model = copy.deepcopy(base)
        model.load_state_dict(out)
        return model
    return out


@attrs.frozen
class KenDeltaExporter:
    """Exporter ``ken-delta``: writes ``<file>`` (default ``ken-delta.safetensors``) and its
    manifest against the recipe's ``reference_model`` (the pre-trained model)."""

    file: str = "ken-delta.safetensors"

    def export(self, loaded: LoadedModel, result: PruneResult, directory: Path) -> list[Path]:
        """Write the delta of ``loaded`` over the recipe's reference model, tensor by tensor:
        under ``max_memory`` neither model is held whole (``reference_state``, ``LazyState``)."""
        if not (result.recipe or {}).get("reference_model"):
            raise SecateursError("the ken-delta exporter needs `reference_model` in the recipe")
        recipe = Recipe.from_dict(result.recipe)
        return save_ken_delta(
            reference_state(recipe), LazyState(loaded.model), Path(directory) / self.file,
            base_name=str(recipe.reference_model),
        )
