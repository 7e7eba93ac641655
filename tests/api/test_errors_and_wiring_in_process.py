"""Errors that name the field, the layered routers (tags, OpenAI error shape) and the API key guard."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from .api_helpers import FAST, GENERATE, local_path, submit, wait_for


@pytest.mark.parametrize(
    ("field", "body"),
    [
        ("image_number", {"image_number": 0}),  # the wire struct's constraint (Litestar's validation)
        ("sampler_name", {"sampler_name": "nope"}),  # the plan's rules (ParamError)
        ("style_selections[0]", {"style_selections": ["No Such Style"]}),
        ("base_model_name", {"base_model_name": "nope.safetensors"}),
    ],
)
def test_a_bad_field_is_a_400_naming_it_and_nothing_is_queued(client: TestClient, field: str, body: dict) -> None:
    response = client.post(GENERATE, json={**FAST, **body, "async_process": True})
    assert response.status_code == 400, response.text
    error = response.json()
    assert error["status_code"] == 400 and error["field"] == field and field in error["detail"]
    assert client.get("/tasks").json() == {"history": [], "current": [], "pending": []}


def test_openai_routes_answer_errors_in_openai_shape_and_native_routes_in_theirs(client: TestClient) -> None:
    openai = client.get("/v1/models/no-such.safetensors")
    assert openai.status_code == 404
    assert openai.json()["error"] == {
        "message": "model: no checkpoint 'no-such.safetensors'", "type": "invalid_request_error", "param": None,
        "code": "not_found",
    }  # fmt: skip
    bad = client.post("/v1/images/generations", json={"prompt": "x", "size": "big"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"
    native = client.get(f"/tasks/{'0' * 32}")
    assert native.status_code == 404 and "error" not in native.json() and native.json()["status_code"] == 404


def test_every_operation_keeps_its_tag(client: TestClient) -> None:
    schema = client.get("/schema/openapi.json").json()
    paths = schema["paths"].items()
    tags = {f"{method.upper()} {path}": op["tags"] for path, ops in paths for method, op in ops.items()}
    expected = {
        "POST /v1/engine/generate": ["generate"], "POST /v1/engine/control": ["generate"],
        "GET /tasks": ["tasks"], "GET /tasks/{task_id}": ["tasks"], "DELETE /tasks/{task_id}": ["tasks"],
        "GET /tasks/{task_id}/events": ["tasks"], "GET /tasks/{task_id}/stream": ["tasks"],
        "POST /tasks/{task_id}/cancel": ["tasks"],
        "GET /outputs/{file_path}": ["files"], "GET /inputs/{file_path}": ["files"],
        "GET /v1/engines/all-models": ["engines"], "GET /v1/engines/memory": ["engines"],
        "GET /v1/engines/clean_vram": ["engines"], "POST /v1/engines/clean_vram": ["engines"],
        "GET /v1/engines/styles": ["engines"], "GET /v1/engines/presets": ["engines"],
        "GET /health": ["ops"], "GET /metrics": ["ops"], "GET /runners": ["ops"],
        "POST /v1/images/generations": ["openai"], "POST /v1/images/edits": ["openai"],
        "GET /v1/models": ["openai"], "GET /v1/models/{model_id}": ["openai"],
        "POST /v1/tools/describe-image": ["tools"], "POST /v1/tools/generate_mask": ["tools"],
    }  # fmt: skip
    older = {key: value for key, value in tags.items() if key not in expected}
    assert {key: tags[key] for key in expected} == expected
    assert len(older) == 14 and all(value == ["fooocus-api (older)"] for value in older.values())


def test_health_and_metrics_read_the_provided_parts(client: TestClient, engine) -> None:
    wait_for(client, submit(client, {"prompt": "count me"})["task_id"])
    health = client.get("/health").json()
    assert health["ready"] is True and health["device"] == "cpu" and health["queue_depth"] == 0
    assert engine.store.loaded == ["fooocus_es_demo.safetensors"]  # the runner's warm-up went to the fake
    metrics = client.get("/metrics").text
    assert 'fooocus_es_tasks_total{status="finished"} 1.0' in metrics


def test_the_api_key_guard_and_signed_file_urls(make_client) -> None:
    client = make_client(api_key="sesame")
    assert client.get("/tasks").status_code == 401
    assert client.get("/tasks", headers={"X-API-KEY": "wrong"}).status_code == 403
    key = {"X-API-KEY": "sesame"}
    assert client.get("/tasks", headers={"Authorization": "Bearer sesame"}).status_code == 200
    assert client.get("/").status_code == 200  # the browser page is public
    queued = client.post(GENERATE, json={**FAST, "prompt": "guarded", "async_process": True}, headers=key).json()
    done = wait_for(client, queued["task_id"], headers=key)
    signed = local_path(done["result"][0])
    assert "?sig=" in signed and client.get(signed).status_code == 200
    assert client.get(signed.split("?")[0]).status_code == 401
    assert client.get(signed[:-1] + ("0" if signed[-1] != "0" else "1")).status_code == 401
