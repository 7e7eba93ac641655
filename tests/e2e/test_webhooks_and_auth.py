"""Webhook delivery with a retry to a local receiver, and the API key on every route."""

from __future__ import annotations

import threading

import requests
from e2e_helpers import FAST, GENERATE, Receiver, submit, wait_for


def test_webhook_is_retried_and_delivers_the_final_record(server) -> None:
    receiver = Receiver(failures=1)
    try:
        task = submit(server.url, {"prompt": "hook", "webhook_url": receiver.url})
        done = wait_for(server.url, task["task_id"])
        for _ in range(100):
            if receiver.bodies:
                break
            threading.Event().wait(0.1)
        assert receiver.attempts == 2 and len(receiver.bodies) == 1
        body = receiver.bodies[0]
        assert isinstance(body, dict) and body["task_id"] == task["task_id"]  # an object, not a JSON string
        assert body["task_status"] == "finished" and body["result"] == done["result"]
    finally:
        receiver.httpd.shutdown()


def test_api_key_guards_every_route_and_signed_urls_work(make_server) -> None:
    server = make_server("--api-key", "s3cret").start()
    key = {"X-API-KEY": "s3cret"}
    routes = [
        ("GET", "/tasks"),
        ("GET", "/tasks/abc"),
        ("GET", "/health"),
        ("GET", "/v1/engines/all-models"),
        ("GET", "/v1/engines/styles"),
        ("POST", "/v1/engine/control?action=stop"),
        ("POST", GENERATE),
        ("GET", "/outputs/2024-01-01/x.png"),
        ("GET", "/inputs/x.png"),
        ("GET", "/schema/openapi.json"),
    ]
    for method, path in routes:
        assert requests.request(method, server.url + path, json={}, timeout=10).status_code == 401, path
        wrong = requests.request(method, server.url + path, json={}, headers={"X-API-KEY": "nope"}, timeout=10)
        assert wrong.status_code == 403, path
    task = submit(server.url, {"prompt": "secret"}, headers=key)
    done = wait_for(server.url, task["task_id"], headers=key)
    url = done["result"][0]
    assert "?sig=" in url and requests.get(url, timeout=10).status_code == 200  # works in an <img> tag
    assert requests.get(url.replace("?sig=", "?sig=0"), timeout=10).status_code == 401
    bearer = requests.get(server.url + "/tasks", headers={"Authorization": "Bearer s3cret"}, timeout=10)
    assert bearer.status_code == 200
    assert requests.post(server.url + GENERATE, json=FAST, headers=key, timeout=60).status_code == 200
