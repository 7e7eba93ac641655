"""GET /outputs/... and /inputs/...: stored images, and nothing outside their folders."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio.to_thread
from litestar import Request, Response, get
from litestar.di import NamedDependency

from fooocus_es.api import examples
from fooocus_es.api.errors import NotFound
from fooocus_es.media.outputs import MEDIA_TYPES, convert_for_accept
from fooocus_es.media.safe_paths import resolve_inside

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.settings import Settings

_SUFFIX_TYPES = {
    ".png": MEDIA_TYPES["png"],
    ".jpg": MEDIA_TYPES["jpeg"],
    ".jpeg": MEDIA_TYPES["jpeg"],
    ".webp": MEDIA_TYPES["webp"],
}


async def _serve(request: Request, settings: Settings, folder: str, relative: str) -> Response[bytes]:
    root = settings.data_dir / folder
    path = await anyio.to_thread.run_sync(resolve_inside, root, relative.lstrip("/"))
    if path is None:
        raise NotFound(f"no such file: /{folder}/{relative.lstrip('/')}")
    converted = await anyio.to_thread.run_sync(convert_for_accept, path, request.headers.get("accept"))
    if converted is not None:
        content, media_type = converted
    else:
        content, media_type = await anyio.to_thread.run_sync(path.read_bytes), _SUFFIX_TYPES[path.suffix.lower()]
    # Outputs and inputs never change once written (unique names, content hashes).
    return Response(content, media_type=media_type, headers={"Cache-Control": "private, max-age=86400, immutable"})


@get("/outputs/{file_path:path}", summary="A generated image", responses=examples.FILE_RESPONSES)
async def outputs(request: Request, settings: NamedDependency[Settings], file_path: str) -> Response[bytes]:
    return await _serve(request, settings, "outputs", file_path)


@get(
    "/inputs/{file_path:path}",
    summary="An input image, stored by its SHA-256",
    responses=examples.FILE_RESPONSES,
)
async def inputs(request: Request, settings: NamedDependency[Settings], file_path: str) -> Response[bytes]:
    return await _serve(request, settings, "inputs", file_path)
