"""Which `Host` names this server answers to: the guard against DNS rebinding.

A rebinding page (evil.example re-resolved to 127.0.0.1) is same-origin with itself, so the browser
lets it read every answer; only the Host header it sends still says evil.example. So on the
loopback default only localhost, 127.0.0.1, [::1], the bind address and the --base-url host are
served (any port), plus `--allowed-hosts`. A server bound to 0.0.0.0/:: is meant to be reached by
whatever LAN name or address it has, and a keyed server is protected by its key, so both serve any
host unless `--allowed-hosts` names the ones they should.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from litestar.enums import ScopeType
from litestar.exceptions import HTTPException
from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Receive, Scope, Send

from fooocus_es.settings import Settings

LOCAL_HOSTS: Final = ("localhost", "127.0.0.1", "::1")
WILDCARD_BINDS: Final = ("0.0.0.0", "::", "")


class MisdirectedRequest(HTTPException):
    status_code = 421


def host_name(header: str) -> str:
    """The name in a Host header, without port or IPv6 brackets, lower case: `[::1]:7866` -> `::1`."""
    value = header.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value[1:]
    if value.count(":") == 1:
        value = value.partition(":")[0]
    return value.rstrip(".")  # `localhost.` is localhost


def allowed_hosts(settings: Settings) -> frozenset[str] | None:
    """The host names served, or None for any (see the module docstring for the defaults)."""
    listed = {host_name(name) for name in settings.allowed_hosts.split(",") if name.strip()}
    if "*" in listed or (not listed and (settings.api_key or settings.host in WILDCARD_BINDS)):
        return None
    own = {host_name(settings.host), urlsplit(settings.public_base_url).hostname or ""}
    return frozenset({*LOCAL_HOSTS, *own, *listed} - {"", *WILDCARD_BINDS})


def host_refusal(header: str | None, allowed: frozenset[str] | None) -> str | None:
    """Why a request with this Host header is not served, or None when it is.

    No Host at all (HTTP/1.0) is served: a browser always sends one, so rebinding cannot omit it.
    """
    if allowed is None or header is None or host_name(header) in allowed:
        return None
    served = ", ".join(f"[{name}]" if ":" in name else name for name in sorted(allowed))
    return (
        f"Host {header!r} is not a name this server answers to (a guard against DNS rebinding; served: {served}). "
        "Add it with --allowed-hosts or FOOOCUS_ES_ALLOWED_HOSTS (comma-separated, '*' for any)."
    )


class HostCheckMiddleware(ASGIMiddleware):
    """421 with the reason for a Host the server does not answer to, before any route runs."""

    scopes = (ScopeType.HTTP, ScopeType.WEBSOCKET)

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self.allowed = allowed

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        header = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"host"), None)
        refusal = host_refusal(header, self.allowed)
        if refusal is not None:
            raise MisdirectedRequest(refusal)
        await next_app(scope, receive, send)
