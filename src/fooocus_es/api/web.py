"""The browser page: GET / and its assets under /web/. Public (the page holds no data; it asks for the key).

Only plain files that sit directly in the package's web/ folder are served, looked up by exact name in
the folder's listing, so no request path can reach anything else.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

import anyio.to_thread
from litestar import Response, get

from fooocus_es.api.errors import NotFound

WEB_DIR: Final = Path(__file__).resolve().parent.parent / "web"

MEDIA_TYPES: Final = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".json": "application/json",
}

# The page changes with the package version; let the browser revalidate rather than cache stale code.
_HEADERS: Final = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _read_asset(name: str) -> tuple[bytes, str] | None:
    if name.startswith(".") or "/" in name or "\\" in name:
        return None
    media_type = MEDIA_TYPES.get(Path(name).suffix.lower())
    if media_type is None:
        return None
    try:
        entries = {entry.name: entry for entry in WEB_DIR.iterdir()}
    except OSError:
        return None
    path = entries.get(name)
    if path is None or not path.is_file() or path.is_symlink():
        return None
    return path.read_bytes(), media_type


async def _serve(name: str) -> Response[bytes]:
    found = await anyio.to_thread.run_sync(_read_asset, name)
    if found is None:
        raise NotFound(f"no such file: /web/{name}")
    content, media_type = found
    return Response(content, media_type=media_type, headers=_HEADERS)


@get("/", opt={"public": True}, include_in_schema=False)
async def index() -> Response[bytes]:
    return await _serve("index.html")


@get("/web/{name:str}", opt={"public": True}, include_in_schema=False)
async def asset(name: str) -> Response[bytes]:
    return await _serve(name)


WEB_ROUTES = [index, asset]
