"""Atomic file writing: a file holds either its old content or the complete new one."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

from .errors import OutputError


#: the suffix of atomic_write's temporary files (``.NAME.XXXXXXXX.tmp``, hidden, beside the file)
TEMPORARY_SUFFIX = ".tmp"


class WriteError(OutputError, OSError):
    """A file system error while writing an output file (no permission, read-only, I/O error);
    an OSError too, for callers that catch those."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


class DiskFullError(WriteError):
    """The disk (or quota) filled up while writing a file."""


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file in the same folder (same file system, so the rename is
    atomic), flush and fsync it, then rename it over ``path``; the temporary file is removed if
    anything fails, and the previous ``path`` is left as it was. A file system error (no
    permission, a full disk, a read-only mount) is an OutputError naming ``path``."""
    path = Path(path).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    except OSError as exc:
        raise _output_error(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, OutputError):
            raise _output_error(path, exc) from None
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable (not possible everywhere)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def remove_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files atomic_write left in ``folder`` when its process was killed
    mid-write (each as large as the file it was replacing); returns them. Only for a folder no
    other process is writing into."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMPORARY_SUFFIX}"):
        with contextlib.suppress(OSError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _output_error(path: Path, exc: OSError) -> WriteError:
    previous = "the previous file is intact" if path.is_file() else "nothing was written"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DiskFullError(exc.errno, f"no space left on the device while writing {path}; {previous}")
    return WriteError(exc.errno, f"cannot write {path}: {exc.strerror or exc}; {previous}")


def atomic_write_json(path: str | os.PathLike, obj: Any, **dump_kwargs) -> Path:
    """Write ``obj`` as JSON atomically."""
    return atomic_write(path, lambda f: f.write(json.dumps(obj, **dump_kwargs).encode()))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write text atomically."""
    return atomic_write(path, lambda f: f.write(text.encode()))
