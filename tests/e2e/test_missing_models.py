"""A preset whose model is missing: the server still starts, /health and the task say what to do."""

from __future__ import annotations

import json
import time

import requests
from conftest import free_port
from e2e_helpers import submit, wait_for


def test_missing_preset_model_is_named_in_health_and_in_the_failed_task(make_server, tmp_path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "presets").mkdir(parents=True)
    closed = f"http://127.0.0.1:{free_port()}/models/absent.safetensors"  # nothing listens: the download fails
    preset = {"default_model": "absent.safetensors", "default_aspect_ratio": "64*64", "default_styles": [],
              "checkpoint_downloads": {"absent.safetensors": closed}}  # fmt: skip
    (data_dir / "presets" / "offline.json").write_text(json.dumps(preset))
    server = make_server("--preset", "offline", data_dir=data_dir, env={"FOOOCUS_ES_DOWNLOAD_MODELS": "true"}).start()

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        health = requests.get(server.url + "/health", timeout=10).json()
        if "absent.safetensors" in health["missing_models"] and not health["downloading"]:
            break
        time.sleep(0.2)
    message = health["missing_models"]["absent.safetensors"]
    assert "absent.safetensors" in message and str(data_dir / "models" / "checkpoints") in message and closed in message
    assert health["ready"] is False

    task = submit(server.url, {"prompt": "needs the model", "performance_selection": "Lightning"})
    failed = wait_for(server.url, task["task_id"])
    assert failed["task_status"] == "failed" and failed["error"]["type"] == "ModelMissing"
    assert "absent.safetensors" in failed["error"]["message"] and "checkpoints" in failed["error"]["message"]
    assert "model.download_failed" in server.logs()


def test_a_missing_preset_file_is_downloaded_at_start_with_progress_in_the_log(make_server, tmp_path) -> None:
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    served = tmp_path / "served"
    served.mkdir()
    (served / "extra-lora.safetensors").write_bytes(b"\0" * 300_000)

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(served)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        data_dir = tmp_path / "data"
        (data_dir / "presets").mkdir(parents=True)
        url = f"http://127.0.0.1:{httpd.server_address[1]}/extra-lora.safetensors"
        preset = {"default_model": "fooocus_es_demo.safetensors", "lora_downloads": {"dl-test-lora.safetensors": url}}
        (data_dir / "presets" / "fetching.json").write_text(json.dumps(preset))
        server = make_server("--preset", "fetching", data_dir=data_dir, env={"FOOOCUS_ES_DOWNLOAD_MODELS": "true"})
        server.start()
        target = data_dir / "models" / "loras" / "dl-test-lora.safetensors"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "model.downloaded" not in server.logs():
            time.sleep(0.2)
        try:
            assert target.read_bytes() == b"\0" * 300_000
            assert "model.download_progress" in server.logs() and "model.downloaded" in server.logs()
            assert requests.get(server.url + "/health", timeout=10).json()["missing_models"] == {}
        finally:
            target.unlink(missing_ok=True)  # models/ is shared by the test session
    finally:
        httpd.shutdown()
