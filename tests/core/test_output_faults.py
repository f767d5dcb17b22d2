"""Nothing lost in any fault of an output: one line before any work for an output that
cannot be written, one line for a write that fails (disk full, file-size limit), the
previous output kept through a kill between the renames of ``--overwrite``, and Ctrl-C.

Every refusal asserts exit status 2 (130 for Ctrl-C), one line on stderr, no traceback,
the inputs unchanged (sha256), no litter, and where the check can be made from the path,
that no weight file of the model was read.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_reliability
import torch
from cli_run import run_cli
from safetensors import SafetensorError
from safetensors.torch import save_file
from secateurs import outputs
from secateurs.builtins.exporters import SafetensorsExporter
from secateurs.errors import SecateursError
from secateurs.filesystem import exchange, write_fault
from secateurs.outputs import MARKER, atomic_output_dir, check_output, clean_stale, weights_size
from test_reliability import _recipe, _refused, _snapshot

CLI = "from secateurs.cli import main; main()"
workspace = test_reliability.workspace
"""The user's folder of test_reliability: a tiny model, a text file and a note to keep."""
QUIET = {**os.environ, "TQDM_DISABLE": "1"}
"""A subprocess's environment: transformers' own progress bars (loading, saving) off."""


def _cli(args: list[str], **popen) -> subprocess.CompletedProcess:
    """``secateurs ARGS`` in a fresh process."""
    command = [sys.executable, "-c", CLI, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=QUIET, check=False, **popen)


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def _no_litter(folder: Path, name: str = "out") -> None:
    assert not [p.name for p in folder.iterdir() if p.name.startswith(f".{name}.")]


def _watch_weights(model: Path) -> Callable[[], None]:
    """Start watching the model's weight files; the function returned asserts that none was
    read since (a read or a mapping moves a file's access time past its old value)."""
    weights = sorted(model.glob("*.safetensors"))

    def age() -> None:
        for path in weights:
            info = path.stat()
            os.utime(path, ns=(info.st_mtime_ns - 10**12, info.st_mtime_ns))

    def read() -> list[str]:
        return [p.name for p in weights if p.stat().st_atime_ns >= p.stat().st_mtime_ns]

    age()
    weights[0].read_bytes()
    if not read():
        pytest.skip("this filesystem does not record reads (noatime): cannot tell whether weights were read")
    age()

    def check() -> None:
        assert not read(), f"weights read before the refusal: {read()}"

    return check


