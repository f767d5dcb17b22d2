"""Safe outputs: every command that writes checks its output with ``check_output`` before
any work, and writes through ``atomic_output_dir`` / ``atomic_file``.

Guarantees (README "Reliability"):

- an output is never an input, never contains one and never lies inside one (resolved real
  paths, symlinks included): the model, the reference model, the offload folder, corpus
  files, the recipe, and any other path the command reads;
- ``--overwrite`` replaces only a directory secateurs wrote (it holds ``MARKER``, and no
  file secateurs did not write) or a PNG secateurs wrote; an empty directory needs no flag;
  anything else is refused with a message saying what is there;
- writes go to a temporary sibling ``.NAME.tmp-PID-XXXX`` renamed into place when complete:
  a crash or a kill leaves the final path as it was. Litter of the same output left by a
  killed run (``.NAME.tmp-*`` / ``.NAME.old-*`` of a process no longer alive, older than
  this process) is removed by the next write of that output;
- files and folders get the permissions of any normal write (the umask applies);
- while an output folder is written, memory freed goes back to the system
  (``heap.returning_freed_memory``), so writing a model shard by shard stays within a
  memory budget.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from secateurs.errors import SecateursError
from secateurs.heap import returning_freed_memory

MARKER = ".secateurs-output.json"
"""Written last into every output directory: the names secateurs wrote there."""
PNG_METADATA = {"Software": "secateurs"}
"""``savefig(metadata=PNG_METADATA)``: marks a PNG as secateurs' own (``--overwrite`` may replace it)."""
_PNG_SIGNATURE = b"tEXtSoftware\x00secateurs"
STARTED = time.time()
"""When secateurs started in this process: litter older than this may be cleaned."""

Reads = Iterable[tuple[str, str | Path]]
"""``(what, path)`` pairs an output must stay clear of, e.g. ``("model", "models/llama")``."""


def real(path: str | Path) -> Path:
    """``path`` with ``~`` expanded and every symlink resolved (it need not exist)."""
    return Path(path).expanduser().resolve()


def _listing(names: Iterable[str], limit: int = 5) -> str:
    names = sorted(names)
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _check_clear_of(out: Path, reads: Reads) -> None:
    for what, path in reads:
        inp = real(path)
        if out == inp:
            raise SecateursError(
                f"output {out} is the {what} {inp}: writing it would replace the input; choose another output"
            )
        if inp.is_relative_to(out):
            raise SecateursError(
                f"output {out} contains the {what} {inp}: replacing it would delete the input; "
                f"choose an output outside {out}"
            )
        if out.is_relative_to(inp):
            raise SecateursError(f"output {out} lies inside the {what} {inp}; choose an output outside {inp}")


def _foreign(directory: Path) -> list[str]:
    """Entries of ``directory`` secateurs did not write there: all but those ``MARKER`` lists
    (all of them without a readable marker), and but any PNG secateurs wrote (``neuroal-plot``'s)."""
    try:
        ours = set(json.loads((directory / MARKER).read_text())["files"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        ours = set()
    listed = (p for p in directory.iterdir() if p.name not in ours)
    return sorted(p.name for p in listed if not (p.is_file() and _png_by_secateurs(p)))


def _png_by_secateurs(path: Path) -> bool:
    """Whether ``path`` is a PNG saved with ``PNG_METADATA`` (``False`` when unreadable)."""
    try:
        with open(path, "rb") as fh:
            return _PNG_SIGNATURE in fh.read(4096)
    except OSError:
        return False


def check_output(
    path: str | Path, *, reads: Reads = (), overwrite: bool = False, kind: Literal["dir", "file"] = "dir"
) -> Path:
    """Refuse, before any work, an output that would lose data; return its real path.

    ``reads`` are the paths the command reads (the output may not be, contain, or lie
    inside any of them). A ``kind="dir"`` output may be new or empty; with ``overwrite``
    it may also be a directory secateurs wrote. A ``kind="file"`` output may be new; with
    ``overwrite``, a PNG secateurs wrote.
    """
    out = real(path)
    _check_clear_of(out, reads)
    if kind == "dir":
        if out.exists() and not out.is_dir():
            raise SecateursError(f"output {out} exists and is not a directory; choose a directory path")
        if not out.is_dir() or not any(out.iterdir()):
            return out
        foreign = _foreign(out)
        if foreign:
            raise SecateursError(
                f"output directory {out} holds files secateurs did not write ({_listing(foreign)}); "
                "--overwrite replaces only a directory secateurs wrote: choose a new or empty directory"
            )
        if not overwrite:
            raise SecateursError(
                f"output directory {out} holds an earlier secateurs output; pass --overwrite to replace it"
            )
        return out
    if out.is_dir():
        raise SecateursError(f"output {out} is a directory; give a file path")
    if out.exists():
        if not overwrite:
            raise SecateursError(f"output file {out} exists; pass --overwrite to replace it, or choose another path")
        if not _png_by_secateurs(out):
            raise SecateursError(
                f"output file {out} was not written by secateurs; --overwrite replaces only secateurs' own "
                "files: choose another path"
            )
    return out


_PID = re.compile(r"(tmp|old)-(\d+)-[0-9a-f]+(\..*)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def clean_stale(final: Path) -> list[Path]:
    """Remove ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` siblings of ``final`` whose process
    is gone and that are older than this process (litter of a killed write). Returns them."""
    removed = []
    if not final.parent.is_dir():
        return removed
    prefix = f".{final.name}."
    for entry in final.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _PID.fullmatch(entry.name[len(prefix):])
        if match is None or entry.lstat().st_mtime >= STARTED:
            continue
        pid = int(match.group(2))
        if pid != os.getpid() and _alive(pid):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc: read it by setting it, then put it back
    os.umask(mask)
    return mask


def _apply_umask(root: Path) -> None:
    """Give ``root`` and everything in it the mode a plain write gets (some writers, e.g.
    ``save_pretrained``'s safetensors, create their files 0600)."""
    mask = _umask()
    for path in [root, *root.rglob("*")] if root.is_dir() else [root]:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o111
        path.chmod((0o777 if executable else 0o666) & ~mask)


def _sibling(final: Path, kind: str, suffix: str = "") -> Path:
    return final.parent / f".{final.name}.{kind}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


@contextmanager
def atomic_output_dir(path: str | Path, *, overwrite: bool = False, reads: Reads = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (checked again with
    ``check_output``) and gets ``MARKER``, on failure it is removed. While it is written,
    freed buffers go back to the system (``returning_freed_memory``), so a model written
    shard by shard holds one shard at a time."""
    final = check_output(path, reads=reads, overwrite=overwrite)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = _sibling(final, "tmp")
    tmp.mkdir()  # mode 0o777 minus the umask, like any folder
    try:
        with returning_freed_memory():
            yield tmp
        names = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({"written_by": "secateurs", "files": names}, indent=1) + "\n")
        _apply_umask(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    trash = None
    if final.exists():
        check_output(final, reads=reads, overwrite=overwrite)
        trash = _sibling(final, "old")
        trash.mkdir()
        os.replace(final, trash / "old")
    os.replace(tmp, final)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (ending in ``suffix``, for writers that infer the
    format from it) to write; on success it replaces ``path``, on failure it is removed.
    Callers check a top-level output with ``check_output(kind="file")`` first."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(final)
    tmp = _sibling(final, "tmp", suffix)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies
    try:
        yield tmp
        _apply_umask(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (``atomic_file``); returns ``path``."""
    with atomic_file(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)
