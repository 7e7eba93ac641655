"""What third-party FooocusAPI clients send and parse (reference/real-clients.md), against a real server.

Each test replays one client's requests as its code builds them: python-requests with `data=json.dumps`
(no Content-Type), RunPod workers forwarding their own job keys, string booleans, a page opened from
disk (`Origin: null`), readiness probes, and the JSON sync mode that every sync client parses.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import ServerProcess
from e2e_helpers import FAST, GENERATE, wait_for
from PIL import Image


@pytest.fixture(scope="module")
def json_sync_server(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[ServerProcess]:
    """A server run as FooocusAPI behaves since July 2024: a blocking generate answers JSON."""
    process = ServerProcess(tmp_path_factory.mktemp("json-sync"), demo_models, "--sync-response", "json")
    process.start()
    yield process
    process.stop()


def tiny_png_b64(colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


# -- tolerant bodies ------------------------------------------------------------------------------
def test_runpod_worker_job_keys_are_ignored_and_named(server) -> None:
    # The RunPod SSE worker forwards its whole job input; `task_id` among them must not become ours.
    body = {
        **FAST,
        "prompt": "a lighthouse",
        "api_name": "txt2img",
        "clear_output": True,
        "inpaint_preset": "default",
        "preview_url": "https://example.com/p",
        "preview_interval": 1,
        "task_id": "not-the-servers",
        "async_process": True,
    }
    response = requests.post(server.url + GENERATE, data=json.dumps(body), timeout=30)
    assert response.status_code == 200, response.text
    ignored = response.headers["X-Ignored-Fields"].split(", ")
    assert ignored == ["api_name", "clear_output", "inpaint_preset", "preview_url", "preview_interval", "task_id"]
    task_id = response.json()["task_id"]
    assert task_id != "not-the-servers" and response.headers["X-Task-Id"] == task_id
    done = wait_for(server.url, task_id)
    assert done["task_status"] == "finished"
    assert any("api_name" in note and "task_id" in note for note in done["notes"]), done["notes"]
    assert "api_name" not in done["req_params"]


def test_a_known_body_has_no_ignored_header(server) -> None:
    response = requests.post(server.url + GENERATE, json={**FAST, "async_process": True}, timeout=30)
    assert response.status_code == 200 and "X-Ignored-Fields" not in response.headers
    assert wait_for(server.url, response.json()["task_id"])["notes"] == []


def test_docs_tutorial_string_booleans_and_no_trailing_slash(server) -> None:
    # FooocusAPI-Docs AsyncTask.md: "async_process": "true", POSTed to /v1/engine/generate.
    body = {**FAST, "prompt": "tutorial", "async_process": "true", "stream_output": "false", "image_number": "2"}
    response = requests.post(server.url + "/v1/engine/generate", data=json.dumps(body), timeout=30)
    assert response.status_code == 200, response.text
    record = response.json()
    assert record["req_params"]["async_process"] is True and record["req_params"]["image_number"] == 2
    assert len(wait_for(server.url, record["task_id"])["result"]) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"image_number": "many"}, "image_number"),
        ({"image_number": 40}, "image_number"),
        ({"stream_output": "perhaps"}, "stream_output"),
        ({"loras": [{"model_name": "x.safetensors", "weight": "heavy"}]}, "loras[0].weight"),
        ({"guidance_scale": 99}, "guidance_scale"),
    ],
)
def test_wrong_values_keep_their_checks(server, body: dict, field: str) -> None:
    response = requests.post(server.url + GENERATE, json={**FAST, "async_process": True, **body}, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field and field in response.json()["detail"]


def test_giladm11biz_inpaint_script_body(json_sync_server) -> None:
    # Bare base64 images, an unknown checkbox name, an image prompt without cn_img, "×" and "jpg".
    image = tiny_png_b64()
    body = {
        "prompt": "a red square",
        "performance_selection": "Lightning",
        "aspect_ratios_selection": "64×64",
        "output_format": "jpg",
        "uov_method": "Upscale (Fast 2x)",
        "uov_input_image": image,
        "inpaint_input_image": "None",
        "inpaint_mask_image_upload": "",
        "inpaint_mask_upload_checkbox": True,
        "controlnet_image": [{"cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"}],
        "save_metadata_to_images": True,
        "metadata_scheme": "fooocus",
    }
    response = requests.post(json_sync_server.url + GENERATE, data=json.dumps(body), timeout=120)
    assert response.status_code == 200, response.text
    assert "application/json" in response.headers["Content-Type"]
    result = response.json()
    assert result["task_status"] == "finished", result
    params = result["req_params"]
    assert params["aspect_ratios_selection"] == "64*64" and params["output_format"] == "jpeg"
    assert params["controlnet_image"] == [] and params["inpaint_input_image"] == ""
    assert params["uov_input_image"].startswith(json_sync_server.url + "/inputs/")
    assert response.headers["X-Ignored-Fields"] == "inpaint_mask_upload_checkbox"
    upscaled = requests.get(result["result"][0], timeout=20)
    assert upscaled.headers["Content-Type"] == "image/jpeg"
    width, height = Image.open(io.BytesIO(upscaled.content)).size
    assert width == height > 64  # Fooocus brings small upscales up to a 1024 side


def test_giladm11biz_reads_fooocus_metadata_back(json_sync_server) -> None:
    body = {**FAST, "prompt": "a lighthouse", "negative_prompt": "blurry", "save_metadata_to_images": True}
    body |= {"metadata_scheme": "fooocus", "style_selections": ["Fooocus Enhance", "Fooocus Sharp"]}
    result = requests.post(json_sync_server.url + GENERATE, data=json.dumps(body), timeout=120).json()
    image = Image.open(io.BytesIO(requests.get(result["result"][0], timeout=20).content))
    parameters = json.loads(image.info["parameters"])
    assert "a lighthouse" in parameters["full_prompt"][1] or "a lighthouse" in parameters["full_prompt"][0]
    assert len(parameters["full_prompt"]) > 1 and len(parameters["negative_prompt"]) > 1


# -- the sync mode --------------------------------------------------------------------------------
def test_default_sync_answers_image_bytes_and_json_on_request(server) -> None:
    body = {**FAST, "prompt": "bytes"}
    as_bytes = requests.post(server.url + GENERATE, data=json.dumps(body), timeout=120)
    assert as_bytes.headers["Content-Type"] == "image/png"
    assert Image.open(io.BytesIO(as_bytes.content)).size == (64, 64)
    as_json = requests.post(server.url + GENERATE, json=body, headers={"Accept": "application/json"}, timeout=120)
    assert as_json.json()["task_status"] == "finished" and as_json.json()["result"]


def test_runpod_sync_handler_against_json_sync(json_sync_server) -> None:
    base = json_sync_server.url
    assert requests.get(base + "/docs", timeout=5).status_code == 200  # its readiness probe
    response = requests.post(base + GENERATE, json={**FAST, "prompt": "sync"}, timeout=300)
    reply = response.json()  # requests sends Accept: */*
    assert reply["task_status"] == "finished" and reply["progress"] == 100
    task = requests.get(f"{base}/tasks/{reply['task_id']}", timeout=10).json()
    assert task["result"] == reply["result"]
    image = requests.get(reply["result"][0], timeout=20)
    assert image.status_code == 200 and image.headers["Content-Type"].startswith("image/")
    # Bytes only when asked for with Accept: image/*.
    png = {"Accept": "image/png"}
    binary = requests.post(base + GENERATE, json={**FAST, "prompt": "sync"}, headers=png, timeout=300)
    assert binary.headers["Content-Type"] == "image/png" and binary.content.startswith(b"\x89PNG")


# -- HTTP details ---------------------------------------------------------------------------------
def test_readiness_probes_answer_promptly(server) -> None:
    for method, path in [("GET", GENERATE), ("GET", "/v1/engine/generate"), ("GET", "/"), ("GET", "/docs/")]:
        started = time.monotonic()
        response = requests.request(method, server.url + path, timeout=5, allow_redirects=False)
        assert response.status_code in (200, 405), (path, response.status_code)
        assert time.monotonic() - started < 2
    docs = requests.get(server.url + "/docs", timeout=5)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()


def test_gzmagyari_control_action_in_a_json_body(server) -> None:
    for path in ("/v1/engine/control/", "/v1/engine/control"):
        response = requests.post(server.url + path, json={"action": "stop"}, timeout=10)
        assert response.status_code == 200 and response.json()["message"] in ("No task running", "task stopped")
    assert requests.post(server.url + "/v1/engine/control?action=skip", timeout=10).status_code == 200
    missing = requests.post(server.url + "/v1/engine/control", json={}, timeout=10)
    assert missing.status_code == 400 and "action" in missing.json()["detail"]


def test_example_page_from_disk_passes_cors_preflight_and_reads_the_stream(server) -> None:
    # docs/example.html is opened from file:// (Origin: null) and fetches with Content-Type JSON.
    preflight = requests.options(
        server.url + GENERATE,
        headers={
            "Origin": "null",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type,x-api-key",
        },
        timeout=10,
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == "null"
    assert "x-api-key" in preflight.headers["Access-Control-Allow-Headers"].lower()
    stream = requests.post(
        server.url + GENERATE,
        json={**FAST, "stream_output": True},
        headers={"Origin": "null"},
        stream=True,
        timeout=60,
    )
    assert stream.headers["Access-Control-Allow-Origin"] == "null"
    assert "X-Task-Id" in stream.headers["Access-Control-Expose-Headers"]
    events = [json.loads(line[6:]) for line in stream.iter_lines() if line.startswith(b"data: ")]
    last = [event for event in events if event["progress"] == 100][-1]
    assert last["message"] == "Finished" and last["images"][0].startswith("http://")


@pytest.mark.parametrize("origin", ["http://localhost:5173", "http://127.0.0.1:8080", "https://localhost"])
def test_local_pages_may_call_an_unprotected_server(server, origin: str) -> None:
    response = requests.get(server.url + "/v1/engines/styles", headers={"Origin": origin}, timeout=10)
    assert response.headers.get("Access-Control-Allow-Origin") == origin


def test_foreign_pages_get_no_cors_grant_without_a_key(server) -> None:
    origin = "https://evil.example"
    response = requests.get(server.url + "/v1/engines/styles", headers={"Origin": origin}, timeout=10)
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = requests.options(
        server.url + GENERATE, headers={"Origin": origin, "Access-Control-Request-Method": "POST"}, timeout=10
    )
    assert preflight.headers.get("Access-Control-Allow-Origin") != origin


def test_with_an_api_key_any_origin_may_call(make_server) -> None:
    server = make_server("--api-key", "k3y").start()
    preflight = requests.options(
        server.url + GENERATE,
        headers={
            "Origin": "https://app.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "x-api-key,content-type",
        },
        timeout=10,
    )
    assert preflight.status_code in (200, 204) and preflight.headers["Access-Control-Allow-Origin"] == "*"
    reply = requests.get(
        server.url + "/v1/engines/styles", headers={"Origin": "https://app.example", "X-API-KEY": "k3y"}, timeout=10
    )
    assert reply.status_code == 200 and reply.headers["Access-Control-Allow-Origin"] == "*"
