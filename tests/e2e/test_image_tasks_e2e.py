"""Upscale/vary and inpaint/outpaint over HTTP: the same task, event and storage path as text to image."""

from __future__ import annotations

import base64
import io

import numpy as np
import requests
from e2e_helpers import GENERATE, image_from, submit, wait_for
from PIL import Image

from fooocus_es.engine.imaging.outpaint import outpaint_pads
from fooocus_es.engine.imaging.sizes import plan_upscale


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def photo(width: int = 96, height: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    return (rng.random((height, width, 3)) * 255).astype(np.uint8)


def test_fast_upscale_returns_the_super_resolved_input_at_twice_the_size(server) -> None:
    body = {"uov_method": "Upscale (Fast 2x)", "uov_input_image": png_base64(photo()), "prompt": "sharp"}
    done = wait_for(server.url, submit(server.url, body)["task_id"])
    assert done["task_status"] == "finished", done
    expected = plan_upscale(96, 64, "Upscale (Fast 2x)")
    assert image_from(done["result"][0]).size == (expected.width, expected.height)
    assert done["req_params"]["uov_input_image"].startswith(server.url + "/inputs/")  # kept by hash


def test_outpaint_over_http_extends_left_and_keeps_the_far_right(server) -> None:
    source = photo(160, 96)
    body = {
        "inpaint_input_image": png_base64(source),
        "outpaint_selections": ["Left"],
        "inpaint_engine": "None",
        "performance_selection": "Lightning",
        "overwrite_step": 1,
    }
    done = wait_for(server.url, submit(server.url, body)["task_id"], timeout=120)
    assert done["task_status"] == "finished", done
    result = np.asarray(image_from(done["result"][0]).convert("RGB"))
    pads = outpaint_pads(160, 96, ["Left"])
    assert result.shape == (96, 160 + pads.left, 3)
    assert np.array_equal(result[:, pads.left + 40 :], source[:, 40:])  # beyond the 32-px feather: untouched


def test_inpaint_requests_are_checked_before_queueing(server) -> None:
    image = png_base64(photo())
    blank = png_base64(np.zeros((64, 96), np.uint8))
    cases = [
        ({"inpaint_input_image": image, "inpaint_mask_image_upload": blank, "inpaint_engine": "None"}, "inpaint_mask"),
        ({"inpaint_input_image": image, "inpaint_engine": "None"}, "inpaint_mask_image_upload"),
        ({"loras": [{"enabled": True, "model_name": "nope.safetensors", "weight": 0.5}]}, "loras[0].model_name"),
        ({"vae_name": "nope.safetensors"}, "vae_name"),
        ({"black_out_nsfw": True}, "safety checker"),
    ]
    for body, needle in cases:
        response = requests.post(server.url + GENERATE, json={**body, "async_process": True}, timeout=30)
        assert response.status_code == 400, (body, response.text)
        assert needle in response.text, response.text
