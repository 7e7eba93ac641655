"""The OpenAI-compatible images API, driven by the official openai client against a real server."""

from __future__ import annotations

import base64
import io

import openai
import pytest
import requests
from e2e_helpers import image_from
from PIL import Image

FAST = {"size": "64x64", "quality": "low"}  # Lightning: 4 steps, 64 px


def client(server, api_key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=60)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_generate_url_and_b64_json_and_n(server) -> None:
    api = client(server)
    by_url = api.images.generate(prompt="a lighthouse", **FAST)
    assert len(by_url.data) == 1 and by_url.data[0].url.startswith(server.url + "/outputs/")
    assert by_url.created > 0 and by_url.size == "64x64" and by_url.output_format == "png"
    assert image_from(by_url.data[0].url).size == (64, 64)

    raw = api.images.with_raw_response.generate(
        prompt="two foxes", n=2, response_format="b64_json", extra_body={"seed": 7, "negative_prompt": "blurry"}, **FAST
    )
    both = raw.parse()
    assert len(both.data) == 2
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json))) for item in both.data]
    assert all(image.format == "PNG" and image.size == (64, 64) for image in images)
    # One task in the shared log and history, with the mapped native parameters.
    record = requests.get(f"{server.url}/tasks/{raw.headers['x-task-id']}", timeout=10).json()
    params = record["req_params"]
    assert record["task_status"] == "finished" and len(record["result"]) == 2
    assert params["image_number"] == 2 and params["performance_selection"] == "Lightning"
    assert params["aspect_ratios_selection"] == "64*64" and params["image_seed"] == 7
    assert params["negative_prompt"] == "blurry" and params["prompt"] == "two foxes"


def test_style_model_output_format_and_unknown_fields(server) -> None:
    api = client(server)
    raw = api.images.with_raw_response.generate(
        prompt="a cat", style="natural", model="fooocus_es_demo.safetensors", output_format="jpeg",
        response_format="b64_json", extra_body={"some_future_field": {"x": 1}, "save_metadata_to_images": False},
        **FAST,
    )  # fmt: skip
    data = base64.b64decode(raw.parse().data[0].b64_json)
    assert data[:2] == b"\xff\xd8"  # JPEG
    params = requests.get(f"{server.url}/tasks/{raw.headers['x-task-id']}", timeout=10).json()["req_params"]
    assert params["style_selections"] == ["Fooocus V2", "Fooocus Photograph"]
    assert params["base_model_name"] == "fooocus_es_demo.safetensors" and params["output_format"] == "jpeg"
    assert params["save_metadata_to_images"] is False  # a native field passed through extra_body


def test_stream_sends_partial_images_then_completed(server) -> None:
    events = list(client(server).images.generate(prompt="a stream", stream=True, partial_images=1, **FAST))
    types = [event.type for event in events]
    assert types == ["image_generation.partial_image", "image_generation.completed"]
    partial, completed = events
    assert partial.partial_image_index == 0 and partial.output_format == "jpeg"
    assert Image.open(io.BytesIO(base64.b64decode(partial.b64_json))).format == "JPEG"
    final = Image.open(io.BytesIO(base64.b64decode(completed.b64_json)))
    assert final.format == "PNG" and final.size == (64, 64)
    assert completed.usage.total_tokens == 0 and completed.size == "64x64"


def test_errors_have_openai_shape_and_name_the_param(server) -> None:
    api = client(server)
    with pytest.raises(openai.BadRequestError) as bad_size:
        api.images.generate(prompt="x", size="huge")
    assert "size" in bad_size.value.message and bad_size.value.body["param"] == "size"
    assert bad_size.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as bad_n:
        api.images.generate(prompt="x", n=11)
    assert bad_n.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as missing:
        api.images.generate(prompt="x", extra_body={"prompt": None})
    assert missing.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as native_field:
        api.images.generate(prompt="x", extra_body={"sharpness": 99})  # checked by the native struct
    assert native_field.value.body["param"] == "sharpness"
    # The native API keeps its own error shape.
    native = requests.post(server.url + "/v1/engine/generate/", json={"image_number": 0}, timeout=10)
    assert native.status_code == 400 and "detail" in native.json() and "error" not in native.json()


def test_edit_routes_image_and_mask_into_an_inpaint_task(server) -> None:
    image = Image.new("RGB", (64, 64), (200, 30, 30))
    mask = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (16, 16, 48, 48))  # transparent = edit here
    raw = client(server).images.with_raw_response.edit(
        image=("image.png", png(image), "image/png"), mask=("mask.png", png(mask), "image/png"),
        prompt="a blue square", quality="low",
    )  # fmt: skip
    assert raw.parse().data[0].url.startswith(server.url + "/outputs/")
    record = requests.get(f"{server.url}/tasks/{raw.headers['x-task-id']}", timeout=10).json()
    params = record["req_params"]
    assert params["current_tab"] == "inpaint" and params["aspect_ratios_selection"] == "64*64"
    assert params["inpaint_input_image"].startswith(server.url + "/inputs/")
    assert params["inpaint_mask_image_upload"].startswith(server.url + "/inputs/")
    assert image_from(params["inpaint_input_image"]).convert("RGB").getpixel((0, 0)) == (200, 30, 30)
    stored_mask = image_from(params["inpaint_mask_image_upload"]).convert("L")
    assert stored_mask.getpixel((32, 32)) == 255 and stored_mask.getpixel((2, 2)) == 0  # white = repaint


def test_edit_mask_of_another_size_is_refused(server) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client(server).images.edit(
            image=("image.png", png(Image.new("RGB", (64, 64))), "image/png"),
            mask=("mask.png", png(Image.new("RGBA", (32, 32))), "image/png"),
            prompt="x",
        )
    assert refused.value.body["param"] == "mask"


def test_models_list_names_the_demo_checkpoint(server) -> None:
    models = client(server).models.list()
    ids = [model.id for model in models.data]
    assert "fooocus_es_demo.safetensors" in ids
    assert all(model.object == "model" and model.owned_by == "local" and model.created > 0 for model in models.data)
    assert client(server).models.retrieve("fooocus_es_demo.safetensors").id == "fooocus_es_demo.safetensors"
    with pytest.raises(openai.NotFoundError):
        client(server).models.retrieve("nope.safetensors")


def test_api_key_is_the_bearer_token(make_server) -> None:
    server = make_server("--api-key", "k").start()
    result = client(server, "k").images.generate(prompt="keyed", **FAST)
    assert "?sig=" in result.data[0].url and image_from(result.data[0].url).size == (64, 64)
    with pytest.raises((openai.AuthenticationError, openai.PermissionDeniedError)) as denied:
        client(server, "wrong").images.generate(prompt="x", **FAST)
    assert denied.value.body["code"] == "invalid_api_key"
    with pytest.raises((openai.AuthenticationError, openai.PermissionDeniedError)):
        client(server, "wrong").models.list()
