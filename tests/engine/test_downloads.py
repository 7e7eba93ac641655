"""ModelStore.download against real local HTTP servers: failure messages, Range resume, restarts, and
ModelDownloads placing a tool call's files."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from fooocus_es.engine.models.catalog import Download, ModelCatalog, tool_files_on_disk
from fooocus_es.engine.models.downloads import ModelDownloads
from fooocus_es.engine.models.store import ModelMissing, ModelStore
from fooocus_es.engine.planning.tool_files import call_files
from fooocus_es.engine.planning.tool_types import MaskCall, MaskOptions

PAYLOAD = bytes(range(256)) * 400  # 100 KiB, every offset distinguishable


class FileServer(ThreadingHTTPServer):
    """Serves PAYLOAD with byte-range support (http.server has none); can drop a connection midway."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.ranges: list[str | None] = []  # the Range header of each request
        self.cut_after: int | None = None  # send only this many body bytes, then hang up (once)
        self.honour_ranges = True

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/model.safetensors"


class RangeHandler(BaseHTTPRequestHandler):
    server: FileServer

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/model.safetensors":
            self.send_error(404)
            return
        header = self.headers.get("Range")
        self.server.ranges.append(header)
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", header or "")
        if match and self.server.honour_ranges:
            start = int(match.group(1))
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_after is not None:
            body, self.server.cut_after = body[: self.server.cut_after], None
            self.wfile.write(body)
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass


@pytest.fixture
def server() -> Iterator[FileServer]:
    server = FileServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def unreachable_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/juggernaut.safetensors"


def test_failed_download_names_file_url_and_folder(tmp_path: Path) -> None:
    store = ModelStore(tmp_path / "models")
    url = unreachable_url()
    with pytest.raises(ModelMissing) as caught:
        store.download("juggernaut.safetensors", url, "checkpoints", lambda done, total: None)
    message = str(caught.value)
    assert "juggernaut.safetensors" in message
    assert url in message
    assert str(tmp_path / "models" / "checkpoints") in message
    assert caught.value.path == tmp_path / "models" / "checkpoints" / "juggernaut.safetensors"
    assert store.list_checkpoints() == []


def test_http_errors_are_reported_too(tmp_path: Path, server: FileServer) -> None:
    store = ModelStore(tmp_path / "models")
    url = server.url.replace("model.safetensors", "gone.safetensors")
    with pytest.raises(ModelMissing, match="404") as caught:
        store.download("gone.safetensors", url, "loras")
    assert url in str(caught.value)
    assert not (store.folder("loras") / "gone.safetensors.part").exists()


def test_interrupted_download_resumes_with_a_range_request(tmp_path: Path, server: FileServer) -> None:
    store = ModelStore(tmp_path / "models")
    progress: list[tuple[int, int | None]] = []
    server.cut_after = 30_000
    with pytest.raises(ModelMissing):
        store.download("model.safetensors", server.url, "checkpoints", lambda d, t: progress.append((d, t)))
    part = store.folder("checkpoints") / "model.safetensors.part"
    assert part.stat().st_size == 30_000
    assert store.list_checkpoints() == []  # a .part is never listed

    path = store.download("model.safetensors", server.url, "checkpoints", lambda d, t: progress.append((d, t)))
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()
    assert server.ranges == [None, "bytes=30000-"]
    assert progress[-1] == (len(PAYLOAD), len(PAYLOAD))
    assert all(total == len(PAYLOAD) for _, total in progress)
    # Already there: no request at all.
    store.download("model.safetensors", server.url, "checkpoints", lambda d, t: None)
    assert len(server.ranges) == 2


def test_a_server_without_range_support_restarts_from_zero(tmp_path: Path, server: FileServer) -> None:
    store = ModelStore(tmp_path / "models")
    (store.folder("vae") / "model.safetensors.part").write_bytes(b"stale bytes")
    server.honour_ranges = False
    path = store.download("model.safetensors", server.url, "vae", lambda d, t: None)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == ["bytes=11-"]


def test_a_complete_part_file_is_finished_without_data(tmp_path: Path, server: FileServer) -> None:
    store = ModelStore(tmp_path / "models")
    (store.folder("loras") / "model.safetensors.part").write_bytes(PAYLOAD)
    path = store.download("model.safetensors", server.url, "loras", lambda d, t: None)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_an_oversized_part_file_is_discarded(tmp_path: Path, server: FileServer) -> None:
    store = ModelStore(tmp_path / "models")
    (store.folder("loras") / "model.safetensors.part").write_bytes(PAYLOAD + b"extra")
    path = store.download("model.safetensors", server.url, "loras", lambda d, t: None)
    assert path.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD) + 5}-", None]


def test_progress_reports_every_five_percent_and_always_the_end(tmp_path: Path) -> None:
    """Reads arrive in sizes the network picks: 96% then 100% must still report 100%."""
    catalog = ModelCatalog(tmp_path / "models", tmp_path / "data")
    catalog._downloads = {key: Download(key, "http://127.0.0.1:9/f", d.kind) for key, d in catalog.downloads().items()}

    def fetch(name: str, url: str, kind: Any, on_progress: Any = None) -> object:
        for done in (1, 3, 32, 34, 96, 100):
            on_progress(done, 100)
        return None

    reports: list[str] = []
    sam = MaskCall(image="inputs/" + "0" * 64 + ".png", options=MaskOptions(mask_model="sam"))
    ModelDownloads(catalog, fetch).fetch_for_plan(sam, reports.append)
    first = [report for report in reports if "grounding-dino-tiny/config.json" in report]
    assert [report.rsplit(" ", 1)[1] for report in first] == ["32%", "96%", "100%"]  # 96 + 5 > 100


def test_a_tool_calls_files_are_fetched_each_into_its_folder_a_bundle_file_into_its_model(
    tmp_path: Path, server: FileServer
) -> None:
    """GroundingDINO is a folder of files: each lands in models/inpaint/grounding-dino-tiny/; SAM's
    .pth in models/sam/; a demo call fetches nothing (its files are generated)."""
    store = ModelStore(tmp_path / "models")
    catalog = ModelCatalog(store.models_dir, tmp_path / "data")
    catalog._downloads = {key: Download(key, server.url, d.kind) for key, d in catalog.downloads().items()}
    reports: list[str] = []
    downloads = ModelDownloads(catalog, store.download)
    image = "inputs/" + "0" * 64 + ".png"
    sam = MaskCall(image=image, options=MaskOptions(mask_model="sam"))
    downloads.fetch_for_plan(msgspec.structs.replace(sam, demo=True), reports.append)
    assert tool_files_on_disk(store.models_dir) == [] and reports == []
    downloads.fetch_for_plan(sam, reports.append)
    dino = store.models_dir / "inpaint" / "grounding-dino-tiny"
    assert (dino / "config.json").read_bytes() == PAYLOAD and (dino / "model.safetensors").read_bytes() == PAYLOAD
    assert (store.models_dir / "sam" / "sam_vit_b_01ec64.pth").is_file()
    assert sorted(tool_files_on_disk(store.models_dir)) == sorted(call_files(sam))
    assert "Downloading grounding-dino-tiny/config.json: 100%" in reports
    count = len(server.ranges)
    downloads.fetch_for_plan(sam, reports.append)
    assert len(server.ranges) == count  # all on disk: nothing fetched again
