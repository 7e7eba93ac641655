"""Fooocus's tools and enhance over HTTP on the demo server: describe-image (FooocusAPI JSON and
Fooocus-API multipart), generate_mask with every model, enhance in each order with a skipped
control. The demo's tiny generated models under the real names, loaded by the real loaders."""

from __future__ import annotations

import base64
import io

import numpy as np
import requests
from e2e_helpers import image_from, submit, wait_for
from PIL import Image

from fooocus_es.engine.planning.tool_types import MASK_MODELS

MASK = "/v1/tools/generate_mask"
DESCRIBE = "/v1/tools/describe-image"


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(array: np.ndarray) -> str:
    return base64.b64encode(png_bytes(array)).decode()


def bright_left(width: int = 160, height: int = 96) -> np.ndarray:
    """White on the left half, black on the right: the demo saliency (brightness) finds the left."""
    pixels = np.zeros((height, width, 3), np.uint8)
    pixels[:, : width // 2] = 255
    return pixels


def solid(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> np.ndarray:
    return np.tile(np.array(colour, np.uint8), (size[1], size[0], 1))


def mask_of(answer: requests.Response) -> np.ndarray:
    assert answer.status_code == 200, answer.text
    encoded = answer.json()
    assert isinstance(encoded, str) and not encoded.startswith("data:")  # FooocusAPI's bare base64 string
    raw = base64.b64decode(encoded)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return np.asarray(Image.open(io.BytesIO(raw)).convert("L"), dtype=np.float64)


def test_generate_mask_answers_a_png_of_the_image_size_for_every_model(server) -> None:
    image = png_base64(bright_left())
    for model in MASK_MODELS:
        body = {"image": image, "mask_model": model, "dino_prompt_text": "object", "box_threshold": 0.0}
        if model == "u2net_cloth_seg":
            body["cloth_category"] = "upper"
        mask = mask_of(requests.post(server.url + MASK, json=body, timeout=120))
        assert mask.shape == (96, 160), model
        if model not in ("sam", "u2net_cloth_seg"):  # saliency models: the bright half stands out
            assert mask[:, :80].mean() > mask[:, 80:].mean() + 50, model


def test_sam_boxes_follow_the_threshold_and_the_call_is_an_audited_task(server) -> None:
    image = png_base64(bright_left())
    body = {"image": image, "mask_model": "sam", "dino_prompt_text": "object", "dino_debug": True}
    every_box = requests.post(server.url + MASK, json={**body, "box_threshold": 0.0}, timeout=120)
    assert mask_of(every_box).max() == 255  # GroundingDINO's query boxes, filled white
    none = requests.post(server.url + MASK, json={**body, "box_threshold": 1.0, "hello": 1}, timeout=120)
    assert mask_of(none).max() == 0  # no box clears a threshold of 1: an empty mask, not an error
    assert none.headers["X-Ignored-Fields"] == "hello"
    task_id = none.headers["X-Task-Id"]
    record = requests.get(f"{server.url}/tasks/{task_id}", timeout=10).json()
    assert record["task_status"] == "finished" and record["req_params"]["tool"] == "generate-mask"
    assert record["req_params"]["options"]["box_threshold"] == 1.0
    assert record["result"][0].startswith(server.url + "/outputs/")  # the mask is an output like any other
    events = requests.get(f"{server.url}/tasks/{task_id}/events", timeout=10).json()
    assert events[0]["type"] == "TaskQueued" and events[-1]["type"] == "TaskFinished"


def test_describe_photo_is_seeded_and_both_wire_formats_answer_it(server) -> None:
    image = solid((200, 120, 40))
    first = requests.post(server.url + DESCRIBE, json={"image": png_base64(image)}, timeout=120)
    assert first.status_code == 200, first.text
    caption = first.json()["describe"]
    assert isinstance(caption, str) and caption.strip()
    again = requests.post(server.url + DESCRIBE, json={"image": png_base64(image), "image_type": "Photo"}, timeout=120)
    assert again.json() == {"describe": caption}  # one image, one caption
    files = {"image": ("photo.png", png_bytes(image), "image/png")}
    form = requests.post(server.url + DESCRIBE, files=files, data={"type": "Photo"}, timeout=120)  # Fooocus-API
    assert form.status_code == 200, form.text and form.json() == {"describe": caption}
    task_id = form.headers["X-Task-Id"]
    events = requests.get(f"{server.url}/tasks/{task_id}/events", timeout=10).json()
    assert events[-1]["type"] == "TaskFinished" and events[-1]["text"] == caption  # the caption is in the log


def test_describe_anime_tags_differ_with_the_image(server) -> None:
    def tags(colour: tuple[int, int, int]) -> str:
        answer = requests.post(
            server.url + DESCRIBE, json={"image": png_base64(solid(colour)), "image_type": "Anime"}, timeout=120
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["describe"])

    red, blue = tags((230, 20, 20)), tags((20, 20, 230))
    assert red != blue and "_" not in red + blue  # Fooocus's formatting: underscores become spaces


ENHANCE_CTRL = {"enhance_enabled": True, "enhance_mask_model": "u2netp", "enhance_prompt": "a bright window",
                "enhance_inpaint_engine": "None", "enhance_inpaint_strength": 0.6}  # fmt: skip


def enhanced(server, **body: object) -> list[Image.Image]:
    task = submit(server.url, {"prompt": "a room", "image_seed": 7, **body})
    done = wait_for(server.url, task["task_id"], timeout=240)
    assert done["task_status"] == "finished", done
    return [image_from(url).convert("RGB") for url in done["result"]]


def test_enhance_tab_returns_the_input_its_debug_mask_and_the_inpainted_image(server) -> None:
    source = bright_left(96, 64)
    stages = enhanced(
        server, enhance_input_image=png_base64(source), enhance_checkbox=True, enhance_ctrls=[ENHANCE_CTRL],
        debugging_enhance_masks_checkbox=True, image_number=3,  # the enhance tab makes one image
    )  # fmt: skip
    assert len(stages) == 3
    first, mask, inpainted = (np.asarray(stage, dtype=np.int16) for stage in stages)
    assert np.array_equal(first, source)  # the input itself is the first result
    assert mask[:, :48].mean() > mask[:, 48:].mean() + 50  # u2netp's region: the bright half
    assert inpainted.shape == first.shape and np.abs(inpainted - first).mean() > 1  # the region was repainted


def test_enhance_uov_before_or_after_the_passes_and_a_skipped_control(server) -> None:
    """The debug masks (grey images) mark where the passes ran: after the vary, or before it."""
    source = png_base64((bright_left(96, 64) * np.array([0.9, 0.8, 0.6])).astype(np.uint8))  # not grey
    skipped = {**ENHANCE_CTRL, "enhance_mask_model": "sam", "enhance_mask_dino_prompt": "object",
               "enhance_mask_box_threshold": 1.0}  # nothing detected: Fooocus skips the control  # fmt: skip
    common = {"enhance_input_image": source, "enhance_checkbox": True, "enhance_uov_method": "Vary (Subtle)",
              "enhance_ctrls": [skipped, ENHANCE_CTRL], "debugging_enhance_masks_checkbox": True}  # fmt: skip

    def grey(stages: list[Image.Image]) -> list[int]:
        arrays = [np.asarray(stage, dtype=np.int16) for stage in stages]
        return [i for i, a in enumerate(arrays) if (a[..., :1] == a).all()]

    before = enhanced(server, **common, enhance_uov_processing_order="Before First Enhancement")
    assert len(before) == 5 and grey(before) == [2, 3]  # input, varied, both masks, one inpaint (sam skipped)
    assert np.asarray(before[2]).max() == 0  # the skipped control's mask: nothing found
    after = enhanced(server, **common, enhance_uov_processing_order="After Last Enhancement")
    assert len(after) == 5 and grey(after) == [1, 2]  # input, both masks, the inpaint, then the vary


def test_generated_images_are_each_enhanced_with_the_task_seed(server) -> None:
    stages = enhanced(server, image_number=2, enhance_checkbox=True, enhance_ctrls=[ENHANCE_CTRL])
    assert len(stages) == 4  # per image: the generation, then its enhanced version
    generated = [np.asarray(stages[0], dtype=np.int16), np.asarray(stages[2], dtype=np.int16)]
    assert np.abs(generated[0] - generated[1]).mean() > 1  # two seeds, two images
    for index in (1, 3):
        assert stages[index].size == stages[index - 1].size
        assert np.abs(np.asarray(stages[index], dtype=np.int16) - generated[index // 2]).mean() > 1
