"""Where inputs and outputs live: the BlobStore interface and the local-directory implementation.

A key is the file's place under the data dir, `outputs/YYYY-MM-DD/<name>` or `inputs/<sha256>.png`,
and its URL path is `/<key>`, so records keep the same `result` strings whichever store holds the
bytes (a fleet puts them in JetStream's object store). Writes are atomic: a reader sees no blob or
the whole blob. `create` never replaces (output names are unique); `put` may (inputs are
content-addressed, so a replacement has the same bytes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final, Protocol, runtime_checkable

from fooocus_es.media._atomic import publish_new, publish_replace, write_temp
from fooocus_es.media.safe_paths import resolve_inside

FOLDERS: Final = ("outputs", "inputs")


class BadKey(ValueError):
    """A key outside the store's folders, or with a path segment that could escape them."""


@runtime_checkable  # Litestar checks injected values with isinstance
class BlobStore(Protocol):
    def create(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` if no blob has that key; False when it is taken."""
        ...

    def put(self, key: str, data: bytes) -> None:
        """Store `data` under `key`, replacing any blob there."""
        ...

    def get(self, key: str) -> bytes | None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> bool:
        """Remove the blob; False when there was none."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A file holding the blob for readers that need one (the engine, file responses); None if absent."""
        ...

    def url(self, key: str) -> str:
        """The blob's URL path on this server (the signer makes it absolute and signs it)."""
        ...


def check_key(key: str) -> list[str]:
    parts = key.split("/")
    if len(parts) < 2 or parts[0] not in FOLDERS or any(p in ("", ".", "..") for p in parts):
        raise BadKey(f"not a blob key: {key!r}")
    if any(ch in key for ch in ("\x00", "\\", ":")):
        raise BadKey(f"not a blob key: {key!r}")
    return parts


class LocalBlobs:
    """Blobs as files under the data dir (the single-machine store)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _target(self, key: str) -> Path:
        return self.root.joinpath(*check_key(key))

    def create(self, key: str, data: bytes) -> bool:
        target = self._target(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = write_temp(target.parent, data)  # written and synced once, then linked if the name is free
        try:
            return publish_new(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def put(self, key: str, data: bytes) -> None:
        target = self._target(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = write_temp(target.parent, data)
        try:
            publish_replace(temp, target)
        finally:
            temp.unlink(missing_ok=True)

    def get(self, key: str) -> bytes | None:
        path = self.local_path(key)
        return path.read_bytes() if path is not None else None

    def exists(self, key: str) -> bool:
        return self.local_path(key) is not None

    def delete(self, key: str) -> bool:
        target = self._target(key)
        if not target.is_file():
            return False
        target.unlink(missing_ok=True)
        return True

    def local_path(self, key: str) -> Path | None:
        parts = check_key(key)
        # The file routes' guard: a regular image file really inside its folder (no symlink out).
        return resolve_inside(self.root / parts[0], "/".join(parts[1:]))

    def url(self, key: str) -> str:
        check_key(key)
        return f"/{key}"
