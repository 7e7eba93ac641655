"""Bounds on what a request image may cost us, in bytes, pixels and fetch time."""

from __future__ import annotations

import msgspec

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
