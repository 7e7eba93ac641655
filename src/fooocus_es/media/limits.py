"""Bounds on what a request image may cost us, in bytes, pixels and fetch time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from fooocus_es.media.errors import DecodersBusy, ImageBudgetExceeded

MIB = 1024 * 1024


class ImageLimits(msgspec.Struct, frozen=True, kw_only=True):
    # Decoded payload (raw file bytes after base64 / the HTTP body), not the base64 text.
    max_bytes: int = 20 * MIB
    # 4096x4096 RGBA is 64 MiB of pixels: generous for SDXL inputs, small enough to refuse bombs.
    max_pixels: int = 4096 * 4096
    max_side: int = 8192
    # One budget for the whole fetch (DNS, connect, redirects, body), not per read.
    fetch_timeout_s: float = 20.0
    # Off by default: URL inputs would otherwise let any client probe the server's own network.
    allow_private_fetch: bool = False


class DecodeBudget:
    """What decoding request images may cost the process: decoded pixels are ~4 bytes each and a
    decode briefly holds two copies, so both the images of one request and the decodes running at
    once across requests are bounded.

    One per server (the app's services); ``slot`` is held around each decode, in worker threads.
    """

    def __init__(self, *, concurrent: int = 2, max_request_pixels: int = 64_000_000, wait_s: float = 30.0) -> None:
        self.concurrent = concurrent
        self.max_request_pixels = max_request_pixels
        self.wait_s = wait_s
        self._slots = threading.BoundedSemaphore(concurrent)

    def check_request(self, sizes: dict[str, tuple[int, int]]) -> None:
        """Refuse a request whose image fields hold more pixels in total than the limit (413)."""
        total = 0
        for field, (width, height) in sizes.items():
            total += width * height
            if total > self.max_request_pixels:
                raise ImageBudgetExceeded(
                    field,
                    f"the request's images hold {sum(w * h for w, h in sizes.values())} pixels in total "
                    f"(this one is {width}x{height}); the limit is {self.max_request_pixels} pixels per request",
                )

    @contextmanager
    def slot(self, field: str) -> Iterator[None]:
        if not self._slots.acquire(timeout=self.wait_s):
            raise DecodersBusy(
                field, f"{self.concurrent} images are being decoded for other requests; retry in a few seconds"
            )
        try:
            yield
        finally:
            self._slots.release()
