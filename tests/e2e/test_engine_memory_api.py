"""GET /v1/engines/memory and /v1/engines/clean_vram on a real server process."""

from __future__ import annotations

import requests
from e2e_helpers import submit, wait_for

from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

MEMORY = "/v1/engines/memory"
CLEAN_VRAM = "/v1/engines/clean_vram"


def cached_names(base: str) -> list[str]:
    return [item["name"] for item in requests.get(base + MEMORY, timeout=10).json()["models"]]


def generate_one(base: str, headers: dict[str, str] | None = None) -> None:
    # Speed with 2 steps: the smallest task that needs only the checkpoint (Lightning adds a LoRA).
    body = {"prompt": "memory", "image_number": 1, "performance_selection": "Speed", "overwrite_step": 2}
    task = submit(base, body, headers=headers)
    assert wait_for(base, task["task_id"], headers=headers)["task_status"] == "finished"


def test_clean_vram_unloads_the_model_and_the_next_task_loads_it_again(server) -> None:
    generate_one(server.url)
    memory = requests.get(server.url + MEMORY, timeout=10).json()
    assert memory["device"] == "cpu" and memory["budget_bytes"] is None and memory["cuda"] is None
    assert [item["name"] for item in memory["models"]] == [DEMO_CHECKPOINT]
    assert memory["cached_bytes"] == memory["models"][0]["bytes"] > 0
    assert memory["process_rss_bytes"] > 0

    cleaned = requests.get(server.url + CLEAN_VRAM, timeout=30)
    assert cleaned.status_code == 200, cleaned.text
    body = cleaned.json()
    assert body["message"] == "ok"
    assert body["freed"] == memory["models"]
    assert body["memory"]["models"] == [] and body["memory"]["cached_bytes"] == 0
    again = requests.post(server.url + CLEAN_VRAM, timeout=30)  # POST works too; nothing is left to free
    assert again.status_code == 200 and again.json()["freed"] == []

    generate_one(server.url)
    assert cached_names(server.url) == [DEMO_CHECKPOINT]


def test_the_endpoints_need_the_api_key_and_report_the_configured_budget(make_server) -> None:
    server = make_server("--api-key", "s3cret", env={"FOOOCUS_ES_MODEL_CACHE_MB": "64"}).start()
    for method, path in (("GET", MEMORY), ("GET", CLEAN_VRAM), ("POST", CLEAN_VRAM)):
        assert requests.request(method, server.url + path, timeout=10).status_code == 401, (method, path)
    key = {"X-API-KEY": "s3cret"}
    assert requests.get(server.url + MEMORY, headers=key, timeout=10).json()["budget_bytes"] == 64 * 1024 * 1024
    cleaned = requests.post(server.url + CLEAN_VRAM, headers=key, timeout=30)
    assert cleaned.status_code == 200 and cleaned.json()["memory"]["budget_bytes"] == 64 * 1024 * 1024
