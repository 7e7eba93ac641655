"""URL path -> file under a served root, or None: the guard for the unauthenticated file routes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

SERVED_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The regular image file ``relative`` names under ``root``, fully resolved; else None.

    ``relative`` is the already percent-decoded URL path after the route prefix. Refused:
    empty, absolute or drive paths, ``.``/``..``/empty segments, NUL, backslashes, colons,
    names without an image suffix, missing files, non-regular files, and anything whose real
    path (after following symlinks) is outside ``root`` or lacks an image suffix.
    """
    if not relative or "\x00" in relative or "\\" in relative or ":" in relative:
        return None
    if relative.startswith("/"):
        return None
    parts = relative.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return None
    if not parts[-1].lower().endswith(SERVED_SUFFIXES):
        return None
    try:
        real_root = root.resolve(strict=True)
        candidate = real_root.joinpath(*parts).resolve(strict=True)
        mode = os.stat(candidate).st_mode
    except (OSError, RuntimeError, ValueError):  # missing, symlink loop, name too long, ...
        return None
    # Checked on the resolved path, so a symlink inside root that points out is refused too.
    if not candidate.is_relative_to(real_root) or candidate == real_root:
        return None
    if not stat.S_ISREG(mode) or not candidate.name.lower().endswith(SERVED_SUFFIXES):
        return None
    return candidate
