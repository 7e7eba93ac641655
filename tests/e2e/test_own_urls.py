"""Chained tasks: this server's own result and input URLs as the next task's input image.

The server runs WITHOUT allow_private_fetch (the shared `server` fixture turns it on, which
would let the URL through the SSRF guard and hide the point): own /outputs/ and /inputs/ URLs
are read from the data dir, every other loopback URL is still refused.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
import requests
from e2e_helpers import FAST, GENERATE, submit, wait_for

from fooocus_es.media.decode import decode_image_bytes
from fooocus_es.media.inputs import encode_input_png
from fooocus_es.media.limits import ImageLimits

pytestmark = pytest.mark.timeout(120)

UPSCALE = {"uov_method": "Upscale (Fast 2x)"}


def stored_name(data: bytes) -> str:
    """The inputs/ name the server gives these image bytes (media/inputs.py's rule)."""
    image = decode_image_bytes(data, field="test", limits=ImageLimits())
    return f"{hashlib.sha256(encode_input_png(image)).hexdigest()}.png"


def test_own_result_and_input_urls_chain(make_server: Callable[..., Any]) -> None:
    server = make_server().start()
    base = server.url

    first = wait_for(base, submit(base, {})["task_id"])
    assert first["task_status"] == "finished", first
    result_url = first["result"][0]
    assert result_url.startswith(f"{base}/outputs/")
    original = requests.get(result_url, timeout=10).content
    expected = stored_name(original)

    # A result URL of this server: read from outputs/, stored under inputs/ by its pixels' hash.
    second = wait_for(base, submit(base, {**UPSCALE, "uov_input_image": result_url})["task_id"])
    assert second["task_status"] == "finished", second
    assert second["req_params"]["uov_input_image"].endswith(f"/inputs/{expected}")
    assert (server.data_dir / "inputs" / expected).is_file()
    assert len(second["result"]) == 1

    # The stored input's own URL works as an input too (same pixels, same file).
    input_url = f"{base}/inputs/{expected}"
    third = wait_for(base, submit(base, {**UPSCALE, "uov_input_image": input_url})["task_id"])
    assert third["task_status"] == "finished", third
    assert third["req_params"]["uov_input_image"].endswith(f"/inputs/{expected}")

    # The localhost spelling of the same server.
    localhost_url = result_url.replace("127.0.0.1", "localhost")
    accepted = submit(base, {**UPSCALE, "uov_input_image": localhost_url})
    assert wait_for(base, accepted["task_id"])["task_status"] == "finished"

    refusals = {
        # Loopback on another port is somebody else's server: refused as before.
        "uov_input_image": result_url.replace(f":{server.port}/", f":{server.port + 1}/"),
        # Our port, but not a file route: refused as before.
        "inpaint_input_image": f"{base}/v1/engine/generate/",
    }
    for field, url in refusals.items():
        response = requests.post(
            base + GENERATE, json={**FAST, **UPSCALE, "async_process": True, field: url}, timeout=30
        )
        assert response.status_code == 400, response.text
        assert response.json()["field"] == field
        assert "loopback" in response.json()["detail"]

    # An own URL whose file is missing, or that climbs out of outputs/: 400 naming the field.
    for url in (f"{base}/outputs/2000-01-01/nope.png", f"{base}/outputs/..%2foutputs%2fdb.sqlite3"):
        response = requests.post(
            base + GENERATE, json={**FAST, **UPSCALE, "async_process": True, "uov_input_image": url}, timeout=30
        )
        assert response.status_code == 400, response.text
        detail = response.json()
        assert detail["field"] == "uov_input_image"
        assert "does not exist on this server" in detail["detail"]
