"""Which hosts this server may contact on a client's behalf (image URLs, webhooks), and how.

SSRF guard: a URL must be http(s) with a real host; the host is resolved once here, every
address is checked, and the connection goes to the checked address itself (the Host header and
TLS SNI keep the name, so certificates still verify against it). Resolving again inside the
HTTP client would let a DNS answer with a short TTL swap in 127.0.0.1 after the check (DNS
rebinding).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64_PREFIX = ipaddress.IPv6Network("64:ff9b::/96")
# What raw_host holds for a DNS name: httpx IDNA-encodes it, so a real name is plain ASCII labels.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")


class RefusedURL(ValueError):
    """A URL this server does not contact; the message says why (without the caller's field name)."""


class BlockedAddress(RefusedURL):
    """The URL's host is, or resolves to, an address clients must not reach through us."""

    def __init__(self, reason: str, address: IPAddress) -> None:
        super().__init__(f"URL host resolves to {with_article(reason)} address ({address})")
        self.reason = reason
        self.address = address


class UnresolvedHost(RefusedURL):
    """DNS gave no usable address (possibly for now only)."""


def parse_http_url(url: str) -> httpx.URL:
    """``url`` as an httpx.URL if it is http or https with a valid host; RefusedURL otherwise."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise RefusedURL("not a valid URL") from exc
    if parsed.scheme not in ("http", "https"):
        got = f", not {parsed.scheme}:" if parsed.scheme else " (this has no scheme)"
        raise RefusedURL(f"only http and https URLs are allowed{got}")
    if not parsed.raw_host:
        raise RefusedURL("URL has no host")
    if not _valid_host(parsed.raw_host.decode("ascii")):
        raise RefusedURL("URL host is not a valid host name or IP address")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise RefusedURL("URL port is out of range")
    return parsed


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be contacted ("loopback", "private", ...), or None if public."""
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


def checked_addresses(url: httpx.URL, *, allow_private: bool) -> list[str | None]:
    """Blocking (DNS): the addresses to connect to, all checked; [None] when private hosts are allowed.

    BlockedAddress when any address is forbidden, UnresolvedHost when DNS gives none.
    """
    if allow_private:
        return [None]
    host = url.raw_host.decode("ascii")  # IDNA-encoded by httpx; IPv6 without brackets
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        addresses = resolve(host, url.port or (443 if url.scheme == "https" else 80))
    for address in addresses:
        # One bad record refuses the whole host: otherwise a name with a public and a
        # private record would reach the private one whenever the public one fails.
        reason = forbidden_reason(address)
        if reason is not None:
            raise BlockedAddress(reason, address)
    return [str(address) for address in addresses]


def resolve(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise UnresolvedHost("could not resolve the URL's host") from exc
    addresses: list[IPAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])  # drop an IPv6 scope id
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvedHost("could not resolve the URL's host")
    return addresses


def pinned_request(
    client: httpx.Client | httpx.AsyncClient, method: str, url: httpx.URL, address: str | None, **kwargs: Any
) -> httpx.Request:
    """A request to ``url`` that connects to ``address`` (a checked IP), or by name when None."""
    if address is None:  # private hosts allowed: let httpx resolve and connect by name
        return client.build_request(method, url, **kwargs)
    extensions = {"sni_hostname": url.raw_host.decode("ascii")} if url.scheme == "https" else {}
    headers = {**kwargs.pop("headers", {}), "Host": url.netloc.decode("ascii")}
    return client.build_request(method, url.copy_with(host=address), headers=headers, extensions=extensions, **kwargs)


def with_article(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def _valid_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return len(host) <= 253 and _HOST_NAME.match(host) is not None
    return True
