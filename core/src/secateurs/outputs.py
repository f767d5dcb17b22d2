"""Safe outputs: every command that writes checks its output with ``check_output`` before
any work, and writes through ``atomic_output_dir`` / ``atomic_file``.

Guarantees (README "Reliability"):

- an output is never an input, never contains one and never lies inside one (resolved real
  paths, symlinks included): the model, the reference model, the offload folder, corpus
  files, the recipe, and any other path the command reads;
- ``--overwrite`` replaces only a directory secateurs wrote (it holds ``MARKER``, and no
  file secateurs did not write) or a PNG secateurs wrote; an empty directory needs no flag;
  anything else is refused with a message saying what is there;
- an output is refused before any work when it cannot be written: a file stands where a
  parent folder must be, a folder on the way cannot be entered or read, the folder is not
  writable, the filesystem is read-only, or (``needs_bytes``) the disk has less free
  space than the model's size (``weights_size``);
- writes go to a temporary sibling ``.NAME.tmp-PID-XXXX`` put in place when complete; an
  earlier output is swapped with it in one step (``filesystem.exchange``), or, where the
  filesystem cannot, moved aside to ``.NAME.old-PID-XXXX`` first: a crash or a kill leaves
  the final path as it was or complete. When a killed overwrite left the final path
  missing, the next check or write of that output puts the previous one back from
  ``.NAME.old-*``. Other litter of the same output left by a killed run (``.NAME.tmp-*`` /
  ``.NAME.old-*`` of a process no longer alive, older than this process) is removed;
- a write that fails for a reason the user can fix (disk full, quota, file-size limit,
  read-only filesystem, permission; ``OSError`` or safetensors' ``SafetensorError``)
  removes the temporary output and is one ``SecateursError`` saying what and where;
- outputs checked and not yet in place are ``pending_outputs()``: after Ctrl-C the CLI
  names them (``interrupted()``);
- files and folders get the permissions of any normal write (the umask applies);
- while an output folder is written, memory freed goes back to the system
  (``heap.returning_freed_memory``), so writing a model shard by shard stays within a
  memory budget.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import stat
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from secateurs.errors import SecateursError
from secateurs.filesystem import exchange, write_fault
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


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
"""Weight files, in the order a folder holding several formats is counted (the first found)."""

_pending: dict[Path, None] = {}
"""Outputs checked (``check_output``) and not yet put in place, in order."""
_writing: dict[Path, Path] = {}
"""Temporary folder -> final path of every output folder being written now."""


def weights_size(path: str | Path) -> int:
    """Bytes of a model's weights: a file's size, or for a folder the sum of its
    ``*.safetensors`` files (else ``*.bin``, else ``*.pt`` / ``*.pth``); 0 for a packaged
    name or anything that is not a local file or folder."""
    model = Path(path).expanduser()
    try:
        if model.is_file():
            return model.stat().st_size
        if not model.is_dir():
            return 0
        files = [f for f in model.iterdir() if f.suffix in WEIGHT_SUFFIXES and f.is_file()]
    except OSError:
        return 0
    for group in (WEIGHT_SUFFIXES[:1], WEIGHT_SUFFIXES[1:2], WEIGHT_SUFFIXES[2:]):
        sizes = [f.stat().st_size for f in files if f.suffix in group]
        if sizes:
            return sum(sizes)
    return 0


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def _writable_folder(out: Path) -> Path:
    """The nearest existing folder above ``out``, where its parents and its temporary
    sibling will be created; refused unless it can be entered and written (and read, when
    it is ``out``'s parent) on a writable filesystem, or when a file stands in the way."""
    blocked = False
    for folder in out.parents:
        try:
            info = folder.stat()
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError:  # its parent cannot be entered
            blocked = True
            continue
        if not stat.S_ISDIR(info.st_mode):
            raise SecateursError(
                f"output {out}: {folder} is a file, not a folder; choose an output whose parent folders are folders"
            )
        break
    else:
        folder = Path(out.anchor)
    needed = os.R_OK | os.W_OK | os.X_OK if folder == out.parent else os.W_OK | os.X_OK
    effective = os.access in os.supports_effective_ids
    if blocked or not os.access(folder, os.X_OK, effective_ids=effective):
        raise SecateursError(
            f"output {out}: permission denied to enter the folder {folder}; choose an output in a folder you can "
            "read and write"
        )
    if os.statvfs(folder).f_flag & os.ST_RDONLY:
        raise SecateursError(
            f"output {out} is on a read-only filesystem ({folder}); choose an output on a writable disk"
        )
    if not os.access(folder, needed, effective_ids=effective):
        can = "read and write" if needed & os.R_OK else "write"
        raise SecateursError(
            f"output {out}: permission denied to {can} in the folder {folder}; choose an output in a folder you "
            f"can {can}"
        )
    return folder


def _check_space(out: Path, folder: Path, needs_bytes: int) -> None:
    if needs_bytes <= 0:
        return
    free = shutil.disk_usage(folder).free
    if free < needs_bytes:
        raise SecateursError(
            f"output {out}: the disk holding {folder} has {_size(free)} free and the model needs "
            f"{_size(needs_bytes)}; free space there or choose an output on another disk"
        )


def _check_replaceable(out: Path, *, overwrite: bool, kind: Literal["dir", "file"]) -> None:
    """Refuse to replace anything but what ``overwrite`` allows (``check_output``)."""
    if kind == "dir":
        if out.exists() and not out.is_dir():
            raise SecateursError(f"output {out} exists and is not a directory; choose a directory path")
        try:
            if not out.is_dir() or not any(out.iterdir()):
                return
        except PermissionError:
            raise SecateursError(
                f"output directory {out} cannot be read (permission denied); choose an output you can read and write"
            ) from None
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
        return
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


def check_output(
    path: str | Path,
    *,
    reads: Reads = (),
    overwrite: bool = False,
    kind: Literal["dir", "file"] = "dir",
    needs_bytes: int = 0,
) -> Path:
    """Refuse, before any work, an output that would lose data or cannot be written;
    return its real path.

    ``reads`` are the paths the command reads (the output may not be, contain, or lie
    inside any of them). A ``kind="dir"`` output may be new or empty; with ``overwrite``
    it may also be a directory secateurs wrote. A ``kind="file"`` output may be new; with
    ``overwrite``, a PNG secateurs wrote. The folder it goes in must be reachable and
    writable, and, when ``needs_bytes`` is given (``weights_size`` of the model), its disk
    must have that much free. First puts back a previous output a killed ``--overwrite``
    left aside and removes litter of killed writes (``clean_stale``). The output is then
    ``pending_outputs()`` until written.
    """
    out = real(path)
    _check_clear_of(out, reads)
    folder = _writable_folder(out)
    clean_stale(out)
    _check_replaceable(out, overwrite=overwrite, kind=kind)
    _check_space(out, folder, needs_bytes)
    _pending[out] = None
    return out


def pending_outputs() -> list[Path]:
    """Outputs this process checked (``check_output``) and has not put in place: what an
    interruption now leaves unwritten."""
    return list(_pending)


def interrupted() -> str:
    """The line the CLI prints after Ctrl-C: ``interrupted; nothing was written to OUT``."""
    outputs = pending_outputs()
    return f"interrupted; nothing was written to {', '.join(map(str, outputs))}" if outputs else "interrupted"


_PID = re.compile(r"(tmp|old)-(\d+)-[0-9a-f]+(\..*)?$")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        pass
    return True


def _stale(final: Path) -> list[tuple[Path, str]]:
    """``(entry, "tmp" | "old")`` for every sibling a killed write of ``final`` left: its
    process is gone and it is older than this process."""
    prefix = f".{final.name}."
    found = []
    for entry in final.parent.iterdir():
        if not entry.name.startswith(prefix):
            continue
        match = _PID.fullmatch(entry.name[len(prefix):])
        if match is None or entry.lstat().st_mtime >= STARTED:
            continue
        pid = int(match.group(2))
        if pid == os.getpid() or not _alive(pid):
            found.append((entry, match.group(1)))
    return found


def _restore(final: Path, stale: list[tuple[Path, str]]) -> None:
    """Put back at the missing ``final`` the newest previous output an overwrite killed
    between its two renames moved aside (``.NAME.old-PID-*/old``)."""
    aside = [entry for entry, kind in stale if kind == "old" and os.path.lexists(entry / "old")]
    if os.path.lexists(final) or not aside:
        return
    newest = max(aside, key=lambda entry: entry.lstat().st_mtime)
    try:
        os.rename(newest / "old", final)
    except OSError as exc:
        raise SecateursError(
            f"output {final} is missing and its previous version is in {newest / 'old'} (an overwrite was "
            f"killed), but putting it back failed ({exc.strerror}); move it back to {final} by hand"
        ) from exc
    warnings.warn(f"put back {final}: an interrupted --overwrite had moved it to {newest}", stacklevel=3)


def clean_stale(final: Path) -> list[Path]:
    """Litter of killed writes of ``final``: when ``final`` is missing, first put back the
    previous output a killed overwrite moved aside (never delete it), then remove every
    ``.NAME.tmp-PID-*`` / ``.NAME.old-PID-*`` sibling whose process is gone and that is
    older than this process. Returns the removed ones."""
    if not final.parent.is_dir():
        return []
    stale = _stale(final)
    _restore(final, stale)
    for entry, _ in stale:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
    return [entry for entry, _ in stale]


def _failure(exc: BaseException, path: Path) -> SecateursError | None:
    """The user's line for a write of ``path`` that failed for a reason they can fix
    (``filesystem.write_fault``), naming the output folder it belongs to; ``None`` otherwise."""
    code = write_fault(exc)
    if code is None:
        return None
    final = next((out for tmp, out in _writing.items() if path.is_relative_to(tmp)), path)
    where = final.parent
    if isinstance(exc, OSError) and exc.filename and code in (errno.EACCES, errno.EPERM):
        named = Path(os.fsdecode(exc.filename)).absolute()
        if not (named.is_relative_to(where) or where.is_relative_to(named)):
            return None  # a file the write read, not the output
    reason, todo = _fault_text(code, where)
    return SecateursError(
        f"writing {final} failed: {reason}; nothing was written (the partial output was removed): {todo}"
    )


def _fault_text(code: int, where: Path) -> tuple[str, str]:
    """What went wrong and what to do, for a ``WRITE_FAULTS`` errno of a write in ``where``."""
    if code == errno.ENOSPC:
        return f"the disk holding {where} is full", "free space there or choose an output on another disk"
    if code == errno.EDQUOT:
        return f"your disk quota on {where} is exceeded", "free space or choose an output on another disk"
    if code == errno.EFBIG:
        return (
            "a file grew past the file-size limit (ulimit -f) or the largest file the filesystem allows",
            "raise the limit (ulimit -f unlimited) or choose an output on another disk",
        )
    if code == errno.EROFS:
        return f"the filesystem of {where} is read-only", "choose an output on a writable disk"
    return f"permission denied in {where}", "choose an output in a folder you can write"


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


def _put_in_place(tmp: Path, final: Path) -> None:
    """Move the complete ``tmp`` to ``final``. An earlier ``final`` is exchanged with it in one
    step where the filesystem can (then removed with ``tmp``), else moved aside to
    ``.NAME.old-*`` first and put back if the second rename fails; a kill between the two
    leaves it there for ``clean_stale`` to put back."""
    _pending.pop(final, None)
    if not final.exists():
        os.replace(tmp, final)
        return
    if exchange(tmp, final):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    trash = _sibling(final, "old")
    trash.mkdir()
    os.replace(final, trash / "old")
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(trash / "old", final)
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def atomic_output_dir(path: str | Path, *, overwrite: bool = False, reads: Reads = ()) -> Iterator[Path]:
    """Yield a temporary directory; on success it replaces ``path`` (checked with
    ``check_output`` first and, again, just before) and gets ``MARKER``, on failure it is
    removed, and a failure the user can fix (disk full, file-size limit...) becomes one
    ``SecateursError``. While it is written, freed buffers go back to the system
    (``returning_freed_memory``), so a model written shard by shard holds one shard at a time."""
    final = check_output(path, reads=reads, overwrite=overwrite)
    tmp = _sibling(final, "tmp")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp.mkdir()  # mode 0o777 minus the umask, like any folder
        _writing[tmp] = final
        with returning_freed_memory():
            yield tmp
        names = sorted(p.name for p in tmp.iterdir())
        (tmp / MARKER).write_text(json.dumps({"written_by": "secateurs", "files": names}, indent=1) + "\n")
        _apply_umask(tmp)
        _check_clear_of(final, reads)
        _check_replaceable(final, overwrite=overwrite, kind="dir")
        _put_in_place(tmp, final)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        error = _failure(exc, final)
        if error is not None:
            raise error from exc
        raise
    finally:
        _writing.pop(tmp, None)


@contextmanager
def atomic_file(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` (ending in ``suffix``, for writers that infer the
    format from it) to write; on success it replaces ``path``, on failure it is removed, and
    a failure the user can fix becomes one ``SecateursError`` naming the output.
    Callers check a top-level output with ``check_output(kind="file")`` first."""
    final = Path(path)
    tmp = _sibling(final, "tmp", suffix)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        clean_stale(final)
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies
        yield tmp
        _apply_umask(tmp)
        _pending.pop(real(final), None)
        os.replace(tmp, final)
    except BaseException as exc:
        error = _failure(exc, final.absolute())
        if error is not None:
            raise error from exc
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as indented JSON atomically (``atomic_file``); returns ``path``."""
    with atomic_file(path, suffix=".json") as tmp:
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return Path(path)
