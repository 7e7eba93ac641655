"""The three return modes of /v1/engine/generate/ against a real server process, demo model."""

from __future__ import annotations

import io
import json
import re

import requests
from e2e_helpers import FAST, GENERATE, image_from, stream_messages, submit, wait_for
from PIL import Image

from fooocus_es.media.outputs import read_parameters


def test_async_task_goes_pending_to_finished_with_served_images(server) -> None:
    queued = submit(server.url, {"prompt": "a red fox", "image_number": 2, "image_seed": 1234})
    assert queued["task_status"] in ("pending", "running") and len(queued["task_id"]) == 32
    assert queued["req_params"]["image_seed"] == 1234 and queued["req_params"]["prompt"] == "a red fox"
    done = wait_for(server.url, queued["task_id"])
    assert done["task_status"] == "finished" and done["progress"] == 100
    assert len(done["result"]) == 2
    for url in done["result"]:
        assert re.match(rf"{server.url}/outputs/\d{{4}}-\d{{2}}-\d{{2}}/.+\.png$", url)
        image = image_from(url)
        assert image.size == (64, 64) and image.format == "PNG"
    parameters, scheme = read_parameters(requests.get(done["result"][1], timeout=10).content)
    assert scheme == "fooocus" and json.loads(parameters)["seed"] == "1235"  # seed + 1 for the second image


def test_same_request_and_seed_give_the_same_pixels(server) -> None:
    first = wait_for(server.url, submit(server.url, {"prompt": "same", "image_seed": 77})["task_id"])
    second = wait_for(server.url, submit(server.url, {"prompt": "same", "image_seed": 77})["task_id"])
    third = wait_for(server.url, submit(server.url, {"prompt": "same", "image_seed": 78})["task_id"])
    pixels = [image_from(r["result"][0]).tobytes() for r in (first, second, third)]
    assert pixels[0] == pixels[1] and pixels[0] != pixels[2]


def test_stream_sends_progress_previews_then_finished(server) -> None:
    messages = stream_messages(server.url, {"prompt": "stream me"})
    assert all(set(m) >= {"progress", "preview", "message", "images"} for m in messages)
    # Progress is coalesced to the stream rate, so a fast task's steps may collapse into one event;
    # whatever survives keeps FooocusAPI's scale and order, and a preview gets through.
    scale = {f"Sampling step {i}/4, image 1/1 ...": p for i, p in zip(range(1, 5), [13, 34, 56, 78], strict=True)}
    assert all(m["progress"] == scale[m["message"]] for m in messages if m["message"] in scale)
    progress = [m["progress"] for m in messages]
    assert progress == sorted(progress)
    assert any((m["preview"] or "").startswith("data:image/jpeg;base64,") for m in messages)
    final = messages[-1]
    assert final["message"] == "Finished" and final["progress"] == 100 and len(final["images"]) == 1
    assert image_from(final["images"][0]).size == (64, 64)


def test_seed_client_stream_example_runs_unchanged(server) -> None:
    # The user's own client code (seed file), with only the URL changed.
    endpoint = server.url + GENERATE
    params = {
        "prompt": "",
        "negative_prompt": "",
        "performance_selection": "Lightning",
        "stream_output": True,
        "webhook_url": "",
        "aspect_ratios_selection": "64*64",
    }
    res = requests.post(url=endpoint, data=json.dumps(params), stream=True, timeout=60)
    printed = []
    for line in res.iter_lines(chunk_size=8192):
        line = line.decode("utf-8").split("\n")[0]
        try:
            json_data = json.loads(line[6:])
            if json_data["preview"] is not None:
                json_data["preview"] = "..."
        except json.decoder.JSONDecodeError:
            continue
        printed.append(json_data)
    assert printed[-1]["message"] == "Finished" and printed[-1]["images"]


