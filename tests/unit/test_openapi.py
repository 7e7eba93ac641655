"""The OpenAPI document: every operation carries an example (request or response)."""

from __future__ import annotations

from pathlib import Path

from litestar.serialization import encode_json

from fooocus_es.app import create_app
from fooocus_es.settings import settings_from_env

UNDOCUMENTED = {"/metrics"}  # Prometheus text, not JSON


def test_every_operation_has_an_example(tmp_path: Path) -> None:
    app = create_app(settings_from_env({}, data_dir=tmp_path, preset="demo", download_models=False))
    schema = app.openapi_schema.to_schema()
    encode_json(schema)  # serialisable as served at /schema/openapi.json
    missing = [
        f"{method.upper()} {path}"
        for path, operations in schema["paths"].items()
        if path not in UNDOCUMENTED
        for method, operation in operations.items()
        if b"example" not in encode_json({k: operation.get(k) for k in ("responses", "requestBody")})
    ]
    assert missing == []
    assert "/v1/engine/generate" in schema["paths"] and "/tasks/{task_id}/events" in schema["paths"]
