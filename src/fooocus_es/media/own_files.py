"""This server's own /outputs/ and /inputs/ URLs, read from the data dir instead of fetched.

Clients chain tasks by sending a result URL back as the next task's input image. Fetching it
over HTTP would mean the SSRF guard letting loopback through (or the server calling itself);
instead a URL whose origin is this server and whose path is under /outputs/ or /inputs/ is
mapped onto the data dir, with the same path checks as the file routes (media/safe_paths.py).
Every other URL, loopback or not, is left to fetch.py and its guard, unchanged.

"This server" is the origin of the public base URL (with its path prefix, for a reverse proxy
at a sub-path), or a loopback, unspecified or own-machine address (or ``localhost``, the host
name, the configured ``--host``) on the server's own port.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import SplitResult, unquote, urlsplit

from fooocus_es.media.errors import InputImageError
from fooocus_es.media.limits import ImageLimits
from fooocus_es.media.safe_paths import resolve_inside

if TYPE_CHECKING:
    from fooocus_es.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FOLDERS = ("outputs", "inputs")
_DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class OwnFile:
    """A URL that names one of this server's files: ``folder`` is outputs or inputs."""

    folder: str
    relative: str  # percent-decoded, after /<folder>/; not yet checked against the folder


class OwnFiles:
    """Resolves this server's own file URLs to files under its data dir.

    Built per settings (cheap: the machine's addresses are looked up only when a URL on the
    server's port names a host that is neither loopback nor the base URL's, then cached here).
    """

    def __init__(self, *, base_url: str, port: int, outputs_dir: Path, inputs_dir: Path, host: str = "") -> None:
        base = urlsplit(base_url)
        try:
            self._base_origin = _origin(base)
        except ValueError:  # an unparsable base URL: only the local addresses count then
            self._base_origin = None
        self._base_prefix = unquote(base.path).rstrip("/")
        self._port = port
        self._host = _normal_host(host)
        self._roots = {"outputs": outputs_dir, "inputs": inputs_dir}

    @classmethod
    def from_settings(cls, settings: Settings) -> OwnFiles:
        return cls(
            base_url=settings.public_base_url,
            port=settings.port,
            outputs_dir=settings.outputs_dir,
            inputs_dir=settings.inputs_dir,
            host=settings.host,
        )

    def locate(self, url: str) -> OwnFile | None:
        """The own file ``url`` names, or None when it is not this server's /outputs/ or /inputs/ URL.

        Only the origin and the path count; the query (``?sig=...``) and fragment are ignored.
        """
        try:
            parts = urlsplit(url.strip())
            origin = _origin(parts)
            path = unquote(parts.path, errors="strict")
        except (ValueError, UnicodeError):  # bad port, bad IPv6 literal, undecodable %-escapes
            return None
        if origin is None:
            return None
        prefixes = []
        if self._base_origin is not None and origin == self._base_origin:
            prefixes.append(self._base_prefix)
        if origin[2] == self._port and self._is_local_host(origin[1]):
            prefixes.append("")  # the server itself serves its files at the root
        for prefix in prefixes:
            for folder in FOLDERS:
                head = f"{prefix}/{folder}/"
                if path.startswith(head):
                    return OwnFile(folder, path[len(head) :])
        return None

    def read(self, url: str, *, field: str, limits: ImageLimits) -> bytes | None:
        """The bytes of the own file ``url`` names; None when it is not an own URL (fetch it then).

        An own URL whose file is missing, outside its folder or not an image file is an
        InputImageError naming ``field``: it is never fetched over the network instead.
        """
        own = self.locate(url)
        if own is None:
            return None
        # Same rule as the file routes (api/files.py), so what is served is what is readable.
        path = resolve_inside(self._roots[own.folder], own.relative.lstrip("/"))
        if path is None:
            raise InputImageError(
                field, f"the URL names a file under /{own.folder}/ that does not exist on this server"
            )
        try:
            with path.open("rb") as file:
                data = file.read(limits.max_bytes + 1)  # bounded, like a fetched body
        except OSError as exc:
            raise InputImageError(field, f"the URL names a file under /{own.folder}/ that could not be read") from exc
        if len(data) > limits.max_bytes:
            raise InputImageError(field, f"image is larger than {limits.max_bytes} bytes")
        return data

    def _is_local_host(self, host: str) -> bool:
        if host == "localhost" or host in self._host_names:
            return True
        try:
            address = _unmapped(ipaddress.ip_address(host))
        except ValueError:
            return False
        # 0.0.0.0 / :: as a destination reaches this machine (and is what a 0.0.0.0-bound
        # server prints as its address).
        return address.is_loopback or address.is_unspecified or address in self._machine_addresses

    @cached_property
    def _host_names(self) -> frozenset[str]:
        names = {self._host} if self._host and not _is_ip(self._host) else set()
        with contextlib.suppress(OSError):
            names.add(_normal_host(socket.gethostname()))
        return frozenset(name for name in names if name)

    @cached_property
    def _machine_addresses(self) -> frozenset[IPAddress]:
        """Best effort: the addresses the host name resolves to, plus an explicit ``--host`` IP."""
        found: set[IPAddress] = set()
        if _is_ip(self._host):
            found.add(_unmapped(ipaddress.ip_address(self._host)))
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None)
        except (OSError, UnicodeError):
            infos = []
        for family, _, _, _, sockaddr in infos:
            if family in (socket.AF_INET, socket.AF_INET6):
                try:
                    found.add(_unmapped(ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])))
                except ValueError:
                    continue
        return frozenset(found)


def _origin(parts: SplitResult) -> tuple[str, str, int] | None:
    """(scheme, host, effective port) for http(s) URLs with a host, else None. May raise ValueError."""
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    port = parts.port if parts.port is not None else _DEFAULT_PORTS[scheme]
    return scheme, _normal_host(parts.hostname), port


def _normal_host(host: str) -> str:
    return host.strip().strip("[]").lower().rstrip(".")


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