@pytest.fixture
def tmpfs(tmp_path) -> Iterator[Callable[[str, str], Path]]:
    """``tmpfs(name, options)``: a tmpfs mounted at ``tmp_path / name`` for the test; skips
    where mounting is impossible (not root, no ``mount``)."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no mount command here: cannot make a small or read-only filesystem")
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True, text=True, check=False
        )
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (run as root): {done.stderr.strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in reversed(mounted):
        subprocess.run(["umount", "-l", str(folder)], check=True)


# -- refused before any work: the output cannot be written --------------------------------


def test_an_output_below_a_regular_file_is_refused_before_any_work(workspace, tiny_lm_dir, capsys):
    recipe = _recipe(workspace, tiny_lm_dir, workspace / "notes.txt" / "sub")
    before = _snapshot(workspace)
    unread = _watch_weights(tiny_lm_dir)
    _refused(capsys, ["prune", str(recipe), "-q"], "notes.txt is a file, not a folder", "choose")
    unread()
    assert _snapshot(workspace) == before
    _no_litter(workspace, "notes.txt")


def test_an_output_on_a_read_only_filesystem_is_refused_before_any_work(
    workspace, tiny_lm_dir, capsys, tmpfs
):
    disk = tmpfs("disk", "ro,size=1m")
    recipe = _recipe(workspace, tiny_lm_dir, disk / "new" / "out")
    before = _snapshot(workspace)
    unread = _watch_weights(tiny_lm_dir)
    _refused(capsys, ["prune", str(recipe), "-q"], "read-only filesystem", str(disk), "writable disk")
    unread()
    assert _snapshot(workspace) == before


def _unprivileged() -> None:
    """``preexec_fn``: this root process and what it runs lose the right to bypass file
    permissions (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), like any user: the folders' owner
    bits now apply to it. (Switching to ``nobody`` is not possible here: the interpreter
    lies under /root, which only root may enter.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize(
    "mode,needles",
    [
        (0o555, ["permission denied to read and write in the folder", "folder you can read and write"]),  # 6
        (0o000, ["permission denied to enter the folder", "folder you can read and write"]),  # 7
        (0o300, ["permission denied to read and write in the folder", "folder you can read and write"]),  # 7
    ],
    ids=["not-writable", "cannot-enter", "cannot-read"],
)
def test_a_folder_the_user_may_not_use_is_refused_before_any_work(workspace, tiny_lm_dir, mode, needles):
    if os.geteuid() != 0:
        pytest.skip("needs root, to run the command without the right to bypass file permissions")
    folder = workspace / "folder"
    folder.mkdir()
    recipe = _recipe(workspace, tiny_lm_dir, folder / "out")
    before = _snapshot(workspace)
    unread = _watch_weights(tiny_lm_dir)
    folder.chmod(mode)
    try:
        done = _cli(["prune", str(recipe), "-q"], preexec_fn=_unprivileged)
    except subprocess.SubprocessError as exc:
        pytest.skip(f"cannot drop the right to bypass file permissions here: {exc}")
    finally:
        folder.chmod(0o755)
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_line(done.stderr)
    for needle in ["error: ", str(folder), *needles]:
        assert needle in line, line
    unread()
    assert _snapshot(workspace) == before and not list(folder.iterdir())


def test_an_output_disk_without_room_for_the_model_is_refused(tiny_lm_dir, tmpfs):
    disk = tmpfs("disk", "size=64k")
    needed = weights_size(tiny_lm_dir)
    assert needed == (tiny_lm_dir / "model.safetensors").stat().st_size
    with pytest.raises(SecateursError, match=r"free and the model needs 355\.\d KiB; free space there") as refused:
        check_output(disk / "out", needs_bytes=needed)
    assert str(disk) in str(refused.value)
    assert check_output(disk / "out", needs_bytes=1024) == disk / "out"


def test_prune_refuses_a_disk_without_room_for_the_model_before_loading(workspace, tiny_lm_dir, tmpfs, capsys, monkeypatch):
    disk = tmpfs("disk", "size=64k")
    monkeypatch.setattr("secateurs.run.load_for", lambda *a, **k: pytest.fail("the model was loaded"))
    recipe = _recipe(workspace, tiny_lm_dir, disk / "out")
    before = _snapshot(workspace)
    _refused(capsys, ["prune", str(recipe), "-q"], str(disk), "the model needs 355.", "free space there")
    assert _snapshot(workspace) == before and not list(disk.iterdir())


def test_weights_size_counts_the_format_the_model_is_loaded_from(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"s" * 100)
    (tmp_path / "pytorch_model.bin").write_bytes(b"b" * 1000)  # the same weights, another format
    (tmp_path / "config.json").write_text("{}")
    assert weights_size(tmp_path) == 100
    (tmp_path / "model.safetensors").unlink()
    assert weights_size(tmp_path) == 1000
    assert weights_size(tmp_path / "pytorch_model.bin") == 1000
    assert weights_size("timm/resnet18.a1_in1k") == 0 and weights_size(tmp_path / "missing") == 0


# -- a write that fails: one line, nothing written -----------------------------------------


def test_a_disk_full_while_saving_is_one_line_and_nothing_is_written(workspace, tiny_lm_dir, capsys, tmpfs, monkeypatch):
    disk = tmpfs("disk", "size=1m")
    export = SafetensorsExporter.export

    def fill_then_export(self, loaded, result, directory):
        with open(disk / "filler", "wb") as fh:  # another program fills the disk meanwhile
            try:
                while True:
                    fh.write(b"\0" * 4096)
                    fh.flush()
            except OSError:
                pass
        return export(self, loaded, result, directory)

    monkeypatch.setattr(SafetensorsExporter, "export", fill_then_export)
    out = disk / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out)
    before = _snapshot(tiny_lm_dir)
    line = _refused(capsys, ["prune", str(recipe), "-q"], f"writing {out} failed", f"the disk holding {disk} is full",
                    "nothing was written", "free space")
    assert "Traceback" not in line
    assert sorted(p.name for p in disk.iterdir()) == ["filler"]
    assert _snapshot(tiny_lm_dir) == before


