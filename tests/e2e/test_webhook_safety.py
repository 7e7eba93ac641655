"""Webhooks are no SSRF channel: URLs checked at admission on every wire, deliveries through the
address guard (loopback refused without the opt-in), redirects not followed, bodies signed.

Two servers for the module: `guarded` (the defaults) and `opted_in` (--allow-private-webhooks,
a webhook secret, no retries), with loopback receivers that record what reaches them.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from conftest import ROOT, ServerProcess, free_port
from e2e_helpers import FAST, GENERATE, submit, wait_for
from PIL import Image

SECRET = "receiver-knows-this"
BAD_URLS = ["file:///etc/passwd", "gopher://127.0.0.1:70/_stats", "not a url", "http://", "http:///hook"]


class Recorder:
    """A loopback receiver that keeps each POST's headers and exact body bytes and answers `status`."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                recorder.posts.append((dict(self.headers.items()), body))
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path_factory.mktemp("guarded"), demo_models).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def opted_in(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[ServerProcess]:
    env = {
        "FOOOCUS_ES_ALLOW_PRIVATE_WEBHOOKS": "true",
        "FOOOCUS_ES_WEBHOOK_SECRET": SECRET,
        "FOOOCUS_ES_WEBHOOK_RETRIES": "0",
    }
    server = ServerProcess(tmp_path_factory.mktemp("opted-in"), demo_models, env=env).start()
    yield server
    server.stop()


def outbox(server: ServerProcess, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(server.data_dir / "outputs" / "db.sqlite3") as db:  # what the server wrote
        return db.execute(sql, args).fetchall()


def settled_delivery(server: ServerProcess, task_id: str, timeout: float = 30) -> tuple:
    """(state, attempts, last_status, last_error) once the task's delivery is no longer pending."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = outbox(
            server,
            "SELECT state, attempts, last_status, last_error FROM webhook_deliveries WHERE task_id = ?",
            task_id,
        )
        if rows and rows[0][0] != "pending":
            return rows[0]
        time.sleep(0.1)
    raise AssertionError(f"the webhook of {task_id} did not settle: {rows}")


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- admission ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("url", BAD_URLS)
def test_every_wire_refuses_a_webhook_url_that_is_not_http_with_a_host(guarded: ServerProcess, url: str) -> None:
    base = guarded.url
    sent = {"prompt": "x", "async_process": True, "webhook_url": url}
    native = requests.post(base + GENERATE, json={**FAST, **sent}, timeout=30)
    old_json = requests.post(base + "/v1/generation/text-to-image", json=sent, timeout=30)
    old_form = requests.post(
        base + "/v1/generation/image-upscale-vary",
        data={"webhook_url": url, "async_process": "True"},
        files={"input_image": ("in.png", png_bytes(), "image/png")},
        timeout=30,
    )
    for response in (native, old_json, old_form):
        assert response.status_code == 400, (response.request.url, response.text)
        body = response.json()
        assert body["field"] == "webhook_url" and body["detail"].startswith("webhook_url: "), body
        assert "X-Task-Id" not in response.headers
    openai = requests.post(base + "/v1/images/generations", json={"prompt": "x", "webhook_url": url}, timeout=30)
    assert openai.status_code == 400, openai.text
    error = openai.json()["error"]
    assert error["param"] == "webhook_url" and error["message"].startswith("webhook_url: "), error


def test_a_bad_server_webhook_url_stops_the_server_at_start(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "fooocus_es", "serve", "--port", str(free_port()), "--data-dir", str(tmp_path)]
    started = subprocess.run(
        [*command, "--webhook-url", "gopher://127.0.0.1:70/"], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert started.returncode == 2, started.stderr
    assert "--webhook-url" in started.stderr and "only http and https" in started.stderr, started.stderr


# -- delivery ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_without_the_opt_in_a_loopback_receiver_gets_nothing_and_the_row_says_why(
    guarded: ServerProcess, host: str
) -> None:
    receiver = Recorder()
    try:
        task = submit(guarded.url, {"prompt": "refused", "webhook_url": f"http://{host}:{receiver.port}/hook"})
        wait_for(guarded.url, task["task_id"])
        state, attempts, status, error = settled_delivery(guarded, task["task_id"])
        assert (state, attempts, status) == ("refused", 1, None)  # permanent: no retries
        assert "loopback" in error and "--allow-private-webhooks" in error, error
        tries = outbox(
            guarded,
            "SELECT a.attempt, a.status_code, a.error FROM webhook_attempts a"
            " JOIN webhook_deliveries d ON d.seq = a.seq WHERE d.task_id = ?",
            task["task_id"],
        )
        assert tries == [(1, None, error)]
        time.sleep(0.5)
        assert receiver.posts == []
        assert "webhook.refused" in guarded.logs()
    finally:
        receiver.close()


def test_with_the_opt_in_the_receiver_gets_the_body_with_a_valid_signature(opted_in: ServerProcess) -> None:
    receiver = Recorder()
    try:
        task = submit(opted_in.url, {"prompt": "signed", "webhook_url": receiver.url})
        done = wait_for(opted_in.url, task["task_id"])
        assert settled_delivery(opted_in, task["task_id"])[:3] == ("delivered", 1, 200)
        [(headers, body)] = receiver.posts
        timestamp, signature = headers["X-Fooocus-Timestamp"], headers["X-Fooocus-Signature"]
        assert abs(int(timestamp) - time.time()) < 120
        expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(signature, f"sha256={expected}")
        wrong = hmac.new(b"another secret", f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
        assert signature != f"sha256={wrong}"
        record = json.loads(body)
        assert record["task_id"] == task["task_id"] and record["result"] == done["result"]
        assert headers["Content-Type"] == "application/json"
    finally:
        receiver.close()


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(opted_in: ServerProcess) -> None:
    target = Recorder()
    redirector = Recorder(status=307, headers={"Location": target.url})
    try:
        task = submit(opted_in.url, {"prompt": "redirected", "webhook_url": redirector.url})
        wait_for(opted_in.url, task["task_id"])
        state, attempts, status, error = settled_delivery(opted_in, task["task_id"])
        assert (state, attempts, status) == ("failed", 1, 307)
        assert "not followed" in error and target.url in error, error
        assert len(redirector.posts) == 1
        time.sleep(0.5)
        assert target.posts == []  # a 307 would have re-POSTed the body there
    finally:
        target.close()
        redirector.close()
