"""URL inputs against a real HTTP server on 127.0.0.1 (loopback only, no internet)."""

from __future__ import annotations

import gzip
import io
import ipaddress
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image

from fooocus_es.media.decode import parse_image_field
from fooocus_es.media.errors import InputImageError
from fooocus_es.media.fetch import fetch_image_url
from fooocus_es.media.limits import ImageLimits
from fooocus_es.net import address_guard
from fooocus_es.net.address_guard import forbidden_reason

FIELD = "controlnet_image[0].cn_img"
OPEN = ImageLimits(allow_private_fetch=True)


def png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (6, 4), (0, 128, 255)).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = png_bytes()


class Handler(BaseHTTPRequestHandler):
    seen_hosts: list[str] = []

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        type(self).seen_hosts.append(self.headers.get("Host", ""))
        routes = {
            "/cat.png": lambda: self._send(200, PNG),
            "/missing.png": lambda: self._send(404, b"nope"),
            "/big": lambda: self._send(200, b"x" * 5000),
            "/big-unsized": self._unsized,
            "/gzip": lambda: self._send(200, gzip.compress(PNG), {"Content-Encoding": "gzip"}),
            "/redirect": lambda: self._redirect("/cat.png"),
            "/loop": lambda: self._redirect("/loop"),
            "/to-file": lambda: self._redirect("file:///etc/passwd"),
            "/to-private": lambda: self._redirect("http://10.1.2.3/cat.png"),
            "/slow": self._slow,
        }
        routes.get(self.path, lambda: self._send(404, b""))()

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _unsized(self) -> None:
        # HTTP/1.0 style: no Content-Length, the body ends when the connection closes.
        self.send_response(200)
        self.send_header("Connection", "close")
        self.end_headers()
        for _ in range(50):
            self.wfile.write(b"y" * 1000)

    def _slow(self) -> None:
        time.sleep(1.5)
        self._send(200, PNG)


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # the client hanging up on an oversized body is the expected outcome here


@pytest.fixture
def base_url() -> Iterator[str]:
    server = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    Handler.seen_hosts = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def refused(url: str, limits: ImageLimits = OPEN) -> InputImageError:
    with pytest.raises(InputImageError) as info:
        fetch_image_url(url, limits=limits, field=FIELD)
    assert info.value.field == FIELD
    assert str(info.value).startswith(f"{FIELD}: ")
    return info.value


def test_fetches_when_private_hosts_are_allowed(base_url: str) -> None:
    assert fetch_image_url(f"{base_url}/cat.png", limits=OPEN, field=FIELD) == PNG


def test_loopback_refused_by_default(base_url: str) -> None:
    error = refused(f"{base_url}/cat.png", ImageLimits())
    assert "loopback" in error.message
    assert Handler.seen_hosts == []  # refused before connecting


def test_names_are_resolved_and_checked(base_url: str) -> None:
    port = base_url.rsplit(":", 1)[1]
    error = refused(f"http://localhost:{port}/cat.png", ImageLimits())
    assert "loopback" in error.message


@pytest.mark.parametrize(
    "url",
    ["http://0x7f000001/cat.png", "http://[::1]/cat.png", "http://[::ffff:127.0.0.1]/x.png", "http://169.254.169.254/"],
)
def test_disguised_internal_addresses_refused(url: str) -> None:
    refused(url, ImageLimits())


def test_redirect_followed(base_url: str) -> None:
    assert fetch_image_url(f"{base_url}/redirect", limits=OPEN, field=FIELD) == PNG


def test_redirect_loop_stops(base_url: str) -> None:
    assert "more than 3" in refused(f"{base_url}/loop").message
    assert len(Handler.seen_hosts) == 4


def test_redirect_to_other_scheme_refused(base_url: str) -> None:
    assert "only http and https" in refused(f"{base_url}/to-file").message


