"""Accept conversions of stored files (`Accept: image/webp` on a png), kept in a bounded memory cache.

Stored files never change once written (unique output names, content-hashed inputs), so one
conversion serves every later request for the same file and format. The cache is in memory, not
on disk next to the file: a sibling file would outlive the output it was made from (deleting
history removes only the outputs) and would be served as an output itself. It is keyed by path,
size and mtime, so a replaced file is converted afresh, and bounded in bytes, least recently used
first out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Final

from fooocus_es.media.outputs import MEDIA_TYPES, conversion_target, convert_file

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
_Key = tuple[str, int, int, str]


class ConversionCache:
    """`convert(path, accept)`: (bytes, media type) to send, or None to send the file as it is."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._bytes = 0
        self._entries: OrderedDict[_Key, bytes] = OrderedDict()
        self._lock = threading.Lock()  # conversions run on worker threads

    def convert(self, path: Path, accept: str | None) -> tuple[bytes, str] | None:
        """Raises outputs.NotAnImage when the stored file cannot be decoded."""
        target = conversion_target(path, accept)
        if target is None:
            return None
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns, target)
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return cached, MEDIA_TYPES[target]
            self.misses += 1
        converted = convert_file(path, target)  # outside the lock: two first requests may both encode
        self._keep(key, converted)
        return converted, MEDIA_TYPES[target]

    def _keep(self, key: _Key, data: bytes) -> None:
        if len(data) > self.max_bytes // 4:  # one huge image must not flush everything else
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = data
            self._bytes += len(data)
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= len(evicted)
