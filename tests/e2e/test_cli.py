"""The command line, run as `python -m fooocus_es ...` subprocesses (loopback addresses only)."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from conftest import ROOT, free_port
from PIL import Image

FAST = ["--performance", "Lightning", "--aspect", "64*64"]
ENV = {**os.environ, "FOOOCUS_ES_DOWNLOAD_MODELS": "false", "FOOOCUS_ES_TORCH_THREADS": "1"}


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fooocus_es", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT, env=ENV
    )


def data_dir_with_models(tmp_path: Path, demo_models: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    (data / "models").symlink_to(demo_models, target_is_directory=True)  # as ServerProcess does
    return data


def test_generate_on_a_server_saves_the_images_and_shows_a_bar(server, tmp_path) -> None:
    out = tmp_path / "out"
    done = cli("generate", "a red fox", "--server", server.url, "-n", "2", "--seed", "5", "-o", str(out), *FAST)
    assert done.returncode == 0, done.stderr
    paths = [Path(line) for line in done.stdout.split()]
    assert len(paths) == 2 and sorted(paths) == sorted(out.iterdir())
    assert all(Image.open(path).size == (64, 64) for path in paths)
    # The stream coalesces progress to --stream-rate, so which steps show depends on timing.
    assert "image 2/2" in done.stderr and "100% Finished" in done.stderr
    assert "[" + "#" * 30 + "] 100% Finished" in done.stderr  # text mode turned the bar's \r into \n


def test_generate_reports_refused_and_failed_tasks(server, tmp_path) -> None:
    refused = cli("generate", "x", "--server", server.url, "--performance", "Turbo", "-o", str(tmp_path))
    assert refused.returncode == 2 and "performance_selection" in refused.stderr and refused.stdout == ""
    # The bundled default preset names a checkpoint the test data dir lacks: the task fails.
    failed = cli("generate", "x", "--server", server.url, "--preset", "default", "-o", str(tmp_path), *FAST)
    assert failed.returncode == 1 and "ModelMissing" in failed.stderr and "juggernautXL" in failed.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_in_process_writes_a_file(tmp_path, demo_models) -> None:
    data = data_dir_with_models(tmp_path, demo_models)
    out = tmp_path / "out"
    done = cli("generate", "in process", "--data-dir", str(data), "--preset", "demo", "--format", "jpeg",
               "-o", str(out), *FAST)  # fmt: skip
    assert done.returncode == 0, done.stderr
    (path,) = [Path(line) for line in done.stdout.split()]
    assert path.parent == out and path.suffix == ".jpeg" and Image.open(path).format == "JPEG"
    assert "Finished" in done.stderr and "HTTP Request" not in done.stderr  # server logs stay quiet
    assert list((data / "outputs").glob("*/*.jpeg"))  # the task ran over that data dir


def test_tasks_lists_the_history_as_json_and_as_a_table(server, tmp_path) -> None:
    done = cli("generate", "for the history", "--server", server.url, "-o", str(tmp_path), *FAST)
    assert done.returncode == 0, done.stderr
    listed = cli("tasks", "--history", "--json", "--server", server.url)
    assert listed.returncode == 0, listed.stderr
    history = json.loads(listed.stdout)["history"]
    assert history[0]["req_params"]["prompt"] == "for the history" and history[0]["task_status"] == "finished"
    table = cli("tasks", "--history", "--server", server.url)
    assert table.returncode == 0 and history[0]["task_id"] in table.stdout and "for the history" in table.stdout
    queue = json.loads(cli("tasks", "--json", "--server", server.url).stdout)
    assert set(queue) == {"current", "pending"}


def test_models_list_shows_the_demo_checkpoint(tmp_path, demo_models) -> None:
    data = data_dir_with_models(tmp_path, demo_models)
    listed = cli("models", "list", "--data-dir", str(data))
    assert listed.returncode == 0, listed.stderr
    line = next(line for line in listed.stdout.splitlines() if "fooocus_es_demo.safetensors" in line)
    assert line.startswith("checkpoints") and "MiB" in line
    as_json = json.loads(cli("models", "list", "--data-dir", str(data), "--json").stdout)
    assert {"kind": "checkpoints", "name": "fooocus_es_demo.safetensors"}.items() <= as_json[0].items()


def test_models_download_from_loopback_and_failure_names_file_and_url(tmp_path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    payload = os.urandom(300_000)
    (served / "tiny.safetensors").write_bytes(payload)
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    data = tmp_path / "data"
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/tiny.safetensors"
        done = cli("models", "download", "tiny.safetensors", "--url", url, "--kind", "loras", "--data-dir", str(data))
        assert done.returncode == 0, done.stderr
        target = data / "models" / "loras" / "tiny.safetensors"
        assert done.stdout.strip() == str(target) and target.read_bytes() == payload
        assert "100%" in done.stderr
    finally:
        httpd.shutdown()

    closed = f"http://127.0.0.1:{free_port()}/gone.safetensors"
    failed = cli("models", "download", "gone.safetensors", "--url", closed, "--data-dir", str(data))
    assert failed.returncode != 0
    assert "gone.safetensors" in failed.stderr and closed in failed.stderr
    assert not (data / "models" / "checkpoints" / "gone.safetensors").exists()
