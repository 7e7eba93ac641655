"""Crash-safe file writes: readers see either no file or the whole file, never a partial one.

Shared by inputs.py (content-addressed, replacing is harmless) and outputs.py (unique names,
must never replace). POSIX semantics are assumed: os.replace and os.link within one directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def write_temp(directory: Path, data: bytes) -> Path:
    """Write ``data`` to a fresh hidden file in ``directory`` and fsync it.

    Created with os.open(..., 0o666) so the process umask decides permissions, as for any
    ordinary file (mkstemp would force 0600). O_EXCL guarantees the name is ours alone.
    """
    for _ in range(16):
        temp = directory / f".tmp-{secrets.token_hex(8)}"
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return temp
    raise FileExistsError(f"could not find a free temporary name in {directory}")


def publish_replace(temp: Path, target: Path) -> None:
    """Move ``temp`` onto ``target`` atomically, replacing whatever is there."""
    os.replace(temp, target)
    fsync_directory(target.parent)


def publish_new(temp: Path, target: Path) -> bool:
    """Give ``temp``'s content the name ``target`` only if that name is free; False if taken.

    A hard link is atomic and fails on an existing name, unlike rename, which would silently
    replace it. The caller still owns (and must remove) ``temp``.
    """
    try:
        os.link(temp, target)
    except FileExistsError:
        return False
    fsync_directory(target.parent)
    return True


def fsync_directory(directory: Path) -> None:
    """Make a rename/link in ``directory`` durable; a no-op where directories cannot be opened."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(directory, flags)
    except OSError:
        return  # e.g. Windows: directory entries are durable without this
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the data itself is already synced
    finally:
        os.close(fd)
