"""Tiny deterministic demo fixtures (torch imported inside the functions), written on first use."""

from __future__ import annotations

import os
from pathlib import Path


def atomic_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that it appears whole or not at all (a temp name, then a rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temp.write_bytes(data)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def publish_folder(temp: Path, target: Path) -> None:
    """Rename a finished temp folder into place; a concurrent writer's folder already there wins."""
    try:
        os.replace(temp, target)
    except OSError:  # another writer got there first: theirs is as good
        if not target.is_dir():
            raise
