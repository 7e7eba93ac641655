"""GET /outputs/... and /inputs/...: stored images, and nothing outside their folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import anyio.to_thread
from litestar import Request, Response, get
from litestar.di import NamedDependency

from fooocus_es.api import examples
from fooocus_es.api.errors import NotFound, UnsupportedMediaType
from fooocus_es.media.blobs import BadKey
from fooocus_es.media.outputs import MEDIA_TYPES, NotAnImage

if TYPE_CHECKING:  # resolved through the signature namespace (api/deps.py)
    from fooocus_es.media.blobs import BlobStore
    from fooocus_es.media.conversions import ConversionCache

_SUFFIX_TYPES = {
    ".png": MEDIA_TYPES["png"],
    ".jpg": MEDIA_TYPES["jpeg"],
    ".jpeg": MEDIA_TYPES["jpeg"],
    ".webp": MEDIA_TYPES["webp"],
}


def _local_file(blobs: BlobStore, key: str) -> Path | None:
    try:
        return blobs.local_path(key)  # the file routes' guard: a regular image really inside its folder
    except BadKey:
        return None


async def _serve(
    request: Request, blobs: BlobStore, conversions: ConversionCache, folder: str, relative: str
) -> Response[bytes]:
    path = await anyio.to_thread.run_sync(_local_file, blobs, f"{folder}/{relative.lstrip('/')}")
    if path is None:
        raise NotFound(f"no such file: /{folder}/{relative.lstrip('/')}")
    try:
        converted = await anyio.to_thread.run_sync(conversions.convert, path, request.headers.get("accept"))
    except NotAnImage as exc:
        raise UnsupportedMediaType(f"/{folder}/{relative.lstrip('/')}: {exc} (ask without that Accept)") from None
    if converted is not None:
        content, media_type = converted
    else:
        content, media_type = await anyio.to_thread.run_sync(path.read_bytes), _SUFFIX_TYPES[path.suffix.lower()]
    # Outputs and inputs never change once written (unique names, content hashes).
    return Response(content, media_type=media_type, headers={"Cache-Control": "private, max-age=86400, immutable"})


@get("/outputs/{file_path:path}", summary="A generated image", responses=examples.FILE_RESPONSES)
async def outputs(
    request: Request, blobs: NamedDependency[BlobStore], conversions: NamedDependency[ConversionCache], file_path: str
) -> Response[bytes]:
    return await _serve(request, blobs, conversions, "outputs", file_path)


@get(
    "/inputs/{file_path:path}",
    summary="An input image, stored by its SHA-256",
    responses=examples.FILE_RESPONSES,
)
async def inputs(
    request: Request, blobs: NamedDependency[BlobStore], conversions: NamedDependency[ConversionCache], file_path: str
) -> Response[bytes]:
    return await _serve(request, blobs, conversions, "inputs", file_path)
