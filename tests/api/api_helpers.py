"""Small helpers for the in-process API tests (the wire as tests/e2e sees it)."""

from __future__ import annotations

import time
from typing import Any

from litestar.testing import TestClient

GENERATE = "/v1/engine/generate/"
FAST = {"performance_selection": "Lightning", "aspect_ratios_selection": "96*64"}  # 4 steps, 96x64


def submit(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(GENERATE, json={**FAST, "async_process": True, **body})
    assert response.status_code == 200, response.text
    return response.json()


def wait_for(
    client: TestClient, task_id: str, *, headers: dict[str, str] | None = None, timeout: float = 10
) -> dict[str, Any]:
    """Poll /tasks/{id} as a client would, until the task has ended."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.get(f"/tasks/{task_id}", headers=headers).json()
        if record.get("finish_mills"):
            return record
        time.sleep(0.02)
    raise AssertionError(f"task {task_id} did not end: {record}")


def local_path(url: str) -> str:
    """A result URL (http://127.0.0.1:7866/outputs/...) as a path for the test client."""
    return "/" + url.split("/", 3)[3]
