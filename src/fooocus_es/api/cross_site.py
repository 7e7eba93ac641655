"""Cross-site requests: without an API key, only allowed pages may change state.

A server without a key on the user's machine is reachable by every page their browser opens: a
form or fetch POST queues tasks, an `<img src=/tasks?action=delete...>` wipes history. The browser
says where a request comes from (`Origin`, or `Sec-Fetch-Site` where it sends no Origin), so a
state-changing request from anywhere but an allowed origin (the CORS list, api/cors.py, so the two
cannot drift) or the server's own pages is refused. Clients outside a browser (curl, Python) send
neither header and pass. With a key the key decides: a browser never sends it by itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from litestar.connection import ASGIConnection
from litestar.exceptions import PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_TRUE: Final = frozenset({"true", "1", "yes", "on"})
_HOW_TO_ALLOW: Final = (
    "Without an API key only local pages (localhost, 127.0.0.1, [::1], a file opened from disk) and this server's "
    "own pages may change state. Set an API key (FOOOCUS_ES_API_KEY or --api-key) or allow the page's origin with "
    "--cors-origins."
)


class CrossSiteRefused(PermissionDeniedException):
    """A 403 that is not about the key (the OpenAI routes give it their own error code)."""


def changes_state(method: str, query: Mapping[str, str]) -> bool:
    """Any method but GET/HEAD/OPTIONS, and the GETs that delete.

    `/tasks?action=delete` (FooocusAPI) and `/v1/generation/job-history?delete=true` (older wire).
    """
    if method.upper() not in SAFE_METHODS:
        return True
    return query.get("action", "").lower() == "delete" or query.get("delete", "").lower() in _TRUE


def _netloc(origin: str) -> str:
    parts = urlsplit(origin)
    return parts.netloc.lower() if parts.scheme and parts.netloc else ""


def cross_site_refusal(
    origin: str | None, fetch_site: str | None, host: str | None, origin_allowed: Callable[[str], bool]
) -> str | None:
    """Why a state-changing request with these headers is refused, or None when it may go on.

    Same-origin means the Origin names the Host the request was sent to (any scheme: a TLS proxy in
    front sees http); the Host itself is checked against DNS rebinding by api/hosts.py.
    """
    if origin is not None:
        if origin_allowed(origin) or (host and _netloc(origin) == host.strip().lower()):
            return None
        return f"cross-site request refused: Origin {origin!r} is not an allowed origin. {_HOW_TO_ALLOW}"
    if (fetch_site or "").strip().lower() == "cross-site":
        return (
            "cross-site request refused: the browser sent it from another site (Sec-Fetch-Site: cross-site, "
            f"no Origin: a link, image or form). {_HOW_TO_ALLOW}"
        )
    return None


@dataclass(frozen=True)
class CrossSiteGuard:
    """403 for a state-changing request from a page that is not allowed; off once an API key is set."""

    api_key: str
    origin_allowed: Callable[[str], bool]

    def __call__(self, connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        if self.api_key or not changes_state(connection.scope.get("method", "GET"), connection.query_params):
            return
        headers = connection.headers
        refusal = cross_site_refusal(
            headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host"), self.origin_allowed
        )
        if refusal is not None:
            raise CrossSiteRefused(refusal)
