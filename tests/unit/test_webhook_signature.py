"""The webhook signature against a vector computed outside Python (openssl), and its headers."""

from __future__ import annotations

from fooocus_es.subscribers.webhook_signature import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign, signature_headers

BODY = b'{"task_id":"abc","task_status":"finished"}'
# printf '%s' '1700000000.{"task_id":"abc","task_status":"finished"}' | openssl dgst -sha256 -hmac fooocus-test-secret
VECTOR = "sha256=bfacfa7529484c2b17e640b203ef9bcb03ce340f5521c4528a17608e497b868c"


def test_sign_matches_the_known_vector() -> None:
    assert sign("fooocus-test-secret", 1700000000, BODY) == VECTOR


def test_the_signature_covers_the_timestamp_the_body_and_the_secret() -> None:
    assert sign("fooocus-test-secret", 1700000001, BODY) != VECTOR
    assert sign("fooocus-test-secret", 1700000000, BODY + b" ") != VECTOR
    assert sign("another-secret", 1700000000, BODY) != VECTOR


def test_headers_carry_the_timestamp_always_and_the_signature_with_a_secret() -> None:
    assert signature_headers("fooocus-test-secret", 1700000000, BODY) == {
        TIMESTAMP_HEADER: "1700000000",
        SIGNATURE_HEADER: VECTOR,
    }
    assert signature_headers("", 1700000000, BODY) == {TIMESTAMP_HEADER: "1700000000"}
