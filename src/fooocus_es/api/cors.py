"""CORS: which browser pages may call this server.

FooocusAPI's own example page is opened from disk (`Origin: null`) and POSTs JSON, so it needs a
preflight answer and the CORS headers on the streamed reply too. Without an API key the default
admits only local pages (a file, localhost or 127.0.0.1 on any port, and this server's base URL):
a foreign web page must not drive an unprotected server on the user's machine. Once a key is set
any origin may call, since a browser never sends the key by itself. `--cors-origins` overrides
both (`*` is upstream's setting). The same config's is_origin_allowed decides which pages may
change state without a key (api/cross_site.py), so the two lists cannot drift.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from litestar.config.cors import CORSConfig

from fooocus_es.api.tolerance import IGNORED_HEADER
from fooocus_es.settings import Settings

LOCAL_ORIGINS: Final = r"null|https?://(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?"
EXPOSED_HEADERS: Final = ["X-Task-Id", "X-Task-Status", IGNORED_HEADER, "Retry-After"]


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme and parts.netloc else ""


def cors_config(settings: Settings) -> CORSConfig:
    configured = [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",") if origin.strip()]
    if configured:
        return CORSConfig(allow_origins=configured, allow_headers=["*"], expose_headers=EXPOSED_HEADERS)
    if settings.api_key:
        return CORSConfig(allow_origins=["*"], allow_headers=["*"], expose_headers=EXPOSED_HEADERS)
    own = _origin(settings.public_base_url)
    return CORSConfig(
        allow_origins=[own] if own else [],
        allow_origin_regex=LOCAL_ORIGINS,
        allow_headers=["*"],
        expose_headers=EXPOSED_HEADERS,
    )

