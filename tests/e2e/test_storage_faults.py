"""Storage faults, the atomic queue bound and the decode budget, against real server processes.

One server (data dir on a small tmpfs when running as root) serves the burst, the decode budget, the
locked database and the full disk, in that order; an unwritable inputs/ at start-up needs its own.
Mounting needs root (CI runs as root): those tests skip with a message otherwise.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import requests
from conftest import ServerProcess
from e2e_helpers import FAST, GENERATE, submit, wait_for
from PIL import Image

ROOT_ONLY = "needs root to mount a tmpfs / a read-only bind mount (CI runs as root)"
SLOW = {"overwrite_step": 200, "aspect_ratios_selection": "128*128"}  # seconds of work on the demo model
QUEUE_SIZE = 20
BUSY_TIMEOUT_S = 1.0


def is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A small tmpfs as root (so the full-disk test can fill it), else a plain folder."""
    folder = tmp_path_factory.mktemp("faults-data")
    if not is_root():
        yield folder
        return
    mount("-t", "tmpfs", "-o", "size=8m", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)


@pytest.fixture(scope="module")
def server(data_dir: Path, demo_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    process = ServerProcess(
        data_dir, demo_models, "--queue-size", str(QUEUE_SIZE), "--db-busy-timeout", str(BUSY_TIMEOUT_S),
        "--max-request-megapixels", "1",
    )  # fmt: skip
    process.log_path = tmp_path_factory.mktemp("faults-log") / "server.log"  # not on the disk we fill
    process.start()
    yield process
    process.stop()


def post(base: str, body: dict[str, Any]) -> requests.Response:
    return requests.post(base + GENERATE, json={**FAST, "async_process": True, **body}, timeout=60)


def health(base: str) -> dict[str, Any]:
    return requests.get(base + "/health", timeout=10).json()


def until(predicate: Any, timeout: float = 30, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def drain(base: str) -> None:
    """Cancel what is pending and stop what runs, then wait until nothing is live."""
    for record in requests.get(base + "/tasks", params={"query": "pending"}, timeout=10).json()["pending"]:
        requests.post(f"{base}/tasks/{record['task_id']}/cancel", timeout=10)
    requests.post(base + "/tasks/control", params={"action": "stop"}, timeout=10)
    until(lambda: not health(base)["running"] and health(base)["queue_depth"] == 0, 60, "an idle server")


def png_data_uri(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 30)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_concurrent_submits_over_the_bound_accept_exactly_the_free_places(server: ServerProcess) -> None:
    running = submit(server.url, {"prompt": "keeps the runner busy", **SLOW})
    wait_for(server.url, running["task_id"], until="running")
    count = 50
    barrier = threading.Barrier(count)
    answers: list[requests.Response] = []

    def one() -> None:
        with requests.Session() as session:
            barrier.wait()
            answers.append(session.post(server.url + GENERATE, json={**FAST, "async_process": True}, timeout=60))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses.count(200) == QUEUE_SIZE and statuses.count(429) == count - QUEUE_SIZE, statuses
    refused = [answer for answer in answers if answer.status_code == 429]
    assert all(answer.headers.get("Retry-After") for answer in refused)
    assert "queue is full" in refused[0].json()["detail"]
    assert health(server.url)["queue_depth"] == QUEUE_SIZE
    drain(server.url)


def test_a_request_over_the_pixel_budget_is_a_413_naming_the_field(server: ServerProcess) -> None:
    image = png_data_uri(800, 800)  # 0.64 MP each; the server allows 1 MP per request
    response = post(server.url, {"uov_input_image": image, "inpaint_input_image": image})
    assert response.status_code == 413, response.text
    body = response.json()
    assert body["field"] == "inpaint_input_image" and "1000000 pixels per request" in body["detail"]
    assert post(server.url, {"uov_input_image": image}).status_code == 200  # one image fits
    drain(server.url)


def test_a_database_locked_past_the_busy_timeout_answers_503_and_fails_the_running_task(
    server: ServerProcess, data_dir: Path
) -> None:
    running = submit(server.url, {"prompt": "caught by the lock", **SLOW})
    wait_for(server.url, running["task_id"], until="running")
    locker = sqlite3.connect(data_dir / "outputs" / "db.sqlite3", isolation_level=None, timeout=30)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        first = post(server.url, {"prompt": "refused"})  # waits the busy timeout, then says why
        assert first.status_code == 503, first.text
        assert first.headers.get("Retry-After") and "locked" in first.json()["detail"]
        started = time.monotonic()
        again = post(server.url, {"prompt": "refused at once"})
        assert again.status_code == 503 and time.monotonic() - started < BUSY_TIMEOUT_S
        state = health(server.url)
        assert state["ready"] is False and any("locked" in reason for reason in state["not_ready"]), state
        # Long enough for the runner's quick retries of a progress append to run out: it gives the
        # task up (a shorter lock is retried through and the task finishes).
        time.sleep(10 * BUSY_TIMEOUT_S)
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    record = wait_for(server.url, running["task_id"], timeout=60)
    assert record["task_status"] == "failed" and "locked" in record["error"]["message"], record
    until(lambda: health(server.url)["ready"], 15, "/health ready again")
    after = submit(server.url, {"prompt": "after the lock"})
    assert wait_for(server.url, after["task_id"])["task_status"] == "finished"


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    chunk = b"\0" * (256 * 1024)
    with contextlib.suppress(OSError), open(filler, "wb") as handle:
        while True:
            handle.write(chunk)
            handle.flush()
    return filler


@pytest.mark.skipif(not is_root(), reason=ROOT_ONLY)
def test_a_full_disk_answers_507_and_the_server_recovers_when_space_is_freed(
    server: ServerProcess, data_dir: Path
) -> None:
    def images() -> set[str]:
        return {str(path.relative_to(data_dir)) for path in (data_dir / "outputs").rglob("*.png")}

    before = images()
    filler = fill(data_dir)
    try:
        first = post(server.url, {"prompt": "on a full disk"})
        if first.status_code == 200:  # the log still had room: the task's image cannot be saved
            task_id = first.json()["task_id"]
            until(lambda: health(server.url)["storage"], 60, "the full disk reported")
            refused = post(server.url, {"prompt": "refused"})
        else:
            task_id, refused = None, first
        assert refused.status_code == 507, refused.text
        assert refused.headers.get("Retry-After") and "out of space" in refused.json()["detail"]
        state = health(server.url)
        assert state["ready"] is False and any("out of space" in reason for reason in state["not_ready"]), state
        if task_id is not None:  # full for longer than the runner's quick retries of the save
            with contextlib.suppress(AssertionError):  # (if the log is full too, it ends once space is back)
                until(lambda: requests.get(f"{server.url}/tasks/{task_id}", timeout=10).json()["finish_mills"], 5)
    finally:
        filler.unlink()
    until(lambda: health(server.url)["ready"], 15, "/health ready once space is freed")
    assert health(server.url)["not_ready"] == []
    if task_id is not None:
        record = wait_for(server.url, task_id, timeout=60)
        assert record["task_status"] == "failed" and "storage error" in record["error"]["message"], record
    assert images() == before  # the failed save left no orphan image
    after = submit(server.url, {"prompt": "space again"})
    record = wait_for(server.url, after["task_id"])
    saved = {urlparse(url).path.lstrip("/") for url in record["result"]}
    assert record["task_status"] == "finished" and images() == before | saved


@pytest.mark.skipif(not is_root(), reason=ROOT_ONLY)
def test_an_unwritable_inputs_folder_at_start_up_is_reported_and_submits_answer_503(
    make_server: Any, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    inputs = data / "inputs"
    inputs.mkdir(parents=True)
    mount("--bind", str(inputs), str(inputs))
    try:
        mount("-o", "remount,ro,bind", str(inputs))
        server = make_server(data_dir=data).start()
        state = health(server.url)  # probed before the server took requests
        assert state["ready"] is False and any("inputs/ is not writable" in r for r in state["not_ready"]), state
        response = post(server.url, {"prompt": "nowhere to keep inputs"})
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After") and "inputs/ is not writable" in response.json()["detail"]
        server.stop()
    finally:
        subprocess.run(["umount", "-l", str(inputs)], check=False, capture_output=True)


@pytest.mark.skipif(not is_root(), reason=ROOT_ONLY)
def test_an_unwritable_outputs_folder_at_start_up_is_reported_and_submits_answer_503(
    make_server: Any, tmp_path: Path
) -> None:
    """outputs/ takes no new file (immutable, which stops root too) while the database in it still works."""
    data = tmp_path / "data"
    make_server(data_dir=data).start().stop()  # the database exists
    outputs = data / "outputs"
    holder = sqlite3.connect(outputs / "db.sqlite3")  # keeps its -wal and -shm files in place
    holder.execute("SELECT COUNT(*) FROM task_events").fetchone()
    if subprocess.run(["chattr", "+i", str(outputs)], capture_output=True).returncode != 0:
        holder.close()
        pytest.skip("chattr +i is not supported on this filesystem")
    try:
        server = make_server(data_dir=data).start()
        state = health(server.url)
        assert state["ready"] is False and any("outputs/ is not writable" in r for r in state["not_ready"]), state
        response = post(server.url, {"prompt": "nowhere to save"})
        assert response.status_code == 503, response.text
        assert response.headers.get("Retry-After") and "outputs/ is not writable" in response.json()["detail"]
        server.stop()
    finally:
        subprocess.run(["chattr", "-i", str(outputs)], check=False)
        holder.close()


def test_a_task_log_that_cannot_be_opened_stops_the_server_with_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "outputs").mkdir(parents=True)
    (data / "outputs" / "db.sqlite3").mkdir()  # a folder where the database file should be
    result = subprocess.run(
        [sys.executable, "-m", "fooocus_es", "serve", "--data-dir", str(data), "--preset", "demo", "--port", "1"],
        capture_output=True, text=True, timeout=120, env={**os.environ, "FOOOCUS_ES_DOWNLOAD_MODELS": "false"},
    )  # fmt: skip
    assert result.returncode == 2 and "cannot open the task log" in result.stderr, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
