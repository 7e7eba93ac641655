"""API key: every route needs X-API-KEY (or a Bearer token); stored files also accept a URL signature.

The one exception is the browser page itself (handlers with opt public=True): it holds no data and
asks the user for the key, which it then sends on every API call.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.handlers.base import BaseRouteHandler

from fooocus_es.api.urls import UrlSigner

FILE_PREFIXES = ("/outputs/", "/inputs/")


@dataclass(frozen=True)
class ApiKeyGuard:
    """The app's one guard, built with the key and the signer it checks against (guards get no DI)."""

    api_key: str
    signer: UrlSigner

    def __call__(self, connection: ASGIConnection, handler: BaseRouteHandler) -> None:
        key = self.api_key
        if not key or handler.opt.get("public"):
            return
        sent = connection.headers.get("x-api-key") or _bearer(connection.headers.get("authorization", ""))
        if sent:
            if hmac.compare_digest(sent.encode(), key.encode()):
                return
            raise PermissionDeniedException("invalid X-API-KEY")
        path = connection.url.path
        signature = connection.query_params.get("sig", "")
        if path.startswith(FILE_PREFIXES) and signature and self.signer.verify(path.lstrip("/"), signature):
            return
        raise NotAuthorizedException("missing X-API-KEY header")


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
