"""Download an image URL from a request without letting clients reach the server's own network.

Every hop passes the SSRF guard of net/address_guard.py (shared with webhooks): each hop's host
is resolved once, every address is checked, and the connection goes to the checked address.
"""

from __future__ import annotations

import time

import httpx

from fooocus_es.media.errors import InputImageError
from fooocus_es.media.limits import ImageLimits
from fooocus_es.net import address_guard

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_HEADERS = {
    # Some image hosts refuse clients that do not look like a browser (FooocusAPI sends a
    # Firefox User-Agent for the same reason).
    "User-Agent": "Mozilla/5.0 (compatible; fooocus-es image fetch)",
    "Accept": "image/*",
    # Images are compressed already; asking for identity keeps a gzip bomb out of the budget
    # arithmetic (encoded responses are refused below).
    "Accept-Encoding": "identity",
}


def fetch_image_url(url: str, *, limits: ImageLimits, field: str = "url") -> bytes:
    """GET ``url`` (http/https), following up to MAX_REDIRECTS redirects; return the body.

    The whole fetch (DNS, connects, redirects, body) shares one ``fetch_timeout_s`` budget,
    and the body is refused once it passes ``max_bytes``. Every failure is an InputImageError
    naming ``field``.
    """
    deadline = time.monotonic() + limits.fetch_timeout_s
    current = _parse_url(url, field)
    with httpx.Client(
        follow_redirects=False,  # done by hand below, so every hop passes the guard
        trust_env=False,  # no proxy from the environment: it would bypass the address check
        limits=httpx.Limits(max_keepalive_connections=0),  # no connection reuse across hops
        headers=_HEADERS,
    ) as client:
        for _ in range(MAX_REDIRECTS + 1):
            body, location = _get_once(client, current, limits=limits, field=field, deadline=deadline)
            if location is None:
                return body
            current = _parse_url(location, field)
    raise InputImageError(field, f"URL redirected more than {MAX_REDIRECTS} times")


def _parse_url(url: str, field: str) -> httpx.URL:
    try:
        return address_guard.parse_http_url(url)
    except address_guard.RefusedURL as exc:
        raise InputImageError(field, str(exc)) from exc


def _get_once(
    client: httpx.Client, url: httpx.URL, *, limits: ImageLimits, field: str, deadline: float
) -> tuple[bytes, str | None]:
    """One request: (body, None) on 2xx, (b"", absolute Location) on a redirect."""
    addresses = _checked_addresses(url, limits=limits, field=field)
    last_error: httpx.HTTPError | None = None
    for address in addresses:
        request = address_guard.pinned_request(client, "GET", url, address, timeout=_remaining(deadline, field))
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as exc:  # e.g. an unreachable IPv6 address: try the next one
            last_error = exc
            continue
        except httpx.TimeoutException as exc:
            raise InputImageError(field, f"URL did not answer within {limits.fetch_timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise InputImageError(field, f"could not fetch URL ({type(exc).__name__})") from exc
        try:
            return _read_response(response, url, limits=limits, field=field, deadline=deadline)
        except httpx.TimeoutException as exc:
            raise InputImageError(field, f"URL did not answer within {limits.fetch_timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise InputImageError(field, f"could not fetch URL ({type(exc).__name__})") from exc
        finally:
            response.close()
    raise InputImageError(field, "could not connect to the URL's host") from last_error


def _read_response(
    response: httpx.Response, url: httpx.URL, *, limits: ImageLimits, field: str, deadline: float
) -> tuple[bytes, str | None]:
    if response.status_code in _REDIRECT_STATUSES:
        location = response.headers.get("location")
        if not location:
            raise InputImageError(field, f"URL returned HTTP {response.status_code} without a Location")
        # Relative to the named URL, not to the address we connected to.
        return b"", str(url.join(location))
    if not 200 <= response.status_code < 300:
        raise InputImageError(field, f"URL returned HTTP {response.status_code}")
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise InputImageError(field, f"URL sent a {encoding}-encoded body; only identity is accepted")
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_bytes:
        raise InputImageError(field, f"image is larger than {limits.max_bytes} bytes")
    body = bytearray()
    for chunk in response.iter_raw():
        body += chunk
        if len(body) > limits.max_bytes:
            raise InputImageError(field, f"image is larger than {limits.max_bytes} bytes")
        _remaining(deadline, field)  # a trickling server must not hold the worker forever
    return bytes(body), None


def _checked_addresses(url: httpx.URL, *, limits: ImageLimits, field: str) -> list[str | None]:
    try:
        return address_guard.checked_addresses(url, allow_private=limits.allow_private_fetch)
    except address_guard.BlockedAddress as exc:
        message = f"URL host resolves to {address_guard.with_article(exc.reason)} address; fetching it is not allowed"
        raise InputImageError(field, message) from exc
    except address_guard.RefusedURL as exc:
        raise InputImageError(field, str(exc)) from exc


def _remaining(deadline: float, field: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise InputImageError(field, "fetching the URL took too long")
    return left
