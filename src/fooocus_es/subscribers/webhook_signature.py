"""How a webhook proves it came from this server: Stripe's signed payload in GitHub's header form.

The signed bytes are ``f"{timestamp}.".encode() + body`` (the Unix time in seconds, a dot, the exact
body bytes, as Stripe signs); the signature is HMAC-SHA256 under the server's webhook secret, sent
as ``X-Fooocus-Signature: sha256=<hex>`` (as GitHub's X-Hub-Signature-256). The timestamp is sent
in ``X-Fooocus-Timestamp`` and is part of what is signed, so a receiver that refuses old
timestamps also refuses a replayed delivery. Every attempt is signed afresh with its own time.
"""

from __future__ import annotations

import hashlib
import hmac

TIMESTAMP_HEADER = "X-Fooocus-Timestamp"
SIGNATURE_HEADER = "X-Fooocus-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Fooocus-Signature value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signature_headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The timestamp always; the signature when a secret is set (without one there is nothing to sign with)."""
    headers = {TIMESTAMP_HEADER: str(timestamp)}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, timestamp, body)
    return headers
