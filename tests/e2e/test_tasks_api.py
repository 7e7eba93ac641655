"""/tasks querying, paging, ranges, delete, the audit endpoint, 404s and 4xx naming fields."""

from __future__ import annotations

import base64
import io
import time
from datetime import datetime, timedelta

import requests
from e2e_helpers import FAST, GENERATE, submit, wait_for
from PIL import Image


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000).isoformat(timespec="milliseconds")


def test_tasks_shape_paging_and_time_range(make_server) -> None:
    server = make_server().start()
    ids = [wait_for(server.url, submit(server.url, {"prompt": f"p{i}"})["task_id"])["task_id"] for i in range(5)]
    everything = requests.get(server.url + "/tasks", timeout=10).json()
    assert set(everything) == {"history", "current", "pending"}
    assert [r["task_id"] for r in everything["history"]] == ids[::-1]  # newest first, page_size 10
    page = requests.get(
        server.url + "/tasks", params={"query": "history", "page": 1, "page_size": 2}, timeout=10
    ).json()
    assert [r["task_id"] for r in page["history"]] == [ids[2], ids[1]] and page["current"] == page["pending"] == []
    records = {r["task_id"]: r for r in everything["history"]}
    start = records[ids[1]]["in_queue_mills"]
    end = records[ids[3]]["in_queue_mills"]
    ranged = requests.get(
        server.url + "/tasks", params={"query": "history", "start_at": iso(start), "end_at": iso(end)}, timeout=10
    ).json()
    assert [r["task_id"] for r in ranged["history"]] == [ids[3], ids[2], ids[1]]
    for query in ("current", "pending"):
        assert requests.get(server.url + "/tasks", params={"query": query}, timeout=10).json()["history"] == []


def test_delete_removes_records_and_outputs_but_not_inputs(make_server) -> None:
    server = make_server().start()
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(buffer, "PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    old = wait_for(server.url, submit(server.url, {"prompt": "old", "uov_input_image": image})["task_id"])
    time.sleep(0.05)
    keep_from = datetime.now()
    new = wait_for(server.url, submit(server.url, {"prompt": "new"})["task_id"])
    old_file = server.data_dir / old["result"][0].split("/", 3)[3]
    input_files = list((server.data_dir / "inputs").glob("*.png"))
    assert old_file.exists() and len(input_files) == 1
    start = iso(old["in_queue_mills"] - 1000)
    end = (keep_from - timedelta(milliseconds=1)).isoformat(timespec="milliseconds")
    deleted = requests.get(
        server.url + "/tasks", params={"start_at": start, "end_at": end, "action": "delete"}, timeout=10
    )
    assert deleted.status_code == 200 and [r["task_id"] for r in deleted.json()["history"]] == [old["task_id"]]
    assert not old_file.exists() and input_files[0].exists()
    assert requests.get(f"{server.url}/tasks/{old['task_id']}", timeout=10).status_code == 404
    assert requests.get(f"{server.url}/tasks/{new['task_id']}", timeout=10).json()["task_status"] == "finished"
    no_range = requests.get(server.url + "/tasks", params={"action": "delete"}, timeout=10)
    assert no_range.status_code == 400 and "start_at" in no_range.json()["detail"]


def test_unknown_task_is_404_and_events_are_the_audit(server) -> None:
    assert requests.get(server.url + "/tasks/0123456789abcdef", timeout=10).status_code == 404
    assert requests.get(server.url + "/tasks/0123456789abcdef/events", timeout=10).status_code == 404
    done = wait_for(server.url, submit(server.url, {"prompt": "audit"})["task_id"])
    events = requests.get(f"{server.url}/tasks/{done['task_id']}/events", timeout=10).json()
    types = [e["type"] for e in events]
    assert types[0] == "TaskQueued" and types[1] == "TaskStarted" and types[-1] == "TaskFinished"
    assert types.count("TaskProgress") >= 4 and all(e.get("preview") is None for e in events)
    assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
    assert events[0]["params"]["prompt"] == "audit"


def test_bad_fields_get_400_naming_the_field(server) -> None:
    cases = {
        "image_number": {"image_number": 0},
        "guidance_scale": {"guidance_scale": 99},
        "style_selections[0]": {"style_selections": ["No Such Style"]},
        "sampler_name": {"sampler_name": "nope"},
        "base_model_name": {"base_model_name": "nope.safetensors"},
        "preset": {"preset": "no-such-preset"},
        "loras[0].weight": {"loras": [{"enabled": True, "model_name": "x", "weight": 5}]},
        "performance_selection": {"performance_selection": "Warp"},
    }
    for field, body in cases.items():
        response = requests.post(server.url + GENERATE, json={**FAST, **body, "async_process": True}, timeout=10)
        assert response.status_code == 400, (field, response.text)
        assert field in response.text, (field, response.text)
    malformed = requests.post(server.url + GENERATE, data=b"{not json", timeout=10)
    assert malformed.status_code == 400


def test_bad_images_are_rejected_and_nothing_is_written(make_server) -> None:
    server = make_server().start()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buffer, "PNG")
    truncated = base64.b64encode(buffer.getvalue()[:60]).decode()
    huge = io.BytesIO()
    Image.new("1", (20000, 20000)).save(huge, "PNG")  # tiny file, 400 M pixels declared
    bad = {
        "uov_input_image": "this is not base64 !!!",
        "inpaint_input_image": truncated,
        "inpaint_mask_image_upload": "data:image/png;base64," + base64.b64encode(huge.getvalue()).decode(),
        "enhance_input_image": "http://127.0.0.1:9/private.png",  # loopback: refused unless allowed
    }
    for field, value in bad.items():
        body = {
            **FAST,
            "async_process": True,
            "uov_input_image": "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode(),
            field: value,
        }
        response = requests.post(server.url + GENERATE, json=body, timeout=30)
        assert response.status_code == 400 and field in response.json()["detail"], response.text
    assert list((server.data_dir / "inputs").iterdir()) == []
    assert requests.get(server.url + "/tasks", timeout=10).json() == {"history": [], "current": [], "pending": []}


