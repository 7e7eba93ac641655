"""`BlobStore` on JetStream's Object Store: any API node serves any runner's outputs and inputs.

One bucket holds both folders (a key already starts with `outputs/` or `inputs/`). The Object Store
has no create-if-absent, so `create` first takes the name in a KV bucket (`kv.create` is a
compare-and-set on an empty key): two runners on two machines that picked the same output name
cannot overwrite each other. Readers that need a file (the engine, file responses) get a copy in
this node's cache folder, checked against the store on every call so a deleted blob is not served
from a stale copy.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Final

from nats.js import api
from nats.js.errors import KeyWrongLastSequenceError, NotFoundError, ObjectNotFoundError
from nats.js.kv import KeyValue
from nats.js.object_store import ObjectStore

from fooocus_es.fleet.connection import NatsThread, patiently
from fooocus_es.media.blobs import BadKey, check_key

KV_KEY: Final = re.compile(r"^[-/_=.a-zA-Z0-9]+$")  # what a KV key may hold (nats-py VALID_KEY_RE)


def _checked(key: str) -> str:
    check_key(key)
    if not KV_KEY.match(key):
        raise BadKey(f"not a blob key: {key!r}")
    return key


class ObjectStoreBlobs:
    def __init__(self, url: str, *, cache_dir: Path, bucket: str = "fes-blobs", replicas: int = 1) -> None:
        self.bucket = bucket
        self.replicas = replicas
        self.cache_dir = cache_dir
        self.nats = NatsThread(url, name=f"nats-{bucket}")
        self._objects, self._names = self.nats.call(self._open())

    async def _open(self) -> tuple[ObjectStore, KeyValue]:
        objects = await self.nats.object_store(
            api.ObjectStoreConfig(bucket=self.bucket, storage=api.StorageType.FILE, replicas=self.replicas)
        )
        names = await self.nats.key_value(
            api.KeyValueConfig(
                bucket=f"{self.bucket}-names", history=1, storage=api.StorageType.FILE, replicas=self.replicas
            )
        )
        return objects, names

    def create(self, key: str, data: bytes) -> bool:
        _checked(key)
        return self.nats.call(self._create(key, data))

    async def _create(self, key: str, data: bytes) -> bool:
        try:
            await self._names.create(key, b"")
        except KeyWrongLastSequenceError:
            return False  # taken (by us earlier, or by another node)
        await self._objects.put(key, data)
        return True

    def put(self, key: str, data: bytes) -> None:
        _checked(key)
        self.nats.call(self._put(key, data))

    async def _put(self, key: str, data: bytes) -> None:
        await self._names.put(key, b"")
        await self._objects.put(key, data)

    def get(self, key: str) -> bytes | None:
        _checked(key)
        return self.nats.call(self._get(key))

    async def _get(self, key: str) -> bytes | None:
        try:
            # Reads wait out a leader change of the bucket's stream (safe to repeat, unlike a create).
            result = await patiently(lambda: self._objects.get(key))
        except (ObjectNotFoundError, NotFoundError):
            return None
        return bytes(result.data or b"")

    def exists(self, key: str) -> bool:
        _checked(key)
        return self.nats.call(self._info(key)) is not None

    async def _info(self, key: str) -> api.ObjectInfo | None:
        try:
            return await patiently(lambda: self._objects.get_info(key))
        except (ObjectNotFoundError, NotFoundError):
            return None

    def delete(self, key: str) -> bool:
        _checked(key)
        self._cached(key).unlink(missing_ok=True)
        return self.nats.call(self._delete(key))

    async def _delete(self, key: str) -> bool:
        try:
            await self._objects.delete(key)
        except (ObjectNotFoundError, NotFoundError):
            return False
        with contextlib.suppress(NotFoundError):
            await self._names.delete(key)
        return True

    def local_path(self, key: str) -> Path | None:
        _checked(key)
        info = self.nats.call(self._info(key))
        if info is None:
            return None
        cached = self._cached(key)
        if cached.is_file() and cached.stat().st_size == (info.size or 0):
            return cached  # same name, same size: outputs never change, inputs are named by their hash
        data = self.get(key)
        if data is None:
            return None
        cached.parent.mkdir(parents=True, exist_ok=True)
        handle, temp = tempfile.mkstemp(dir=cached.parent, prefix=".blob-")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(temp, cached)
        finally:
            Path(temp).unlink(missing_ok=True)
        return cached

    def _cached(self, key: str) -> Path:
        parts = _checked(key).split("/")
        path = self.cache_dir.joinpath(*parts)
        if self.cache_dir.resolve() not in path.resolve().parents:
            raise BadKey(f"not a blob key: {key!r}")
        return path

    def url(self, key: str) -> str:
        _checked(key)
        return f"/{key}"

    def close(self) -> None:
        self.nats.close()