def test_every_redirect_hop_is_checked(base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Let loopback through for the first hop (our test server) but keep 10/8 forbidden.
    def only_ten(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
        return "private" if ip in ipaddress.ip_network("10.0.0.0/8") else None

    monkeypatch.setattr(address_guard, "forbidden_reason", only_ten)
    strict = ImageLimits()
    # The guarded path connects to the checked address while keeping the Host header.
    assert fetch_image_url(f"{base_url}/cat.png", limits=strict, field=FIELD) == PNG
    assert Handler.seen_hosts == [base_url.removeprefix("http://")]
    assert "private" in refused(f"{base_url}/to-private", strict).message


def test_http_errors_name_the_status(base_url: str) -> None:
    assert refused(f"{base_url}/missing.png").message == "URL returned HTTP 404"


def test_oversized_bodies_refused(base_url: str) -> None:
    small = ImageLimits(allow_private_fetch=True, max_bytes=1000)
    assert "larger than 1000 bytes" in refused(f"{base_url}/big", small).message
    assert "larger than 1000 bytes" in refused(f"{base_url}/big-unsized", small).message


def test_encoded_bodies_refused(base_url: str) -> None:
    assert "gzip" in refused(f"{base_url}/gzip").message


def test_timeout(base_url: str) -> None:
    quick = ImageLimits(allow_private_fetch=True, fetch_timeout_s=0.3)
    started = time.monotonic()
    refused(f"{base_url}/slow", quick)
    assert time.monotonic() - started < 1.2


@pytest.mark.parametrize("url", ["http://", "http://exa mple.com/", "gopher://example.com/"])
def test_malformed_urls(url: str) -> None:
    refused(url)


def test_unreachable_port_is_an_input_error() -> None:
    refused("http://127.0.0.1:1/cat.png")


def test_through_parse_image_field(base_url: str) -> None:
    fetch = partial(fetch_image_url, limits=OPEN)
    image = parse_image_field(f"{base_url}/cat.png", field=FIELD, limits=OPEN, fetch=fetch)
    assert image is not None and image.size == (6, 4)
    with pytest.raises(InputImageError) as info:
        parse_image_field(f"{base_url}/missing.png", field=FIELD, limits=OPEN, fetch=fetch)
    assert str(info.value) == f"{FIELD}: URL returned HTTP 404"


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("10.0.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),
        ("::1", "loopback"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 wrapping 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 wrapping 169.254.169.254
        ("8.8.8.8", None),
        ("2606:4700:4700::1111", None),
    ],
)
def test_forbidden_reason(address: str, reason: str | None) -> None:
    assert forbidden_reason(ipaddress.ip_address(address)) == reason


def test_reserved_ranges_refused() -> None:
    # 240.0.0.0/4 is both "reserved" and "private" to ipaddress; either label refuses it.
    assert forbidden_reason(ipaddress.ip_address("240.0.0.1")) is not None


REQ_ARGS = ("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost")
SAN_ARGS = ("-addext", "subjectAltName=DNS:localhost")


@pytest.fixture
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    """An HTTPS server on 127.0.0.1 with a self-signed certificate for "localhost"."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl command not available to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [openssl, *REQ_ARGS, *SAN_ARGS, "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = QuietServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    Handler.seen_hosts = []
    try:
        yield server.server_address[1], str(cert)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_https_pinned_address_still_verifies_the_name(
    tls_server: tuple[int, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, cert = tls_server
    trusted = ssl.create_default_context(cafile=cert)
    original_init = httpx.Client.__init__

    def trusting_init(self: httpx.Client, *args: object, **kwargs: object) -> None:
        original_init(self, *args, **{**kwargs, "verify": trusted})  # type: ignore[arg-type]

    monkeypatch.setattr(httpx.Client, "__init__", trusting_init)
    monkeypatch.setattr(address_guard, "forbidden_reason", lambda ip: None)
    strict = ImageLimits()
    # Connected to the checked IP, yet SNI and certificate checks use the name.
    assert fetch_image_url(f"https://localhost:{port}/cat.png", limits=strict, field=FIELD) == PNG
    assert Handler.seen_hosts[-1] == f"localhost:{port}"
    # The same address under a name the certificate does not cover is refused.
    monkeypatch.setattr(address_guard, "resolve", lambda host, port: [ipaddress.ip_address("127.0.0.1")])
    refused(f"https://images.example:{port}/cat.png", strict)
