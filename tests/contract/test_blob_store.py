"""The BlobStore contract, run against every implementation: the local directory, and JetStream's
Object Store on a real nats-server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from fooocus_es.media.blobs import BadKey, BlobStore, LocalBlobs
from fooocus_es.media.object_store import ObjectStoreBlobs

KEY = "outputs/2026-12-02/2026-12-02_10-00-00_0001.png"


@pytest.fixture(params=["local", "jetstream-debian", "jetstream-current"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobs(tmp_path)
        return
    bucket = f"b{uuid.uuid4().hex[:12]}"  # a bucket per test on the session's nats-server
    url = request.getfixturevalue("nats_servers")[request.param.split("-")[1]]
    store = ObjectStoreBlobs(url, cache_dir=tmp_path / "cache", bucket=bucket)
    yield store
    store.close()


def test_create_never_replaces_and_put_does(blobs: BlobStore) -> None:
    assert blobs.get(KEY) is None and not blobs.exists(KEY)
    assert blobs.create(KEY, b"first") is True
    assert blobs.create(KEY, b"second") is False and blobs.get(KEY) == b"first"
    blobs.put("inputs/abc.png", b"one")
    blobs.put("inputs/abc.png", b"one again")
    assert blobs.get("inputs/abc.png") == b"one again"


def test_delete_and_url(blobs: BlobStore) -> None:
    blobs.create(KEY, b"x")
    assert blobs.url(KEY) == f"/{KEY}"
    assert blobs.delete(KEY) is True and blobs.delete(KEY) is False and not blobs.exists(KEY)


def test_a_local_path_holds_the_bytes(blobs: BlobStore) -> None:
    blobs.create(KEY, b"pixels")
    path = blobs.local_path(KEY)
    assert path is not None and path.read_bytes() == b"pixels"
    assert blobs.local_path("outputs/2026-12-02/missing.png") is None


@pytest.mark.parametrize(
    "key", ["models/x.png", "outputs/../db.sqlite3", "outputs//x.png", "/outputs/x.png", "outputs", "inputs/a\\b.png",
            "outputs/c:/x.png"],
)  # fmt: skip
def test_keys_outside_the_folders_are_refused(blobs: BlobStore, key: str) -> None:
    with pytest.raises(BadKey):
        blobs.create(key, b"x")
    with pytest.raises(BadKey):
        blobs.get(key)


def test_no_temporary_files_are_left(blobs: BlobStore, tmp_path: Path) -> None:
    for i in range(5):
        blobs.create(f"outputs/d/{i}.png", b"x")
    blobs.create("outputs/d/0.png", b"y")  # refused: its temp file goes too
    if isinstance(blobs, LocalBlobs):
        assert sorted(p.name for p in (tmp_path / "outputs" / "d").iterdir()) == [f"{i}.png" for i in range(5)]


def test_a_second_node_sees_the_first_nodes_blobs_and_deletes(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """Two API nodes with their own caches: a blob one stores, the other serves; a delete reaches both."""
    url, bucket = request.getfixturevalue("nats_url"), f"b{uuid.uuid4().hex[:12]}"
    first = ObjectStoreBlobs(url, cache_dir=tmp_path / "one", bucket=bucket)
    second = ObjectStoreBlobs(url, cache_dir=tmp_path / "two", bucket=bucket)
    big = bytes(range(256)) * 2048  # 512 KiB: several chunks
    assert first.create(KEY, big) and second.create(KEY, b"other") is False
    path = second.local_path(KEY)
    assert path is not None and path.read_bytes() == big and str(path).startswith(str(tmp_path / "two"))
    assert first.delete(KEY) is True
    assert second.local_path(KEY) is None and second.get(KEY) is None  # its cached copy is not served
    assert second.create(KEY, b"again") is True  # a deleted name can be taken again
    first.close()
    second.close()
