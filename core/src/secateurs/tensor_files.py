"""Writing a safetensors file tensor by tensor, so that memory holds one tensor at a time.

``streamed_safetensors(path, metadata)`` yields an ``add(name, tensor)``: each tensor's
bytes go at once to a scratch sibling of ``path`` (one per item size; ``.NAME.tmp-PID-*``,
removed with the write, or as litter by the next write: ``secateurs.outputs``); on exit
the header and the scratch files, largest item size first so that every tensor stays
aligned, are concatenated into ``path`` atomically (``atomic_file``). The file is read by
``safetensors`` like one written by ``save_file``.
"""

from __future__ import annotations

import itertools
import json
import shutil
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import BinaryIO

import torch

from secateurs.outputs import atomic_file

DTYPES = {
    torch.float64: "F64", torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8",
    torch.uint8: "U8", torch.bool: "BOOL",
}
"""safetensors' names of the torch dtypes this writer stores."""

Add = Callable[[str, torch.Tensor | Iterable[torch.Tensor]], None]


class _Parts:
    """The scratch files of one write, by item size, and what each holds (name, dtype,
    shape, bytes), in the order added."""

    def __init__(self, tmp: Path, scratch: ExitStack) -> None:
        self.tmp, self.scratch = tmp, scratch
        self.files: dict[int, BinaryIO] = {}
        self.entries: dict[int, list[tuple[str, str, list[int], int]]] = {}
        self.names: set[str] = set()

    def add(self, name: str, tensor: torch.Tensor | Iterable[torch.Tensor]) -> None:
        if name in self.names:
            raise ValueError(f"tensor {name!r} added twice")
        pieces = iter([tensor] if isinstance(tensor, torch.Tensor) else tensor)
        first = next(pieces, None)
        if first is None:
            raise ValueError(f"tensor {name!r} has no pieces")
        if first.dtype not in DTYPES:
            raise ValueError(f"tensor {name!r} is {first.dtype}, which safetensors cannot store")
        size = first.element_size()
        if size not in self.files:
            part = self.tmp.with_name(f"{self.tmp.name}.{size}")
            self.scratch.callback(part.unlink, missing_ok=True)
            self.files[size] = self.scratch.enter_context(open(part, "w+b"))
        shape, rows, nbytes = list(first.shape), 0, 0
        for i, piece in enumerate(itertools.chain([first], pieces)):
            if i and (piece.dtype != first.dtype or piece.dim() == 0 or piece.shape[1:] != first.shape[1:]):
                raise ValueError(f"piece {i} of tensor {name!r} does not continue its first piece along dim 0")
            rows += piece.shape[0] if piece.dim() else 0
            data = piece.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
            self.files[size].write(data.numpy().data)
            nbytes += data.numel()
        shape[:1] = [rows] if shape else []
        self.entries.setdefault(size, []).append((name, DTYPES[first.dtype], shape, nbytes))
        self.names.add(name)

    def assemble(self, metadata: Mapping[str, str] | None) -> None:
        """Write the header, then the scratch files, largest item size first, to ``tmp``."""
        header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
        offset = 0
        for size in sorted(self.entries, reverse=True):
            for name, dtype, shape, nbytes in self.entries[size]:
                header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + nbytes]}
                offset += nbytes
        encoded = json.dumps(header, separators=(",", ":")).encode()
        encoded += b" " * (-len(encoded) % 8)
        with open(self.tmp, "wb") as out:
            out.write(struct.pack("<Q", len(encoded)) + encoded)
            for size in sorted(self.files, reverse=True):
                self.files[size].seek(0)
                shutil.copyfileobj(self.files[size], out, 16 * 2**20)


@contextmanager
def streamed_safetensors(path: str | Path, metadata: Mapping[str, str] | None = None) -> Iterator[Add]:
    """Yield ``add(name, tensor)``, which writes ``tensor`` (any device; a dtype of ``DTYPES``)
    out at once; ``tensor`` may also be an iterable of pieces, the tensor being their
    concatenation along dim 0 (written piece by piece: it is never whole in memory). On
    success ``path`` holds every added tensor and ``metadata``. ``add`` raises
    ``ValueError`` for a name added twice, no pieces, pieces that do not concatenate, or a
    dtype safetensors cannot name."""
    with atomic_file(path) as tmp, ExitStack() as scratch:
        parts = _Parts(tmp, scratch)
        yield parts.add
        parts.assemble(metadata)
