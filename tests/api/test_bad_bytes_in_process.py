"""Malformed bytes are 400s that say what is wrong (never a 500), on every wire; floats are bounded;
a stored file that is not an image cannot be converted (415); conversions are cached."""

from __future__ import annotations

import pytest
from litestar.testing import TestClient

from fooocus_es.api.deps import ServicesPlugin

from .api_helpers import FAST, GENERATE, local_path, submit, wait_for

JSON = {"content-type": "application/json"}
# (route, what a 400 body's message lives under): the native and older wires share one shape, OpenAI has its own.
ROUTES = [
    (GENERATE, lambda body: body["detail"]),
    ("/v1/generation/text-to-image", lambda body: body["detail"]),
    ("/v1/generation/image-upscale-vary", lambda body: body["detail"]),  # a JSON body on a multipart route
    ("/v1/images/generations", lambda body: body["error"]["message"]),
]


def deep(levels: int) -> bytes:
    return b'{"prompt": "x", "extra": ' + b"[" * levels + b"]" * levels + b"}"


@pytest.mark.parametrize(("path", "message"), ROUTES, ids=[route for route, _ in ROUTES])
@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (deep(10_000), "body: JSON nested deeper than 64 levels"),
        (b'{"prompt": "x", "extra": ' + b"[" * 10_000 + b"}", "body: JSON nested deeper than 64 levels"),  # unclosed
        (b'{"prompt": "caf\xe9"}', "body: not valid UTF-8 (byte 15)"),
        (b'{"prompt": "x", "guidance_scale": NaN}', "NaN and Infinity are not JSON numbers"),
        (b'{"prompt": "x", "guidance_scale": -Infinity}', "NaN and Infinity are not JSON numbers"),
        (b'{"prompt": "x", "guidance_scale": 1e999}', "guidance_scale: not a finite number"),
    ],
    ids=["deep", "deep-unclosed", "utf8", "nan", "infinity", "1e999"],
)
def test_malformed_bytes_are_400s_naming_the_problem(
    client: TestClient, path: str, message, raw: bytes, expected: str
) -> None:
    response = client.post(path, content=raw, headers=JSON)
    assert response.status_code == 400, response.text
    assert expected in message(response.json())


def test_nesting_up_to_the_limit_is_fine(client: TestClient) -> None:
    # 64 levels in an unknown field: decoded, then ignored and named as such.
    response = client.post(GENERATE, content=deep(63)[:-1] + b', "async_process": true}', headers=JSON)
    assert response.status_code == 200, response.text
    assert response.headers["X-Ignored-Fields"] == "extra"


def test_non_finite_numbers_sent_as_strings_are_refused_too(client: TestClient) -> None:
    # Lenient conversion turns "NaN" and "Infinity" into floats: the bounds refuse them, naming the field.
    for value in ("NaN", "Infinity", "-inf", "1e999"):
        response = client.post(GENERATE, json={**FAST, "freeu_enabled": True, "freeu_b1": value, "async_process": True})
        assert response.status_code == 400, (value, response.text)
        assert response.json()["field"] == "freeu_b1"


@pytest.mark.parametrize(
    ("field", "good", "bad"),
    [("freeu_b1", 2.0, 1e308), ("freeu_b2", 0.0, -0.01), ("freeu_s1", 4.0, 4.01), ("freeu_s2", 0.95, 1e308)],
)
def test_freeu_is_bounded_as_fooocus_sliders(client: TestClient, field: str, good: float, bad: float) -> None:
    refused = client.post(GENERATE, json={**FAST, "freeu_enabled": True, field: bad, "async_process": True})
    assert refused.status_code == 400 and refused.json()["field"] == field
    accepted = submit(client, {"freeu_enabled": True, field: good})
    assert accepted["req_params"][field] == good


def test_older_wire_bounds_freeu_in_advanced_params(client: TestClient) -> None:
    body = {"prompt": "x", "async_process": True, "advanced_params": {"freeu_enabled": True, "freeu_b1": 1e308}}
    response = client.post("/v1/generation/text-to-image", json=body)
    assert response.status_code == 400 and "freeu_b1" in response.json()["detail"]


def test_a_stored_file_that_is_not_an_image_is_415_when_a_conversion_is_asked(client: TestClient) -> None:
    data_dir = client.app.plugins.get(ServicesPlugin).settings.data_dir
    for folder, name in (("outputs/2024-01-01", "broken.png"), ("inputs", f"{'0' * 64}.png")):
        (data_dir / folder).mkdir(parents=True, exist_ok=True)
        (data_dir / folder / name).write_bytes(b"not an image at all")
        url = f"/{folder}/{name}"
        converted = client.get(url, headers={"Accept": "image/webp"})
        assert converted.status_code == 415, converted.text
        assert "not a png, jpeg or webp image" in converted.json()["detail"]
        assert client.get(url).content == b"not an image at all"  # as stored: no conversion asked


def test_conversions_are_cached_so_a_repeated_webp_request_does_not_encode_again(client: TestClient) -> None:
    conversions = client.app.plugins.get(ServicesPlugin).services.conversions
    done = wait_for(client, submit(client, {"prompt": "cached"})["task_id"])
    url = local_path(done["result"][0])
    first = client.get(url, headers={"Accept": "image/webp"})
    second = client.get(url, headers={"Accept": "image/webp"})
    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == second.headers["content-type"] == "image/webp"
    assert first.content == second.content and first.content[:4] == b"RIFF"
    assert (conversions.misses, conversions.hits) == (1, 1)
    assert client.get(url, headers={"Accept": "image/jpeg"}).content[:2] == b"\xff\xd8"  # another format: encoded
    assert (conversions.misses, conversions.hits) == (2, 1)
    assert client.get(url).headers["content-type"] == "image/png"  # no conversion asked: neither
    assert (conversions.misses, conversions.hits) == (2, 1)


@pytest.mark.parametrize("path", ["/v1/generation/image-upscale-vary", "/v1/images/edits"])
def test_a_form_field_that_is_not_utf8_is_a_400(client: TestClient, path: str) -> None:
    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\n'.encode() + b"caf\xe9"
        + f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'.encode()
        + b"Content-Type: image/png\r\n\r\nnot a png" + f"\r\n--{boundary}--\r\n".encode()
    )  # fmt: skip
    response = client.post(path, content=body, headers={"content-type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 400, response.text
    assert "form: a form field is not valid text" in response.text


def test_ignored_field_names_are_escaped_in_their_header(client: TestClient) -> None:
    # A key with non-Latin-1 characters failed to encode as a header (a 500); one with CR/LF would split it.
    body = {**FAST, "async_process": True, "caf\u00e9\U0001f600": 1, "x\r\nSet-Cookie: a=b": 2}
    response = client.post(GENERATE, json=body)
    assert response.status_code == 200, response.text
    assert response.headers["X-Ignored-Fields"] == "caf\\u00e9\\u1f600, x\\u000d\\u000aSet-Cookie: a=b"
    assert "set-cookie" not in response.headers


def test_history_pages_are_bounded_instead_of_overflowing_sqlite(client: TestClient) -> None:
    for path in ("/tasks", "/v1/generation/job-history"):
        assert client.get(path, params={"page": 10**16}).status_code == 400
        assert client.get(path, params={"page": 10**6}).status_code == 200