def test_input_images_are_stored_once_by_hash_and_served(server) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (10, 200, 30)).save(buffer, "PNG")
    raw = base64.b64encode(buffer.getvalue()).decode()
    first = submit(server.url, {"prompt": "in", "uov_input_image": raw})
    second = submit(server.url, {"prompt": "in", "uov_input_image": "data:image/png;base64," + raw})
    url = first["req_params"]["uov_input_image"]
    assert url == second["req_params"]["uov_input_image"] and "/inputs/" in url
    assert requests.get(url, timeout=10).status_code == 200
    for task in (first, second):
        wait_for(server.url, task["task_id"])


def test_files_outside_their_folders_are_not_served(server) -> None:
    for path in (
        "/outputs/../outputs/db.sqlite3",
        "/outputs/db.sqlite3",
        "/inputs/../../etc/passwd",
        "/outputs/%2e%2e/x.png",
    ):
        assert requests.get(server.url + path, timeout=10).status_code in (400, 404), path


def test_listings_and_health(server) -> None:
    styles = requests.get(server.url + "/v1/engines/styles", timeout=10).json()
    assert styles[:2] == ["Fooocus V2", "Random Style"] and len(styles) == 279
    models = requests.get(server.url + "/v1/engines/all-models", timeout=10).json()
    assert "fooocus_es_demo.safetensors" in models["model_filenames"]
    assert "demo" in requests.get(server.url + "/v1/engines/presets", timeout=10).json()["presets"]
    health = requests.get(server.url + "/health", timeout=10).json()
    assert (
        health["status"] == "ok" and health["ready"] is True and health["device"] == "cpu" and "queue_depth" in health
    )
    assert requests.get(server.url + "/schema/openapi.json", timeout=10).json()["paths"]["/v1/engine/generate"]
