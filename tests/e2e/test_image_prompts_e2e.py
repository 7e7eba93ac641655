"""Image prompts over HTTP on the demo model: each type changes the image, debug and skip, mixing, four at once.

The demo model's image prompt files (tiny CLIP vision, IP-Adapters, negative tokens, Control-LoRAs,
face detector) are generated under their real names on first use, so this runs offline.
"""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from e2e_helpers import image_from, submit, wait_for
from PIL import Image

from fooocus_es.engine.imaging import cn_preprocess

SEED = {"image_seed": 1234}
TYPES = ("ImagePrompt", "FaceSwap", "PyraCanny", "CPDS")


def picture(width: int = 80, height: int = 64) -> np.ndarray:
    """Shapes with edges (Canny finds them) on a gradient, deterministic."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], axis=-1).astype(np.uint8)
    image[16:40, 20:50] = (240, 30, 30)
    image[44:60, 50:72] = (20, 200, 60)
    return image


def png_base64(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def prompt(cn_type: str, **extra: object) -> dict[str, object]:
    return {"cn_img": png_base64(picture()), "cn_type": cn_type, "cn_stop": 1.0, "cn_weight": 1.0, **extra}


def pixels(server_url: str, body: dict[str, object]) -> tuple[dict, list[np.ndarray]]:
    done = wait_for(server_url, submit(server_url, {**SEED, **body})["task_id"], timeout=180)
    assert done["task_status"] == "finished", done
    return done, [np.asarray(image_from(item).convert("RGB")) for item in done["result"]]


@pytest.fixture(scope="module")
def baseline(server) -> np.ndarray:
    return pixels(server.url, {"prompt": "a test"})[1][0]


@pytest.mark.parametrize("cn_type", TYPES)
def test_each_type_changes_the_image_against_the_same_seed_without_it(server, baseline, cn_type: str) -> None:
    done, (image,) = pixels(server.url, {"prompt": "a test", "controlnet_image": [prompt(cn_type)]})
    assert image.shape == baseline.shape
    assert np.abs(image.astype(int) - baseline.astype(int)).max() > 0, f"{cn_type} changed nothing"
    assert not any("image prompt" in note for note in done.get("notes") or [])


def test_controls_of_weight_zero_leave_the_image_as_it_was(server, baseline) -> None:
    """cn_weight 0 skips a ControlNet (the stop rule is pinned on the UNet: tests/engine/test_image_prompt_hooks.py;
    Lightning's first step is at t = 999, where even cn_stop 0 acts)."""
    body = {"prompt": "a test", "controlnet_image": [prompt("PyraCanny", cn_weight=0.0), prompt("CPDS", cn_weight=0.0)]}
    _done, (image,) = pixels(server.url, body)
    assert np.array_equal(image, baseline)


def test_four_image_prompts_at_once_mixed(server, baseline) -> None:
    body = {"prompt": "a test", "controlnet_image": [prompt(cn_type) for cn_type in TYPES]}
    done, (image,) = pixels(server.url, body)
    assert np.abs(image.astype(int) - baseline.astype(int)).max() > 0
    assert len(done["req_params"]["controlnet_image"]) == 4


def test_debugging_the_preprocessor_returns_what_each_model_is_fed_and_skipping_feeds_the_image(server) -> None:
    body = {"prompt": "x", "debugging_cn_preprocessor": True,
            "controlnet_image": [prompt("PyraCanny"), prompt("CPDS"), prompt("ImagePrompt")]}  # fmt: skip
    done, images = pixels(server.url, body)
    width, height = 64, 64  # the request's size (e2e_helpers.FAST)
    canny = cn_preprocess.control_hint("PyraCanny", picture(), width, height, canny_low=64, canny_high=128, skip=False)
    cpds = cn_preprocess.control_hint("CPDS", picture(), width, height, canny_low=64, canny_high=128, skip=False)
    assert [image.shape for image in images] == [(64, 64, 3), (64, 64, 3), (224, 224, 3)]
    assert np.array_equal(images[0], canny) and np.array_equal(images[1], cpds)
    assert np.array_equal(images[2], cn_preprocess.ip_input(picture()))

    thresholds = {**body, "canny_low_threshold": 10, "canny_high_threshold": 30}
    _done, other = pixels(server.url, thresholds)
    assert not np.array_equal(other[0], images[0])  # the thresholds reach the preprocessor

    skipped = {**body, "skipping_cn_preprocessor": True, "controlnet_image": [prompt("PyraCanny")]}
    _done, (fed,) = pixels(server.url, skipped)
    assert np.array_equal(fed, cn_preprocess.resize_image(picture(), width, height, 1))


def test_mixing_image_prompts_with_inpaint_changes_the_inpainted_area_only_with_the_flag(server) -> None:
    source = picture(96, 64)
    body = {
        "prompt": "a test", "inpaint_input_image": png_base64(source), "outpaint_selections": ["Left"],
        "inpaint_engine": "None", "overwrite_step": 2, "controlnet_image": [prompt("PyraCanny")],
    }  # fmt: skip
    _done, (alone,) = pixels(server.url, body)  # the "ip" tab: image prompts on text to image, no inpaint
    _done, (plain,) = pixels(server.url, {**body, "controlnet_image": []})  # inpaint, no image prompts
    _done, (mixed,) = pixels(server.url, {**body, "mixing_image_prompt_and_inpaint": True})
    assert mixed.shape == plain.shape != alone.shape  # mixed is an outpaint; alone is 64x64 text to image
    assert np.abs(mixed.astype(int) - plain.astype(int)).max() > 0
    assert np.array_equal(mixed[:, -40:], plain[:, -40:])  # far from the new area: the input, in both