def test_binary_mode_returns_image_bytes_in_the_output_format(server) -> None:
    body = {**FAST, "prompt": "binary", "image_number": 3, "async_process": False, "stream_output": False}
    png = requests.post(server.url + GENERATE, data=json.dumps(body), timeout=60)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (64, 64)
    record = requests.get(f"{server.url}/tasks/{png.headers['x-task-id']}", timeout=10).json()
    assert len(record["result"]) == 1  # image_number forced to 1
    jpeg = requests.post(server.url + GENERATE, json={**body, "output_format": "jpeg"}, timeout=60)
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    webp = requests.post(server.url + GENERATE, json=body, headers={"Accept": "image/webp"}, timeout=60)
    assert webp.headers["content-type"] == "image/webp" and webp.content[8:12] == b"WEBP"


def test_blocking_json_mode_returns_the_finished_record(server) -> None:
    body = {**FAST, "prompt": "json", "image_number": 2, "async_process": False}
    response = requests.post(server.url + GENERATE, json=body, headers={"Accept": "application/json"}, timeout=60)
    record = response.json()
    assert response.status_code == 200 and record["task_status"] == "finished" and len(record["result"]) == 2


def test_a_disconnected_stream_does_not_cancel_its_task(server) -> None:
    body = {**FAST, "prompt": "walk away", "stream_output": True, "overwrite_step": 12}
    response = requests.post(server.url + GENERATE, json=body, stream=True, timeout=60)
    task_id = response.headers["x-task-id"]
    next(response.iter_lines())
    response.close()
    done = wait_for(server.url, task_id)
    assert done["task_status"] == "finished" and len(done["result"]) == 1


def test_seed_client_async_and_binary_examples_run_unchanged(server) -> None:
    # The user's async example, URL changed; then poll /tasks/{task_id} as the seed describes.
    endpoint = server.url + GENERATE
    params = {
        "prompt": "",
        "negative_prompt": "",
        "performance_selection": "Lightning",
        "async_process": True,
        "webhook_url": "",
        "aspect_ratios_selection": "64*64",
    }
    res = requests.post(url=endpoint, data=json.dumps(params), timeout=60)
    queued = res.json()
    assert set(queued) >= {
        "id",
        "task_id",
        "req_params",
        "in_queue_mills",
        "start_mills",
        "finish_mills",
        "task_status",
        "progress",
        "preview",
        "webhook_url",
        "result",
    }
    done = wait_for(server.url, queued["task_id"])
    assert done["task_status"] == "finished" and done["result"]

    # The binary example (without the matplotlib display).
    params = {
        "prompt": "",
        "negative_prompt": "",
        "performance_selection": "Lightning",
        "async_process": False,
        "stream_output": False,
        "webhook_url": "",
        "aspect_ratios_selection": "64*64",
    }
    res = requests.post(url=endpoint, data=json.dumps(params), timeout=60)
    image = Image.open(io.BytesIO(res.content))
    assert image.size == (64, 64)


def test_running_task_shows_progress_and_a_preview(server) -> None:
    task = submit(server.url, {"prompt": "watch me", "overwrite_step": 60, "aspect_ratios_selection": "128*128"})
    running = wait_for(server.url, task["task_id"], until="running")
    assert running["preview"].startswith("data:image/jpeg;base64,") and 13 < running["progress"] < 100
    current = requests.get(server.url + "/tasks", params={"query": "current"}, timeout=10).json()["current"]
    assert [r["task_id"] for r in current] == [task["task_id"]] and current[0]["preview"]
    assert wait_for(server.url, task["task_id"])["task_status"] == "finished"


def test_image_urls_are_fetched_as_inputs(server) -> None:
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    buffer = io.BytesIO()
    Image.new("RGB", (40, 30), (9, 99, 199)).save(buffer, "JPEG")
    payload = buffer.getvalue()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/photo.jpg"
        task = submit(server.url, {"prompt": "from url", "uov_input_image": url})
        stored = task["req_params"]["uov_input_image"]
        assert "/inputs/" in stored and image_from(stored).size == (40, 30)
        wait_for(server.url, task["task_id"])
    finally:
        httpd.shutdown()
