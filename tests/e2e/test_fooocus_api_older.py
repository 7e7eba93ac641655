"""The older Fooocus-API wire (api/fooocus_api) against the real server: its examples and its clients' habits.

examples_v1.py / examples_v2.py post `data=json.dumps(params)` (no Content-Type) or multipart forms as
python-requests builds them (`data=..., files={"input_image": bytes}`); the jobs they make are
ordinary tasks of the same log. Images are kept tiny and image tasks few: they diffuse at about
1 MP by Fooocus's rules.
"""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any

import numpy as np
import pytest
import requests
from e2e_helpers import FAST, Receiver, image_from, submit, wait_for
from PIL import Image

from fooocus_es.engine.imaging.sizes import plan_upscale

ONE_STEP = {"performance_selection": "Lightning", "advanced_params": {"overwrite_step": 1}}
RESULT_KEYS = ["base64", "url", "seed", "finish_reason"]
JOB_KEYS = ["job_id", "job_type", "job_stage", "job_progress", "job_status", "job_step_preview", "job_result"]


def png_bytes(width: int = 64, height: int = 64, *, seed: int = 3) -> bytes:
    pixels = (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def mask_bytes(width: int = 64, height: int = 64) -> bytes:
    mask = np.zeros((height, width), np.uint8)
    mask[16:48, 16:48] = 255
    buffer = io.BytesIO()
    Image.fromarray(mask).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def post_json(base: str, path: str, params: dict[str, Any], **kw: Any) -> requests.Response:
    """As examples_v1/v2 send it: a JSON string body without a Content-Type."""
    return requests.post(base + path, data=json.dumps(params), timeout=300, **kw)


def query(base: str, job_id: str, **params: Any) -> requests.Response:
    return requests.get(base + "/v1/generation/query-job", params={"job_id": job_id, **params}, timeout=30)


def wait_job(base: str, job_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = query(base, job_id).json()
        if job["job_stage"] in ("SUCCESS", "ERROR"):
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end: {job}")


def task(base: str, job_id: str) -> dict[str, Any]:
    return requests.get(f"{base}/tasks/{job_id}", timeout=10).json()


# -- text to image ----------------------------------------------------------------------------------
def test_v1_text_to_image_sync_answers_the_result_list_with_real_seeds(server) -> None:
    params = {
        "prompt": "a cat",
        **FAST,
        "image_number": 2,
        "image_seed": 1234,
        "advanced_params": {"overwrite_step": 2, "sampler_name": "euler", "adm_scaler_end": 0.2},
    }
    response = post_json(server.url, "/v1/generation/text-to-image", params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    results = response.json()
    assert [list(item) for item in results] == [RESULT_KEYS, RESULT_KEYS]
    assert [item["seed"] for item in results] == ["1234", "1235"]  # strings; image i has seed + i
    assert all(item["base64"] is None and item["finish_reason"] == "SUCCESS" for item in results)
    assert all(item["url"].startswith(server.url + "/outputs/") for item in results)
    assert image_from(results[0]["url"]).size == (64, 64)
    record = task(server.url, response.headers["X-Task-Id"])  # an ordinary task of the log
    assert record["task_status"] == "finished"
    assert record["req_params"]["overwrite_step"] == 2 and record["req_params"]["sampler_name"] == "euler"


def test_v1_text_to_image_async_then_query_job_until_finished(server) -> None:
    params = {"prompt": "a cat", **FAST, "async_process": True}  # examples_v1 (at 64 px, not 896*1152)
    response = post_json(server.url, "/v1/generation/text-to-image", params)
    assert response.status_code == 200, response.text
    job = response.json()
    assert list(job) == JOB_KEYS
    assert job["job_type"] == "Text to Image" and job["job_stage"] in ("WAITING", "RUNNING")
    assert job["job_result"] is None and job["job_step_preview"] is None
    done = wait_job(server.url, job["job_id"])
    assert (done["job_stage"], done["job_status"], done["job_progress"]) == ("SUCCESS", "Finished", 100)
    assert len(done["job_result"]) == 1 and done["job_result"][0]["url"].startswith(server.url)
    assert done["job_id"] == job["job_id"] == response.headers["X-Task-Id"]

    # The same task in the native views, with the route that admitted it.
    record = task(server.url, job["job_id"])
    assert record["result"] == [done["job_result"][0]["url"]] and record["wire"] == "fooocus-api/text-to-image"
    events = requests.get(f"{server.url}/tasks/{job['job_id']}/events", timeout=10).json()
    assert [e["type"] for e in events][0] == "TaskQueued" and events[-1]["type"] == "TaskFinished"
    assert events[0]["wire"] == "fooocus-api/text-to-image"


def test_an_old_wire_jobs_webhook_gets_fooocus_apis_body(server) -> None:
    receiver = Receiver(failures=0)
    try:
        params = {"prompt": "hook", **FAST, "image_seed": 42, "async_process": True, "webhook_url": receiver.url}
        job = post_json(server.url, "/v1/generation/text-to-image", params).json()
        done = wait_job(server.url, job["job_id"])
        for _ in range(100):
            if receiver.bodies:
                break
            time.sleep(0.1)
        # worker.py's body: the job id and [{url, seed}] (seed a string, no base64), not the native record
        url = done["job_result"][0]["url"]
        assert receiver.bodies == [{"job_id": job["job_id"], "job_result": [{"url": url, "seed": "42"}]}]
    finally:
        receiver.httpd.shutdown()


def test_query_job_reads_fooocusapi_tasks_too(server) -> None:
    created = submit(server.url, {"prompt": "native", "image_seed": 77})
    done = wait_for(server.url, created["task_id"])
    job = query(server.url, created["task_id"]).json()
    assert job["job_type"] == "Text to Image" and job["job_stage"] == "SUCCESS" and job["job_status"] == "Finished"
    assert job["job_result"] == [{"base64": None, "url": done["result"][0], "seed": "77", "finish_reason": "SUCCESS"}]


def test_unknown_job_is_404_in_upstreams_shape_and_job_id_is_required(server) -> None:
    response = query(server.url, "f" * 32)
    assert response.status_code == 404 and response.headers["content-type"].startswith("application/json")
    assert response.json() == {
        "job_id": "", "job_type": "Not Found", "job_stage": "ERROR", "job_progress": 0,
        "job_status": "Job not found", "job_step_preview": None, "job_result": None,
    }  # fmt: skip
    missing = requests.get(server.url + "/v1/generation/query-job", timeout=10)
    assert missing.status_code == 400 and missing.json()["field"] == "job_id"


def test_require_base64_gives_bare_base64_of_the_file_and_save_extension_its_format(server) -> None:
    params = {"prompt": "b64", **FAST, "require_base64": True, "save_extension": "jpeg", "save_meta": False}
    response = post_json(server.url, "/v1/generation/text-to-image", params)
    [result] = response.json()
    data = base64.b64decode(result["base64"], validate=True)  # bare: no data: prefix
    assert data[:2] == b"\xff\xd8"  # JPEG
    served = requests.get(result["url"], timeout=10)
    assert served.headers["content-type"] == "image/jpeg" and served.content == data
    req = task(server.url, response.headers["X-Task-Id"])["req_params"]
    assert (req["output_format"], req["save_metadata_to_images"], req["require_base64"]) == ("jpeg", False, True)
    job = query(server.url, response.headers["X-Task-Id"]).json()
    assert job["job_result"][0]["base64"] == result["base64"]  # query-job follows the job's require_base64
    plain = post_json(server.url, "/v1/generation/text-to-image", {"prompt": "url only", **FAST}).json()
    assert plain[0]["base64"] is None and plain[0]["url"]


def test_accept_image_png_answers_the_first_images_bytes(server) -> None:
    params = {"prompt": "bytes", **FAST, "image_number": 3, "save_extension": "webp"}
    response = post_json(server.url, "/v1/generation/text-to-image", params, headers={"Accept": "image/png"})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(response.content)).format == "PNG"
    assert len(task(server.url, response.headers["X-Task-Id"])["result"]) == 1  # image_number forced to 1
    by_query = requests.post(
        server.url + "/v1/generation/text-to-image", params={"accept": "image/png"}, json={"prompt": "q", **FAST},
        timeout=120,
    )  # fmt: skip
    assert by_query.status_code == 200 and by_query.content[:8] == b"\x89PNG\r\n\x1a\n"


# -- tolerance --------------------------------------------------------------------------------------
def test_what_old_clients_send_is_tolerated_and_noted(server) -> None:
    # dzhusipov's body: no `enabled` in loras, webhook_url "string", a model that is not installed.
    params = {
        "prompt": "tolerant",
        **FAST,
        "base_model_name": "juggernautXL_version6Rundiffusion.safetensors",
        "refiner_model_name": "None",
        "loras": [
            {"model_name": "fooocus_es_demo_lcm_lora.safetensors", "weight": 0.1},
            {"model_name": "not_installed_lora.safetensors", "weight": 0.1},
        ],
        "webhook_url": "string",
        "require_base64": False,
        "style_selections": ["Fooocus V2", "No Such Style"],
        "api_name": "txt2img",
        "style_comment": "daedon's template",
        "save_name": "mine",
        "advanced_params": {"inpaint_mask_upload_checkbox": True, "sampler_name": "dpmpp_2m_sde_gpu"},
    }
    response = post_json(server.url, "/v1/generation/text-to-image", params)
    assert response.status_code == 200, response.text
    assert (
        response.headers["X-Ignored-Fields"] == "api_name, style_comment, advanced_params.inpaint_mask_upload_checkbox"
    )
    assert response.json()[0]["url"]
    record = task(server.url, response.headers["X-Task-Id"])
    req = record["req_params"]
    assert req["base_model_name"] == "fooocus_es_demo.safetensors"  # the server preset's default
    assert req["loras"][0] == {"enabled": True, "model_name": "fooocus_es_demo_lcm_lora.safetensors", "weight": 0.1}
    assert req["loras"][1]["model_name"] == "None"  # the missing one left out
    assert req["style_selections"] == ["Fooocus V2"] and req["webhook_url"] == ""
    notes = " | ".join(record["notes"])
    for needle in ("api_name", "juggernautXL_version6Rundiffusion", "not_installed_lora", "'string'",
                   "No Such Style", "save_name"):  # fmt: skip
        assert needle in notes, notes


def test_a_wrong_type_is_a_400_naming_the_old_field(server) -> None:
    cases = [
        ({"advanced_params": {"overwrite_step": "many"}}, "advanced_params.overwrite_step"),
        ({"image_number": "two"}, "image_number"),
        ({"save_extension": "gif"}, "save_extension"),
    ]
    for body, field in cases:
        response = post_json(server.url, "/v1/generation/text-to-image", {**FAST, **body})
        assert response.status_code == 400, (body, response.text)
        assert response.json()["field"] == field and response.json()["detail"].startswith(field)
    upscale = post_json(server.url, "/v2/generation/image-upscale-vary", {"input_image": "not an image"})
    assert upscale.status_code == 400 and upscale.json()["field"] == "input_image", upscale.text
    no_mask = post_json(server.url, "/v2/generation/image-inpaint-outpaint", {"input_image": b64(png_bytes())})
    assert no_mask.status_code == 400 and no_mask.json()["field"] == "input_mask", no_mask.text
    form_cases = [({"cn_stop1": "high"}, "cn_stop1"), ({"loras": "[{oops"}, "loras")]
    for data, field in form_cases:
        response = requests.post(
            server.url + "/v1/generation/image-prompt", data=data, files={"cn_img1": png_bytes()}, timeout=30
        )
        assert response.status_code == 400 and response.json()["field"] == field, response.text
    as_json = post_json(
        server.url, "/v1/generation/image-upscale-vary", {"input_image": b64(png_bytes()), "image_number": "x"}
    )
    assert as_json.status_code == 400 and as_json.json()["field"] == "image_number"  # a JSON body read as v2's


def test_get_on_a_generation_route_answers_at_once(server) -> None:
    started = time.monotonic()
    assert requests.get(server.url + "/v1/generation/text-to-image", timeout=5).status_code == 405
    assert time.monotonic() - started < 2


# -- image routes -------------------------------------------------------------------------------------
def test_v1_upscale_vary_multipart_with_an_input_image_file(server) -> None:
    response = requests.post(
        server.url + "/v1/generation/image-upscale-vary",
        data={"uov_method": "Upscale (Fast 2x)", "async_process": True, "prompt": "sharp", "image_seed": 5},
        files={"input_image": png_bytes(48, 32)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["job_type"] == "Image Upscale or Variation"
    done = wait_job(server.url, job["job_id"])
    assert done["job_stage"] == "SUCCESS", done
    expected = plan_upscale(48, 32, "Upscale (Fast 2x)")
    assert image_from(done["job_result"][0]["url"]).size == (expected.width, expected.height)
    assert task(server.url, job["job_id"])["req_params"]["uov_input_image"].startswith(server.url + "/inputs/")


def test_v2_upscale_custom_3x(server) -> None:
    params = {"uov_method": "Upscale (Custom)", "upscale_value": 3, "input_image": b64(png_bytes(32, 32)), **ONE_STEP}
    response = post_json(server.url, "/v2/generation/image-upscale-vary", params)
    assert response.status_code == 200, response.text
    [result] = response.json()
    expected = plan_upscale(32, 32, "Upscale (Custom)", 3.0)
    assert image_from(result["url"]).size == (expected.width, expected.height)
    req = task(server.url, response.headers["X-Task-Id"])["req_params"]
    assert (req["uov_method"], req["upscale_multiple"]) == ("Upscale (Custom)", 3.0)


def test_v1_inpaint_outpaint_multipart_with_image_mask_and_repeated_directions(server) -> None:
    response = requests.post(
        server.url + "/v1/generation/image-inpaint-outpaint",
        data={"prompt": "a cat", "outpaint_selections": ["Left", "Right"], "async_process": True,
              "performance_selection": "Lightning", "advanced_params": json.dumps({"overwrite_step": 1})},
        files={"input_image": png_bytes(), "input_mask": mask_bytes()},
        timeout=60,
    )  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json()["job_type"] == "Image Inpaint or Outpaint"
    done = wait_job(server.url, response.json()["job_id"], timeout=240)
    assert done["job_stage"] == "SUCCESS", done
    req = task(server.url, done["job_id"])["req_params"]
    assert req["outpaint_selections"] == ["Left", "Right"] and req["inpaint_mask_image_upload"]
    assert image_from(done["job_result"][0]["url"]).size[0] > 64  # widened on both sides


def test_v2_inpaint_outpaint_json(server) -> None:
    params = {
        "prompt": "a cat",
        "input_image": b64(png_bytes()),
        "input_mask": b64(mask_bytes()),
        "inpaint_additional_prompt": "a hat",
        "outpaint_selections": ["Left", "Right"],
        **ONE_STEP,
    }
    response = post_json(server.url, "/v2/generation/image-inpaint-outpaint", params)
    assert response.status_code == 200, response.text
    [result] = response.json()
    assert image_from(result["url"]).size[0] > 64
    record = task(server.url, response.headers["X-Task-Id"])
    assert record["req_params"]["inpaint_additional_prompt"] == "a hat"
    assert record["req_params"]["inpaint_respective_field"] == 1.0  # Fooocus-API's default


def test_v1_image_prompt_multipart_with_cn_img_files(server) -> None:
    # examples_v1's ip_params: requests sends the image_prompts dicts as repeated Python reprs.
    ip_params = {
        "prompt": "a cat",
        **FAST,
        "async_process": True,
        "image_prompts": [{"cn_stop": 0.6, "cn_weight": 0.6, "cn_type": "ImagePrompt"}] * 2,
    }
    response = requests.post(
        server.url + "/v1/generation/image-prompt",
        data=ip_params,
        files={"cn_img1": png_bytes(seed=1), "cn_img2": png_bytes(seed=2)},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    assert response.headers["X-Ignored-Fields"] == "image_prompts"
    assert response.json()["job_type"] == "Image Prompt"
    done = wait_job(server.url, response.json()["job_id"])
    assert done["job_stage"] == "SUCCESS" and done["job_type"] == "Image Prompt"
    record = task(server.url, done["job_id"])
    prompts = record["req_params"]["controlnet_image"]
    assert [(p["cn_stop"], p["cn_weight"], p["cn_type"]) for p in prompts] == [(0.5, 0.6, "ImagePrompt")] * 2
    assert not any("image prompts" in note for note in record["notes"])  # applied (test_image_prompts_e2e.py)


def test_v2_image_prompt_and_text_to_image_with_ip(server) -> None:
    face_swap = {
        "prompt": "a face",
        **FAST,
        "image_prompts": [
            {"cn_img": b64(png_bytes(seed=4)), "cn_stop": 0.5, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
            {"cn_img": b64(png_bytes(seed=5)), "cn_stop": 0, "cn_weight": 0, "cn_type": "FaceSwap"},
        ],
        "async_process": True,
    }
    job = post_json(server.url, "/v2/generation/image-prompt", face_swap).json()
    assert job["job_type"] == "Image Prompt"
    assert wait_job(server.url, job["job_id"])["job_stage"] == "SUCCESS"
    prompts = task(server.url, job["job_id"])["req_params"]["controlnet_image"]
    assert [(p["cn_stop"], p["cn_weight"]) for p in prompts] == [(0.5, 0.6), (0.9, 0.75)]  # 0: FaceSwap's defaults

    with_ip = {"prompt": "a cat", **FAST, "image_prompts": face_swap["image_prompts"][:1], "async_process": True}
    with_ip["outpaint_selections"] = ["Left", "Right"]  # examples_v2 adds it; the route has no such field
    response = post_json(server.url, "/v2/generation/text-to-image-with-ip", with_ip)
    assert response.headers["X-Ignored-Fields"] == "outpaint_selections"
    done = wait_job(server.url, response.json()["job_id"])
    assert done["job_type"] == "Text to Image" and done["job_stage"] == "SUCCESS"  # upstream's type for this route


# -- jobs ------------------------------------------------------------------------------------------------
def test_stop_ends_the_running_job_as_success_with_images_so_far_and_previews_are_bare(server) -> None:
    assert requests.post(server.url + "/v1/generation/stop", timeout=10).json() == {"msg": "success"}  # idle
    params = {"prompt": "long", "aspect_ratios_selection": "128*128", "image_number": 3, "image_seed": 40,
              "advanced_params": {"overwrite_step": 40}, "async_process": True}  # fmt: skip
    job = post_json(server.url, "/v1/generation/text-to-image", params).json()
    state, previews = wait_status(server.url, job["job_id"], "image 2/3", require_step_preview="True")
    assert state["job_stage"] == "RUNNING" and 0 < state["job_progress"] < 100, state
    assert query(server.url, job["job_id"]).json()["job_step_preview"] is None  # only when asked
    assert previews and not previews[-1].startswith("data:")
    assert Image.open(io.BytesIO(base64.b64decode(previews[-1]))).format == "JPEG"
    stop = requests.post(server.url + "/v1/generation/stop", json={"api_name": "stop"}, timeout=10)
    assert stop.json() == {"msg": "success"}
    done = wait_job(server.url, job["job_id"])
    assert (done["job_stage"], done["job_status"]) == ("SUCCESS", "Finished")
    seeds = [item["seed"] for item in done["job_result"]]
    assert seeds in (["40"], ["40", "41"])  # the images made before the stop, with their own seeds
    assert task(server.url, job["job_id"])["task_status"] == "stop"


def test_a_skipped_image_leaves_the_others_seeds_in_place(server) -> None:
    params = {"prompt": "skip", "aspect_ratios_selection": "128*128", "image_number": 3, "image_seed": 900,
              "advanced_params": {"overwrite_step": 40}, "async_process": True}  # fmt: skip
    job = post_json(server.url, "/v1/generation/text-to-image", params).json()
    wait_status(server.url, job["job_id"], "image 1/3")
    requests.post(server.url + "/v1/engine/control", params={"action": "skip"}, timeout=10)
    done = wait_job(server.url, job["job_id"])
    assert done["job_stage"] == "SUCCESS" and [item["seed"] for item in done["job_result"]] == ["901", "902"]


def wait_status(base: str, job_id: str, text: str, **params: Any) -> tuple[dict[str, Any], list[str]]:
    """Poll until job_status mentions `text`; the previews seen on the way."""
    previews, deadline = [], time.monotonic() + 120
    while time.monotonic() < deadline:
        state = query(base, job_id, **params).json()
        if state["job_step_preview"]:
            previews.append(state["job_step_preview"])
        if state["job_status"] and text in state["job_status"]:
            return state, previews
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} never showed {text!r}: {state}")


def test_job_queue_and_job_history(server) -> None:
    job = post_json(server.url, "/v1/generation/text-to-image", {"prompt": "h", **FAST, "async_process": True}).json()
    info = requests.get(server.url + "/v1/generation/job-queue", timeout=10).json()
    assert list(info) == ["running_size", "finished_size", "last_job_id"]
    assert info["last_job_id"] == job["job_id"] and info["running_size"] >= 0
    wait_job(server.url, job["job_id"])
    after = requests.get(server.url + "/v1/generation/job-queue", timeout=10).json()
    assert after["running_size"] == 0 and after["finished_size"] >= 1

    history = requests.get(server.url + "/v1/generation/job-history", timeout=10).json()
    assert history["queue"] == [] and history["history"][0]["job_id"] == job["job_id"]  # newest first
    entry = history["history"][0]
    assert list(entry) == ["job_id", "in_queue_mills", "start_mills", "finish_mills", "is_finished"]
    assert entry["is_finished"] is True and entry["in_queue_mills"] <= entry["start_mills"] <= entry["finish_mills"]
    one = requests.get(server.url + "/v1/generation/job-history", params={"job_id": job["job_id"]}, timeout=10)
    assert one.json() == {"queue": [], "history": [entry]}
    page = requests.get(server.url + "/v1/generation/job-history", params={"page": 0, "page_size": 1}, timeout=10)
    assert len(page.json()["history"]) == 1

    url = query(server.url, job["job_id"]).json()["job_result"][0]["url"]
    delete = {"job_id": job["job_id"], "delete": "true"}
    assert requests.get(server.url + "/v1/generation/job-history", params=delete, timeout=10).json() == {
        "message": "Deleted"
    }
    assert query(server.url, job["job_id"]).status_code == 404
    assert requests.get(url, timeout=10).status_code == 404  # its output went with it
    again = requests.get(server.url + "/v1/generation/job-history", params=delete, timeout=10).json()
    assert again == {"message": "Not found"}


def test_ping_and_refresh_models(server) -> None:
    pong = requests.get(server.url + "/ping", timeout=10)
    assert pong.status_code == 200 and pong.text == "pong"
    refreshed = requests.post(server.url + "/v1/engines/refresh-models", timeout=10)
    assert refreshed.status_code == 200
    assert refreshed.json() == requests.get(server.url + "/v1/engines/all-models", timeout=10).json()
    assert "fooocus_es_demo.safetensors" in refreshed.json()["model_filenames"]


@pytest.mark.parametrize("path", ["/v1/generation/query-job", "/v1/generation/text-to-image", "/ping"])
def test_the_routes_are_in_the_schema(server, path) -> None:
    schema = requests.get(server.url + "/schema/openapi.json", timeout=10).json()
    operations = schema["paths"][path]
    assert all(operation["tags"] == ["fooocus-api (older)"] for operation in operations.values())
