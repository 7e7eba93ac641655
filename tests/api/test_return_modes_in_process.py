"""/v1/engine/generate/'s return modes in process: async + polling, blocking JSON, image bytes."""

from __future__ import annotations

import io
import json

from litestar.testing import TestClient
from PIL import Image

from fooocus_es.media.outputs import read_parameters

from .api_helpers import FAST, GENERATE, local_path, submit, wait_for
from .fake_engine import FakeEngine


def test_async_submit_then_poll_until_finished(client: TestClient, engine: FakeEngine) -> None:
    queued = submit(client, {"prompt": "a red fox", "image_number": 2, "image_seed": 1234})
    assert queued["task_status"] in ("pending", "running") and len(queued["task_id"]) == 32
    assert queued["req_params"]["image_seed"] == 1234 and queued["finish_mills"] is None
    done = wait_for(client, queued["task_id"])
    assert done["task_status"] == "finished" and done["progress"] == 100 and len(done["result"]) == 2
    assert [plan.seeds for plan in engine.prepared] == [(1234, 1235)]
    first = client.get(local_path(done["result"][0]))
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(first.content))
    assert image.size == (96, 64) and image.getpixel((0, 0)) == (1234 % 256, 1234 >> 8, 0)  # the fake's colour
    parameters, _scheme = read_parameters(client.get(local_path(done["result"][1])).content)
    assert json.loads(parameters)["seed"] == "1235"
    events = [e["type"] for e in client.get(f"/tasks/{queued['task_id']}/events").json()]
    assert events[:2] == ["TaskQueued", "TaskStarted"] and events[-1] == "TaskFinished"
    assert events.count("TaskProgress") >= 8  # 4 steps x 2 images, plus the runner's own stages


def test_blocking_json_mode_answers_the_finished_record(client: TestClient) -> None:
    body = {**FAST, "prompt": "json", "image_number": 2, "async_process": False}
    response = client.post(GENERATE, json=body, headers={"Accept": "application/json"})
    record = response.json()
    assert response.status_code == 200 and response.headers["x-task-id"] == record["task_id"]
    assert record["task_status"] == "finished" and len(record["result"]) == 2 and record["finish_mills"]


def test_sync_response_json_setting_makes_json_the_default(make_client) -> None:
    client = make_client(sync_response="json")
    response = client.post(GENERATE, json={**FAST, "prompt": "json default", "async_process": False})
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["task_status"] == "finished"


def test_binary_mode_answers_one_image_in_the_output_format(client: TestClient) -> None:
    body = {**FAST, "prompt": "binary", "image_number": 3, "async_process": False, "stream_output": False}
    png = client.post(GENERATE, json=body)
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(png.content)).size == (96, 64)
    record = client.get(f"/tasks/{png.headers['x-task-id']}").json()
    assert len(record["result"]) == 1  # image_number forced to 1
    jpeg = client.post(GENERATE, json={**body, "output_format": "jpeg"})
    assert jpeg.headers["content-type"] == "image/jpeg" and jpeg.content[:2] == b"\xff\xd8"
    webp = client.post(GENERATE, json=body, headers={"Accept": "image/webp"})
    assert webp.headers["content-type"] == "image/webp" and webp.content[8:12] == b"WEBP"
