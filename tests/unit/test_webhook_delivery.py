"""One webhook attempt (post_once) against a real loopback receiver: the address is checked once
and connected to as checked (no second DNS lookup to rebind), and a blocked one gets no request."""

from __future__ import annotations

import ipaddress
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import anyio
import httpx
import pytest

from fooocus_es.net import address_guard
from fooocus_es.subscribers.webhooks import Outcome, post_once

LOOPBACK = ipaddress.ip_address("127.0.0.1")


@pytest.fixture
def receiver() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            self.rfile.read(int(self.headers["Content-Length"]))
            seen.append(dict(self.headers.items()))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1], seen
    httpd.shutdown()
    httpd.server_close()


def attempt(url: str, *, allow_private: bool = False) -> Outcome:
    async def main() -> Outcome:
        async with httpx.AsyncClient(timeout=5, follow_redirects=False, trust_env=False) as client:
            return await post_once(client, url, b"{}", task_id="t1", allow_private=allow_private, secret="s")

    return anyio.run(main)


def test_the_post_goes_to_the_checked_address_under_the_name(receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    port, seen = receiver
    lookups: list[str] = []

    def resolve_once(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        lookups.append(host)
        return [LOOPBACK]

    monkeypatch.setattr(address_guard, "resolve", resolve_once)
    monkeypatch.setattr(address_guard, "forbidden_reason", lambda ip: None)  # pretend 127.0.0.1 is public
    # .invalid never resolves: the POST can only arrive if the client used the checked address.
    outcome = attempt(f"http://hooks.invalid:{port}/hook")
    assert outcome == Outcome(204, None)
    assert lookups == ["hooks.invalid"]
    assert seen[0]["Host"] == f"hooks.invalid:{port}" and seen[0]["X-Fooocus-Signature"].startswith("sha256=")


def test_a_name_that_resolves_to_loopback_is_refused_before_any_request(
    receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, seen = receiver
    monkeypatch.setattr(address_guard, "resolve", lambda host, port: [LOOPBACK])
    outcome = attempt(f"http://hooks.invalid:{port}/hook")
    assert outcome.refused and outcome.status is None
    assert outcome.error is not None and "loopback address (127.0.0.1)" in outcome.error
    assert seen == []
    assert attempt(f"http://127.0.0.1:{port}/hook", allow_private=True) == Outcome(204, None)


def test_a_stored_url_that_is_no_http_url_is_refused_for_good() -> None:
    outcome = attempt("file:///etc/passwd")
    assert outcome.refused and outcome.error == "refused: only http and https URLs are allowed, not file:"
