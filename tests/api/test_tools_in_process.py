"""The tool routes' plumbing in process (fake engine): bad input is a 400 naming the field before
anything is queued, a missing package a 501, and a tool call is a task in the log and in /tasks.

The tools' real models run end to end in tests/e2e/test_tools_e2e.py.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from litestar.testing import TestClient
from PIL import Image

from fooocus_es.api import tools

from .conftest import ClientFactory


def png_base64(size: tuple[int, int] = (24, 16)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def task_count(client: TestClient) -> int:
    return len(client.get("/tasks", params={"page_size": 100}).json()["history"])


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        ("/v1/tools/describe-image", {}, "image"),
        ("/v1/tools/describe-image", {"image": ""}, "image"),
        ("/v1/tools/describe-image", {"image": "bm90IGFuIGltYWdl"}, "image"),  # base64 of "not an image"
        ("/v1/tools/describe-image", {"image": png_base64(), "image_type": "Cartoon"}, "image_type"),
        ("/v1/tools/generate_mask", {}, "image"),
        ("/v1/tools/generate_mask", {"image": png_base64(), "mask_model": "u3net"}, "mask_model"),
        ("/v1/tools/generate_mask", {"image": png_base64(), "box_threshold": 2}, "box_threshold"),
        ("/v1/tools/generate_mask", {"image": png_base64(), "dino_erode_or_dilate": 65}, "dino_erode_or_dilate"),
        ("/v1/tools/generate_mask", {"image": png_base64(), "sam_model": "vit_x"}, "sam_model"),
    ],
)
def test_bad_input_is_a_400_naming_the_field_and_queues_nothing(
    client: TestClient, tmp_path: Path, route: str, body: dict[str, object], field: str
) -> None:
    response = client.post(route, json=body)
    assert response.status_code == 400, response.text
    assert field in response.json()["detail"]
    assert task_count(client) == 0
    assert not any((tmp_path / "data0" / "inputs").glob("*.png"))  # make_client's first data dir


def test_without_onnxruntime_the_onnx_tools_answer_501_with_how_to_install(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tools.importlib.util.find_spec
    monkeypatch.setattr(tools.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    for route, body in (
        ("/v1/tools/describe-image", {"image": png_base64(), "image_type": "Anime"}),
        ("/v1/tools/generate_mask", {"image": png_base64(), "mask_model": "u2netp"}),
    ):
        response = client.post(route, json=body)
        assert response.status_code == 501, response.text
        assert "pip install" in response.json()["detail"] and "onnxruntime" in response.json()["detail"]
    assert task_count(client) == 0


def test_a_tool_call_is_a_task_in_the_log_and_in_history(make_client: ClientFactory) -> None:
    """The fake engine runs no tools: the runner fails the task with why, the route answers 501,
    and the call is in /tasks with its stored image and in its events (the audit)."""
    client = make_client()
    response = client.post("/v1/tools/describe-image", json={"image": png_base64(), "unknown": 1})
    assert response.status_code == 501, response.text
    assert "runs no tools" in response.json()["detail"]
    assert response.headers["X-Ignored-Fields"] == "unknown"
    task_id = response.headers["X-Task-Id"]
    record = client.get(f"/tasks/{task_id}").json()
    assert record["task_status"] == "failed"
    params = record["req_params"]
    assert params["tool"] == "describe-image" and params["request"]["image_type"] == "Photo"
    assert params["demo"] is True  # the demo preset's tools are its generated models
    assert "/inputs/" in params["image"]
    types = [event["type"] for event in client.get(f"/tasks/{task_id}/events").json()]
    assert types[0] == "TaskQueued" and types[-1] == "TaskFailed" and "TaskStarted" in types


def test_fooocus_api_multipart_describe_takes_the_type_from_the_query(client: TestClient) -> None:
    data = base64.b64decode(png_base64())
    response = client.post("/v1/tools/describe-image", params={"type": "Oil"}, files={"image": ("image", data)})
    assert response.status_code == 400 and "type" in response.json()["detail"]
    response = client.post("/v1/tools/describe-image", params={"type": "Anime"}, files={"image": ("image", data)})
    assert response.status_code == 501  # reached the runner: the fake engine runs no tools
    params = client.get(f"/tasks/{response.headers['X-Task-Id']}").json()["req_params"]
    assert params["request"]["image_type"] == "Anime"