@pytest.mark.parametrize("writer", ["safetensors", "python"])
def test_write_faults_become_one_error_and_remove_the_temporary_output(tmp_path, tmpfs, writer):
    disk = tmpfs("disk", "size=256k")
    tensors = {"w": torch.zeros(128, 1024)}  # 512 KiB
    full = pytest.raises(SecateursError, match="the disk holding .* is full; nothing was written")
    with full as failed, atomic_output_dir(disk / "out") as tmp:
        if writer == "safetensors":
            save_file(tensors, tmp / "model.safetensors")
        else:
            (tmp / "model.bin").write_bytes(bytes(512 * 1024))
    assert write_fault(failed.value.__cause__) is not None
    assert list(disk.iterdir()) == [] and outputs._writing == {}


def test_safetensors_errors_are_read_from_their_text():
    too_large = SafetensorError('Error while serializing: IoError(Os { code: 27, kind: FileTooLarge, message: "File too large" })')
    assert write_fault(too_large) == 27
    assert write_fault(SafetensorError("Error while deserializing header: HeaderTooLarge")) is None
    assert write_fault(ValueError("No space left on device")) is None  # only errors that carry nothing else


def _file_size_limit() -> None:
    """``preexec_fn``: files may not grow past 100 kB; the write then fails with EFBIG
    instead of the process being killed by SIGXFSZ."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


def test_a_file_size_limit_while_saving_is_one_line_and_nothing_is_written(workspace, tiny_lm_dir):
    out = workspace / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out)
    before = _snapshot(workspace)
    done = _cli(["prune", str(recipe), "-q"], preexec_fn=_file_size_limit)
    assert done.returncode == 2, done.stderr[-3000:]
    line = _one_line(done.stderr)
    for needle in [f"error: writing {out} failed", "file-size limit (ulimit -f)", "nothing was written", "raise the limit"]:
        assert needle in line, line
    assert _snapshot(workspace) == before and not out.exists()
    _no_litter(workspace)


# -- a kill while an output is replaced -----------------------------------------------------

KILLED_OVERWRITE = """
import os, signal, sys
from pathlib import Path
import secateurs.outputs as outputs
from secateurs.cli import main

def kill():
    os.kill(os.getpid(), signal.SIGKILL)

if sys.argv[1] == "renames":  # a filesystem without an atomic exchange: killed between the two renames
    outputs.exchange = lambda a, b: False
    rename = os.replace
    def first_rename(src, dst):
        rename(src, dst)
        if Path(dst).name == "old":
            kill()
    os.replace = first_rename
else:  # killed right after the exchange
    exchange = outputs.exchange
    def exchanged(a, b):
        assert exchange(a, b)
        kill()
    outputs.exchange = exchanged
