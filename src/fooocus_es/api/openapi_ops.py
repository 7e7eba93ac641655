"""What a route's OpenAPI operation says beyond what Litestar infers from its signature.

Litestar builds each operation from the handler's parameters; a few routes take more than their
signature shows (a query parameter that may also come in the JSON body, one that needs another,
several content types for one status). `operation(...)` gives a route handler's `operation_class`
that corrects the generated operation, so the document says what the server does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Parameter,
    RequestBody,
    Schema,
)


def sse_events(description: str) -> Schema:
    """One Server-Sent Event as schemathesis (and a reader) sees it: id, event and data fields."""
    text = Schema(type=OpenAPIType.STRING)
    return Schema(
        type=OpenAPIType.OBJECT,
        properties={"id": text, "event": text, "data": Schema(type=OpenAPIType.STRING, description=description)},
        description=description,
    )


def binary(description: str | None = None) -> Schema:
    """A file upload or a binary response body."""
    return Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY, description=description)


def operation(
    *,
    required: Sequence[str] = (),
    hidden: Sequence[str] = (),
    schemas: Mapping[str, Schema] | None = None,
    content: Mapping[str, Mapping[str, Schema]] | None = None,
    body: Mapping[str, Schema] | None = None,
) -> type[Operation]:
    """An Operation class: `required` / `hidden` query parameters by name, parameter `schemas`
    replaced by name, `content` types added per status ("200": {"image/png": Schema(...)}), and a
    request `body` by content type for handlers that read the body themselves."""
    schemas = dict(schemas or {})
    content = {status: dict(types) for status, types in (content or {}).items()}

    @dataclass
    class CorrectedOperation(Operation):
        def __post_init__(self) -> None:
            kept: list[Any] = []
            for parameter in self.parameters or []:
                name = getattr(parameter, "name", None)
                if name in hidden:
                    continue
                if isinstance(parameter, Parameter):
                    if name in required:
                        parameter.required = True
                    if name in schemas:
                        parameter.schema = schemas[name]
                kept.append(parameter)
            self.parameters = kept or None
            if body:
                self.request_body = RequestBody(
                    required=True, content={kind: OpenAPIMediaType(schema=schema) for kind, schema in body.items()}
                )
            for status, types in content.items():
                response = (self.responses or {}).get(status)
                if isinstance(response, OpenAPIResponse):
                    response.content = {
                        **(response.content or {}),
                        **{kind: OpenAPIMediaType(schema=schema) for kind, schema in types.items()},
                    }

    return CorrectedOperation
