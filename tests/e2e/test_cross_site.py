"""Cross-site requests and DNS rebinding against a real server, as a browser would send them.

A page on another site can make the user's browser POST (form, fetch with a "simple" body) or GET
(`<img src>`) to the server on 127.0.0.1; a rebinding page can even read the answers. The headers a
browser adds say where each request comes from: `Origin`, `Sec-Fetch-Site`, `Host`. Clients outside
a browser (curl, Python) send none of the first two and must keep working.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import ServerProcess
from e2e_helpers import FAST, GENERATE, wait_for
from PIL import Image

EVIL = "https://evil.example"
CROSS_SITE_IMG = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
KEY = "s3cret-key"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[ServerProcess]:
    """The default set-up (no key, loopback), with one extra host name allowed."""
    process = ServerProcess(tmp_path_factory.mktemp("cross-site"), demo_models, "--allowed-hosts", "rebind.example")
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, demo_models: Path) -> Iterator[ServerProcess]:
    """A server with an API key (from the environment, where a process list does not show it)."""
    process = ServerProcess(tmp_path_factory.mktemp("cross-site-key"), demo_models, env={"FOOOCUS_ES_API_KEY": KEY})
    process.start()
    yield process
    process.stop()


def body(prompt: str) -> dict[str, Any]:
    return {**FAST, "prompt": prompt, "async_process": True}


def queued_with(server: ServerProcess, prompt: str, headers: dict[str, str] | None = None) -> int:
    """How many tasks, in any state, carry this prompt."""
    tasks = requests.get(server.url + "/tasks", params={"page_size": 1000}, headers=headers, timeout=10).json()
    records = [*tasks["history"], *tasks["current"], *tasks["pending"]]
    return sum(1 for record in records if record["req_params"]["prompt"] == prompt)


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (20, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


# -- Origin and Sec-Fetch-Site --------------------------------------------------------------------
def test_a_foreign_origin_cannot_queue_a_task(site) -> None:
    reply = requests.post(site.url + GENERATE, json=body("from evil"), headers={"Origin": EVIL}, timeout=30)
    assert reply.status_code == 403, reply.text
    detail = reply.json()["detail"]
    assert EVIL in detail and "--cors-origins" in detail and "API key" in detail
    assert queued_with(site, "from evil") == 0


def test_a_foreign_origin_cannot_stop_cancel_or_use_the_other_wires(site) -> None:
    headers = {"Origin": EVIL}
    for path, kwargs in [
        ("/v1/engine/control?action=stop", {}),
        ("/v1/generation/stop", {}),
        ("/tasks/0123456789abcdef/cancel", {}),
        ("/v1/generation/text-to-image", {"json": body("evil v1")}),
        ("/v1/images/generations", {"json": {"prompt": "evil openai"}}),
    ]:
        reply = requests.post(site.url + path, headers=headers, timeout=30, **kwargs)
        assert reply.status_code == 403, (path, reply.text)
    assert requests.delete(site.url + "/tasks/0123456789abcdef", headers=headers, timeout=10).status_code == 403
    assert queued_with(site, "evil v1") == 0 and queued_with(site, "evil openai") == 0


@pytest.mark.parametrize("origin", ["null", "http://localhost:1234"])
def test_local_pages_may_queue(site, origin: str) -> None:
    prompt = f"from {origin}"
    reply = requests.post(site.url + GENERATE, json=body(prompt), headers={"Origin": origin}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == origin
    wait_for(site.url, reply.json()["task_id"])
    assert queued_with(site, prompt) == 1


def test_same_origin_is_the_host_the_page_was_loaded_from(site) -> None:
    # The page served under an allowed name posts back to it: same origin, whatever the CORS list says.
    own = f"rebind.example:{site.port}"
    control = site.url + "/v1/engine/control?action=skip"
    same = requests.post(control, headers={"Host": own, "Origin": f"http://{own}"}, timeout=10)
    assert same.status_code == 200, same.text
    other = requests.post(control, headers={"Origin": f"http://{own}"}, timeout=10)  # sent to 127.0.0.1
    assert other.status_code == 403


def test_a_cross_site_form_or_image_without_origin_is_refused(site) -> None:
    reply = requests.post(site.url + GENERATE, json=body("no origin, cross-site"), headers=CROSS_SITE_IMG, timeout=30)
    assert reply.status_code == 403 and "Sec-Fetch-Site: cross-site" in reply.json()["detail"]
    assert queued_with(site, "no origin, cross-site") == 0


def test_clients_outside_a_browser_pass(site) -> None:
    # curl and Python send neither Origin nor Sec-Fetch-Site; a browser's own address bar sends `none`.
    for headers in ({}, {"Sec-Fetch-Site": "none"}, {"Sec-Fetch-Site": "same-origin"}):
        reply = requests.post(site.url + "/v1/engine/control?action=skip", headers=headers, timeout=10)
        assert reply.status_code == 200, reply.text
    reply = requests.post(site.url + GENERATE, json=body("curl-like"), timeout=30)
    assert reply.status_code == 200
    wait_for(site.url, reply.json()["task_id"])


def test_reads_stay_open_to_any_page(site) -> None:
    # Reading is guarded by CORS (no grant, so the page cannot see it), not refused.
    reply = requests.get(site.url + "/tasks", headers={"Origin": EVIL, **CROSS_SITE_IMG}, timeout=10)
    assert reply.status_code == 200 and "Access-Control-Allow-Origin" not in reply.headers


def test_a_cross_site_get_cannot_delete_history_or_files(site) -> None:
    before = datetime.now() - timedelta(seconds=1)
    done = wait_for(site.url, requests.post(site.url + GENERATE, json=body("keep me"), timeout=30).json()["task_id"])
    output = site.data_dir / done["result"][0].split("/", 3)[3]
    window = {
        "action": "delete",
        "start_at": before.isoformat(timespec="milliseconds"),
        "end_at": (datetime.now() + timedelta(seconds=1)).isoformat(timespec="milliseconds"),
    }
    for headers in (CROSS_SITE_IMG, {"Origin": EVIL}):  # an <img>, a fetch
        refused = requests.get(site.url + "/tasks", params=window, headers=headers, timeout=10)
        assert refused.status_code == 403, refused.text
    older = {"delete": "true", "job_id": done["task_id"]}  # the older wire's delete-by-GET
    history = site.url + "/v1/generation/job-history"
    assert requests.get(history, params=older, headers=CROSS_SITE_IMG, timeout=10).status_code == 403
    assert output.exists() and requests.get(f"{site.url}/tasks/{done['task_id']}", timeout=10).status_code == 200
    # The same request from curl does delete: the refusal above is what kept the task.
    deleted = requests.get(site.url + "/tasks", params=window, timeout=10)
    assert deleted.status_code == 200 and done["task_id"] in [r["task_id"] for r in deleted.json()["history"]]
    assert not output.exists()


# -- body types ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "path", [GENERATE, "/v1/generation/text-to-image", "/v2/generation/text-to-image-with-ip", "/v1/images/generations"]
)
def test_json_routes_refuse_text_and_form_bodies(site, path: str) -> None:
    prompt = f"simple body {path}"
    raw = json.dumps({**body(prompt), "image_prompts": []})
    sent = [
        {"data": raw, "headers": {"Content-Type": "text/plain;charset=UTF-8"}},  # a form's enctype=text/plain
        {"data": {"prompt": prompt, "async_process": "true"}},  # application/x-www-form-urlencoded
        {"data": {"prompt": prompt}, "files": {"image": png()}},  # multipart/form-data
    ]
    for kwargs in sent:
        reply = requests.post(site.url + path, timeout=30, **kwargs)
        assert reply.status_code == 415, reply.text
        message = reply.json().get("detail") or reply.json()["error"]["message"]
        assert "application/json" in message
    assert queued_with(site, prompt) == 0


def test_json_without_a_content_type_is_accepted(site) -> None:
    # examples_v1/v2 post `data=json.dumps(params)`: no Content-Type at all.
    for path, expect in [(GENERATE, "task_id"), ("/v1/generation/text-to-image", "job_id")]:
        reply = requests.post(site.url + path, data=json.dumps(body(f"no type {path}")), timeout=30)
        assert reply.status_code == 200 and "content-type" not in reply.request.headers, reply.text
        answer = reply.json()
        wait_for(site.url, answer[expect] if isinstance(answer, dict) else answer[0][expect])
    charset = requests.post(
        site.url + GENERATE,
        data=json.dumps(body("charset")).encode(),
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=30,
    )
    assert charset.status_code == 200
    wait_for(site.url, charset.json()["task_id"])


def test_the_older_multipart_routes_still_take_forms(site) -> None:
    fields = {"uov_method": "Upscale (Fast 2x)", "async_process": "True", "prompt": "multipart", "image_seed": "5"}
    form = requests.post(
        site.url + "/v1/generation/image-upscale-vary", data=fields, files={"input_image": png()}, timeout=60
    )
    assert form.status_code == 200, form.text
    wait_for(site.url, form.json()["job_id"], timeout=120)
    text = requests.post(
        site.url + "/v1/generation/image-upscale-vary", data="{}", headers={"Content-Type": "text/plain"}, timeout=30
    )
    assert text.status_code == 415 and "multipart/form-data" in text.json()["detail"]
    foreign = requests.post(  # a cross-site <form enctype=multipart/form-data>
        site.url + "/v1/generation/image-upscale-vary",
        data={**fields, "prompt": "multipart from evil"},
        files={"input_image": png()},
        headers={"Origin": EVIL},
        timeout=30,
    )
    assert foreign.status_code == 403 and queued_with(site, "multipart from evil") == 0


# -- Host (DNS rebinding) ---------------------------------------------------------------------------
def test_a_foreign_host_is_refused_on_every_route(site) -> None:
    for path in ("/tasks", "/", "/v1/engines/styles", "/ping"):
        reply = requests.get(site.url + path, headers={"Host": f"evil.example:{site.port}"}, timeout=10)
        assert reply.status_code == 421, (path, reply.text)
        assert "--allowed-hosts" in reply.json()["detail"] and "evil.example" in reply.json()["detail"]
    posted = requests.post(
        site.url + GENERATE, json=body("rebound"), headers={"Host": f"evil.example:{site.port}"}, timeout=30
    )
    assert posted.status_code == 421 and queued_with(site, "rebound") == 0


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "rebind.example", "LOCALHOST"])
def test_local_names_and_allowed_hosts_are_served(site, host: str) -> None:
    reply = requests.get(site.url + "/tasks", headers={"Host": f"{host}:{site.port}"}, timeout=10)
    assert reply.status_code == 200, reply.text


# -- with an API key ----------------------------------------------------------------------------------
def test_with_a_key_the_key_replaces_the_cross_site_rule(keyed) -> None:
    auth = {"X-API-KEY": KEY}
    foreign = {"Origin": EVIL, **CROSS_SITE_IMG}
    without = requests.post(keyed.url + GENERATE, json=body("keyless"), headers=foreign, timeout=30)
    assert without.status_code == 401 and "X-API-KEY" in without.json()["detail"]
    reply = requests.post(keyed.url + GENERATE, json=body("keyed"), headers={**foreign, **auth}, timeout=30)
    assert reply.status_code == 200, reply.text
    assert reply.headers["Access-Control-Allow-Origin"] == "*"
    wait_for(keyed.url, reply.json()["task_id"], headers=auth)
    assert queued_with(keyed, "keyed", auth) == 1 and queued_with(keyed, "keyless", auth) == 0


def test_with_a_key_a_get_that_deletes_needs_it(keyed) -> None:
    window = {"action": "delete", "start_at": "2000-01-01T00:00:00", "end_at": "2000-01-02T00:00:00"}
    assert requests.get(keyed.url + "/tasks", params=window, timeout=10).status_code == 401
    older = {"delete": "true", "job_id": "0123456789abcdef"}
    assert requests.get(keyed.url + "/v1/generation/job-history", params=older, timeout=10).status_code == 401
    keyed_reply = requests.get(keyed.url + "/tasks", params=window, headers={"X-API-KEY": KEY}, timeout=10)
    assert keyed_reply.status_code == 200 and keyed_reply.json()["history"] == []


def test_with_a_key_any_host_is_served_and_bodies_are_still_typed(keyed) -> None:
    auth = {"X-API-KEY": KEY}
    host = requests.get(keyed.url + "/tasks", headers={**auth, "Host": "gpu-box.lan"}, timeout=10)
    assert host.status_code == 200, host.text
    text = requests.post(
        keyed.url + GENERATE, data=json.dumps(body("text")), headers={**auth, "Content-Type": "text/plain"}, timeout=30
    )
    assert text.status_code == 415
