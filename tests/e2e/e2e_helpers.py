"""Small HTTP helpers for the end-to-end tests."""

from __future__ import annotations

import io
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests
from PIL import Image

GENERATE = "/v1/engine/generate/"
FAST = {"performance_selection": "Lightning", "aspect_ratios_selection": "64*64"}  # 4 steps, 64 px


def submit(base: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> dict[str, Any]:
    response = requests.post(base + GENERATE, json={**FAST, "async_process": True, **body}, headers=headers, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(
    base: str, task_id: str, *, headers: dict[str, str] | None = None, timeout: float = 60, until: str = "ended"
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = requests.get(f"{base}/tasks/{task_id}", headers=headers, timeout=10).json()
        if until == "ended" and record.get("finish_mills"):
            return record
        if until == "running" and record.get("task_status") == "running" and record.get("progress", 0) > 13:
            return record
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not reach {until}: {record}")


def image_from(url: str, headers: dict[str, str] | None = None) -> Image.Image:
    response = requests.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def stream_messages(base: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = requests.post(
        base + GENERATE, data=json.dumps({**FAST, **body, "stream_output": True}), stream=True, timeout=60
    )
    assert response.status_code == 200
    messages = []
    for line in response.iter_lines():
        if line.startswith(b"data: "):
            messages.append(json.loads(line[6:]))
    return messages


class Receiver:
    """A loopback webhook receiver that fails the first `failures` deliveries with a 500."""

    def __init__(self, failures: int, port: int = 0) -> None:
        self.bodies: list[dict] = []
        self.attempts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                receiver.attempts += 1
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.attempts <= failures:
                    self.send_response(500)
                else:
                    receiver.bodies.append(json.loads(body))
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
