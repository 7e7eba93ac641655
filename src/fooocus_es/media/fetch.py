"""Download an image URL from a request without letting clients reach the server's own network.

SSRF guard: each hop's host is resolved once here, every address is checked, and the
connection goes to the checked address itself (Host header and TLS SNI keep the name, so
certificates still verify against it). Resolving again inside the HTTP client would let a
DNS answer with a short TTL swap in 127.0.0.1 after the check (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
import time

import httpx

from fooocus_es.media.errors import InputImageError
from fooocus_es.media.limits import ImageLimits

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_REDIRECTS = 3
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
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


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from ("loopback", "private", ...), or None if public."""
    if isinstance(ip, ipaddress.IPv6Address):
        # IPv6 forms that carry an IPv4 address would otherwise smuggle 127.0.0.1 or 10/8
        # past checks that (on Python < 3.13) only look at the IPv6 ranges.
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64_PREFIX:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return forbidden_reason(embedded)
    for reason, flagged in (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if flagged:
            return reason
    if not ip.is_global:  # e.g. 100.64.0.0/10 carrier-grade NAT
        return "non-public"
    return None


def _parse_url(url: str, field: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InputImageError(field, "not a valid URL") from exc
    if parsed.scheme not in ("http", "https"):
        raise InputImageError(field, "only http and https URLs can be fetched")
    if not parsed.raw_host:
        raise InputImageError(field, "URL has no host")
    return parsed


def _get_once(
    client: httpx.Client, url: httpx.URL, *, limits: ImageLimits, field: str, deadline: float
) -> tuple[bytes, str | None]:
    """One request: (body, None) on 2xx, (b"", absolute Location) on a redirect."""
    addresses = _checked_addresses(url, limits=limits, field=field)
    host = url.raw_host.decode("ascii")
    last_error: httpx.HTTPError | None = None
    for address in addresses:
        request = _build_request(client, url, address, host, _remaining(deadline, field))
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


def _build_request(
    client: httpx.Client, url: httpx.URL, address: str | None, host: str, timeout: float
) -> httpx.Request:
    if address is None:  # private fetches allowed: let httpx resolve and connect by name
        return client.build_request("GET", url, timeout=timeout)
    extensions = {"sni_hostname": host} if url.scheme == "https" else {}
    return client.build_request(
        "GET",
        url.copy_with(host=address),
        headers={"Host": url.netloc.decode("ascii")},
        extensions=extensions,
        timeout=timeout,
    )


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
    """The addresses to connect to, all checked; [None] when private fetches are allowed."""
    if limits.allow_private_fetch:
        return [None]
    host = url.raw_host.decode("ascii")  # IDNA-encoded by httpx; IPv6 without brackets
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = _resolve(host, url.port or (443 if url.scheme == "https" else 80), field)
    for address in addresses:
        # One bad record refuses the whole host: otherwise a name with a public and a
        # private record would reach the private one whenever the public one fails.
        reason = forbidden_reason(address)
        if reason is not None:
            raise InputImageError(field, f"URL host resolves to a {reason} address; fetching it is not allowed")
    return [str(address) for address in addresses]


def _resolve(host: str, port: int, field: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise InputImageError(field, "could not resolve the URL's host") from exc
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise InputImageError(field, "could not resolve the URL's host")
    return addresses


def _remaining(deadline: float, field: str) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise InputImageError(field, "fetching the URL took too long")
    return left
