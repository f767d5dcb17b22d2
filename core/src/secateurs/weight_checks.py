"""Checks of a model's weights made before (or, for in-memory tensors, right after) they load.

- ``check_stored_dtypes``: refuse a safetensors file whose header stores a floating-point
  parameter as an integer dtype (the loader would cast the bits to float without a word);
  reads the headers only.
- ``scan_nonfinite``: the names of floating-point tensors of safetensors files holding NaN
  or Inf, read in fixed-size chunks with plain reads (bounded memory; the file's pages
  stay in the page cache, not in the process); ``nonfinite_tensors`` does the same for
  tensors in memory; ``warn_nonfinite`` is the one warning line naming them.
- ``unsafe_pickle`` / ``unsafe_pickle_error``: a pickled checkpoint that weights-only loading
  (``weights_only=True``) refused (it holds Python objects), and the one line saying so.

Damaged files (a header that does not parse, data past the end) are refused with one line
saying the file is truncated or corrupt.
"""

from __future__ import annotations

import json
import pickle
import struct
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from secateurs.errors import SecateursError

FLOATS = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
"""safetensors' floating-point dtypes that are scanned for NaN/Inf (float8 has no Inf)."""
INTEGERS = frozenset({"BOOL", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64"})
"""safetensors' integer dtypes: never the storage of a floating-point parameter."""
CHUNK = 2**20
"""Bytes read and checked at a time (the checks' own memory)."""
MAX_HEADER = 100 * 2**20
"""The largest header read (safetensors' own limit)."""
NAMED = 5
"""Tensors named in the NaN/Inf warning; the rest are counted."""
CONVERT = (
    "if you trust its source, load it yourself and save it with safetensors "
    "(model.save_pretrained(folder, safe_serialization=True), or "
    "safetensors.torch.save_file(state_dict, 'model.safetensors')) and load that"
)


def _damaged(file: Path, why: str) -> SecateursError:
    return SecateursError(f"cannot load the model: {file} is truncated or corrupt ({why}); copy the model folder again")


def read_header(file: Path) -> tuple[int, dict[str, dict]]:
    """``(offset of the data, {tensor name: {"dtype", "shape", "data_offsets"}})`` of a
    safetensors file, checked against the file's size; ``SecateursError`` when damaged."""
    size = file.stat().st_size
    with open(file, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise _damaged(file, "no header")
        (length,) = struct.unpack("<Q", prefix)
        if length > min(size - 8, MAX_HEADER):
            raise _damaged(file, f"a header of {length} bytes")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise _damaged(file, f"header: {exc}") from None
    if not isinstance(header, dict):
        raise _damaged(file, "its header is not a JSON object")
    header.pop("__metadata__", None)
    try:
        end = max((int(entry["data_offsets"][1]) for entry in header.values()), default=0)
    except (TypeError, KeyError, IndexError, ValueError):
        raise _damaged(file, "a header entry has no data_offsets") from None
    if 8 + length + end > size:
        raise _damaged(file, f"{8 + length + end - size} bytes of tensor data are missing")
    return 8 + length, header


def check_stored_dtypes(files: Iterable[Path], expected: Mapping[str, torch.dtype]) -> None:
    """Refuse, naming the tensor, the file, the dtype stored and the dtype expected, a tensor
    that ``expected`` (floating-point parameters by the names the files use) says is a
    floating-point parameter but that a file's header stores as an integer dtype. Tensors
    ``expected`` does not name are not judged."""
    for file in files:
        for name, entry in read_header(file)[1].items():
            stored = entry.get("dtype")
            if stored in INTEGERS and name in expected:
                raise SecateursError(
                    f"{file}: tensor {name!r} is stored as {stored} (an integer dtype), but the model's "
                    f"parameter is floating-point ({str(expected[name]).removeprefix('torch.')}); its bits "
                    "would be read as numbers, so the model was not loaded: the file's header is wrong or "
                    "the file holds other weights; export the weights again"
                )


def scan_nonfinite(files: Iterable[Path]) -> list[str]:
    """Names of the floating-point tensors of the safetensors ``files`` that hold a NaN or an
    Inf, each read ``CHUNK`` bytes at a time."""
    found = []
    buffer = torch.empty(CHUNK, dtype=torch.uint8)
    for file in files:
        start, header = read_header(file)
        with open(file, "rb", buffering=0) as f:
            for name, entry in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
                dtype = FLOATS.get(entry.get("dtype"))
                if dtype is not None and not _finite_in_file(f, start, entry["data_offsets"], dtype, buffer):
                    found.append(name)
    return found


def _finite_in_file(f, start: int, offsets: Sequence[int], dtype: torch.dtype, buffer: torch.Tensor) -> bool:
    """Whether the tensor at ``offsets`` (relative to the data ``start``) of the open file
    ``f`` holds only finite values (``CHUNK`` is a multiple of every item size)."""
    f.seek(start + offsets[0])
    left = offsets[1] - offsets[0]
    while left > 0:
        n = f.readinto(buffer[: min(left, CHUNK)].numpy())
        if not n:
            return True  # past the end: read_header has refused truncated files already
        if not _finite(buffer[: n - n % dtype.itemsize].view(dtype)):
            return False
        left -= n
    return True


def nonfinite_tensors(tensors: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the floating-point tensors (not on the meta device) holding a NaN or an Inf."""
    return [
        name
        for name, t in tensors
        if t.is_floating_point() and t.device.type != "meta"
        and not all(_finite(piece) for piece in t.detach().reshape(-1).split(CHUNK // t.element_size()))
    ]


def _finite(x: torch.Tensor) -> bool:
    """Whether the floating-point ``x`` holds only finite values: its minimum and maximum
    are (NaN propagates through both; one pass, no temporary tensor)."""
    if not x.numel():
        return True
    low, high = torch.aminmax(x)
    return bool(torch.isfinite(low) & torch.isfinite(high))


def warn_nonfinite(names: Sequence[str], source: str) -> None:
    """One warning line naming the tensors of ``source`` that hold NaN or Inf (none: silent)."""
    if not names:
        return
    shown = ", ".join(names[:NAMED]) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")
    warnings.warn(
        f"{source}: {len(names)} weight tensor{'s' if len(names) > 1 else ''} hold NaN or Inf values "
        f"({shown}); scores and evaluations of this model are meaningless until the weights are fixed",
        stacklevel=2,
    )


def unsafe_pickle(exc: BaseException) -> bool:
    """Whether ``exc`` is ``torch.load(..., weights_only=True)`` refusing a pickle that holds
    Python objects (the code in it never ran)."""
    return isinstance(exc, pickle.UnpicklingError) and str(exc).startswith("Weights only load failed")


def unsafe_pickle_error(files: Sequence[Path]) -> SecateursError:
    """The one line for pickled checkpoint ``files`` refused by ``weights_only`` loading."""
    what = str(files[0]) if len(files) == 1 else f"one of {', '.join(str(f) for f in files)}"
    return SecateursError(
        f"{what} is not a safe weights file: it holds Python objects that weights_only loading "
        f"refuses, so it was not loaded (nothing in it ran); {CONVERT}"
    )
