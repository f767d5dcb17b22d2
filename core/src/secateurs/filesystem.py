"""What outputs need from the operating system beyond ``os``: an atomic exchange of two
paths, and which failed writes are the user's to fix (disk full, quota, file-size limit,
read-only filesystem, permission).

``exchange(a, b)`` swaps two existing paths in one step with Linux's
``renameat2(RENAME_EXCHANGE)``; where the OS or the filesystem has no such call it returns
``False`` and changes nothing, and the caller falls back to two renames.
``write_fault(exc)`` is the errno of such a failure, from an ``OSError`` or from an error
that carries only the system's message (safetensors' ``SafetensorError``).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2  # linux/fs.h
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
"""renameat2's answers where the kernel or the filesystem cannot exchange."""

WRITE_FAULTS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM)
"""Errors of a write that the user can fix: space, quota, file-size limit, a read-only
filesystem, permission."""


@cache
def _renameat2() -> Callable[..., int] | None:
    """The C library's ``renameat2`` (glibc 2.28+), or ``None`` where it has none."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):  # TypeError: platforms without a process-wide handle
        return None
    function = getattr(libc, "renameat2", None)
    if function is None:
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


def exchange(a: Path, b: Path) -> bool:
    """Swap the existing paths ``a`` and ``b`` atomically (at every instant each name holds
    one of the two). ``False``, with nothing changed, where the OS or filesystem cannot;
    any other failure raises ``OSError``."""
    function = _renameat2()
    if function is None:
        return False
    if function(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _NO_EXCHANGE:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def write_fault(exc: BaseException) -> int | None:
    """The ``WRITE_FAULTS`` errno ``exc`` reports: an ``OSError``'s own, or the one whose
    system message the error's text holds (``SafetensorError`` keeps only the text of the
    I/O error). ``None`` for any other error."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in WRITE_FAULTS else None
    if type(exc).__name__ != "SafetensorError":
        return None
    text = str(exc)
    return next((code for code in WRITE_FAULTS if os.strerror(code) in text), None)
