"""The OpenAPI document matches the server: schemathesis, every check, against the shared real server.

CI's short run: few examples, and without the routes that run the engine (generation on the CPU
demo engine costs seconds a case); `nox -s fuzz` runs every route for longer. Also: a refused
request is one log line at info, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
FUZZ = ROOT / "tests" / "fuzz"
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# The routes that run the engine: generations, and the tools (which run models on the runner too).
GENERATION_ROUTES = r"^/v[12]/(engine/generate|generation/(text|image)|images/|tools/)"


def test_schemathesis_finds_nothing_outside_the_generation_routes(server) -> None:
    command = [
        str(SCHEMATHESIS), "--config-file", str(FUZZ / "schemathesis.toml"), "run", f"{server.url}/schema/openapi.json",
        "--checks", "all", "--max-examples", "10", "--workers", "1", "--seed", "20261202",
        "--request-timeout", "30", "--exclude-path-regex", GENERATION_ROUTES, "--no-color",
    ]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=180, cwd=ROOT,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(FUZZ / "cheap_generation.py")},
    )  # fmt: skip
    output = done.stdout + done.stderr
    counted = re.search(r"(\d+) generated, (\d+) passed", output)
    assert done.returncode == 0 and counted, output[-6000:]
    assert int(counted.group(1)) == int(counted.group(2)) > 200  # every case passed every check
    assert "Tested: 2" in output  # the ~25 operations that run no model were all selected
    print(f"schemathesis: {counted.group(1)} cases, 0 failures, {time.monotonic() - started:.1f} s")


def _log_lines_since(server, offset: int, timeout: float = 5.0) -> list[str]:
    """The server's log lines after `offset`, once the response line of the request is there."""
    deadline = time.monotonic() + timeout
    while True:
        lines = server.log_path.read_bytes()[offset:].decode(errors="replace").splitlines()
        if any('"HTTP Response"' in line for line in lines) or time.monotonic() > deadline:
            time.sleep(0.2)  # anything the request logs after its response line
            return server.log_path.read_bytes()[offset:].decode(errors="replace").splitlines()
        time.sleep(0.1)


def test_a_refused_request_is_one_info_line_without_a_traceback(server) -> None:
    generate = f"{server.url}/v1/engine/generate"
    cases = [  # a domain error without a status (ParamError), a validation error, malformed bytes, a 404
        (lambda: requests.post(generate, json={"preset": "no-such-preset"}, timeout=10), 400, "preset"),
        (lambda: requests.post(generate, json={"image_number": 99}, timeout=10), 400, "image_number"),
        (lambda: requests.post(generate, data=b"[" * 5000, timeout=10), 400, "nested deeper than 64"),
        (lambda: requests.get(f"{server.url}/tasks/no-such-task", timeout=10), 404, "no-such-task"),
    ]
    for send, status, detail in cases:
        offset = server.log_path.stat().st_size
        assert send().status_code == status
        lines = _log_lines_since(server, offset)
        refused = [json.loads(line) for line in lines if "request.refused" in line]
        assert len(refused) == 1, lines
        assert refused[0]["level"] == "info" and refused[0]["status_code"] == status
        assert detail in refused[0]["detail"]
        assert not any("Traceback" in line or "Uncaught exception" in line for line in lines), lines