main(sys.argv[2:])
"""


def _killed_overwrite(how: str, recipe: Path) -> None:
    args = ["prune", str(recipe), "-q", "--overwrite", "--sparsity", "0.25"]
    command = [sys.executable, "-c", KILLED_OVERWRITE, how, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]


def test_a_kill_between_the_renames_of_an_overwrite_loses_nothing(workspace, tiny_lm_dir, capsys, monkeypatch):
    out = workspace / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out)
    assert run_cli(["prune", str(recipe), "-q"], capsys)[0] == 0
    previous = _snapshot(out)
    _killed_overwrite("renames", recipe)
    assert not out.exists()
    (aside,) = workspace.glob(".out.old-*")
    assert _snapshot(aside / "old") == previous  # the only copy
    monkeypatch.setattr(outputs, "STARTED", time.time())  # the next write is a later process
    code, _, err = run_cli(["prune", str(recipe), "-q"], capsys)
    assert code == 2 and f"warning: put back {out}" in err and "Traceback" not in err
    assert "earlier secateurs output" in err and "--overwrite" in err
    assert _snapshot(out) == previous
    _no_litter(workspace)
    assert run_cli(["prune", str(recipe), "-q", "--overwrite"], capsys)[0] == 0
    assert json.loads((out / MARKER).read_text())["files"]


def test_a_kill_during_an_overwrite_with_the_exchange_leaves_a_complete_output(workspace, tiny_lm_dir, capsys, monkeypatch):
    (workspace / "a").mkdir()
    (workspace / "b").write_text("b")
    if not exchange(workspace / "a", workspace / "b"):
        pytest.skip("this filesystem cannot exchange two paths atomically (the two-rename case is tested above)")
    out = workspace / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out)
    assert run_cli(["prune", str(recipe), "-q"], capsys)[0] == 0
    previous = _snapshot(out)
    _killed_overwrite("exchange", recipe)
    now = _snapshot(out)
    assert now != previous and set(json.loads((out / MARKER).read_text())["files"]) == set(now) - {MARKER}
    assert json.loads((out / "report.json").read_text())
    monkeypatch.setattr(outputs, "STARTED", time.time())
    assert run_cli(["prune", str(recipe), "-q", "--overwrite"], capsys)[0] == 0
    _no_litter(workspace)


def test_clean_stale_puts_back_a_missing_output_and_removes_a_replaced_one(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = time.time() - 3600
    for name in ("out", "done"):  # out: killed between the renames; done: after the second
        aside = tmp_path / f".{name}.old-{dead.pid}-ab12"
        (aside / "old").mkdir(parents=True)
        (aside / "old" / "model.safetensors").write_text(f"previous {name}")
        os.utime(aside, (old, old))
    (tmp_path / "done").mkdir()
    with pytest.warns(UserWarning, match="put back"):
        assert clean_stale(tmp_path / "out") == [tmp_path / f".out.old-{dead.pid}-ab12"]
    assert (tmp_path / "out" / "model.safetensors").read_text() == "previous out"
    assert clean_stale(tmp_path / "done") == [tmp_path / f".done.old-{dead.pid}-ab12"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done", "out"]


# -- Ctrl-C --------------------------------------------------------------------------------

SLOWED = """
import sys, time
from pathlib import Path
from secateurs.builtins import exporters, scorers
from secateurs.cli import main

where, ready = sys.argv[1], Path(sys.argv[2])
owner, method = {"working": (scorers.MagnitudeScorer, "score"), "writing": (exporters.ReportExporter, "export")}[where]

def slow(self, *args):
    ready.write_text(where)
    time.sleep(120)

setattr(owner, method, slow)
main(sys.argv[3:])
"""


@pytest.mark.parametrize("where", ["working", "writing"])
def test_ctrl_c_is_one_line_and_nothing_is_written(workspace, tiny_lm_dir, where):
    out = workspace / "out"
    recipe = _recipe(workspace, tiny_lm_dir, out)
    ready = workspace / "ready"
    before = _snapshot(workspace)
    args = [sys.executable, "-c", SLOWED, where, str(ready), "prune", str(recipe), "-q"]
    proc = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=QUIET)
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    stderr = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130, stderr[-3000:]
    assert _one_line(stderr) == f"interrupted; nothing was written to {out.resolve()}"
    ready.unlink()
    assert _snapshot(workspace) == before and not out.exists()
    _no_litter(workspace)
