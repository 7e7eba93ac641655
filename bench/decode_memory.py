"""Server RSS under image-heavy submits: 8 image fields of one ~850 KB request (4096x4096 PNGs that
compress well), then 4 such requests at once; peak growth (VmHWM) over the RSS before them.

    .venv/bin/python bench/decode_memory.py [--max-request-megapixels 200]

Linux only (/proc). The runner is kept busy with one slow task, so what grows is admission's decoding.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import ServerProcess  # noqa: E402  - the tests' real-server harness

from fooocus_es.engine.demo.checkpoint import ensure_demo_checkpoint  # noqa: E402

FAST = {"performance_selection": "Lightning", "aspect_ratios_selection": "64*64"}


def image_b64(seed: int, side: int = 4096) -> str:
    tiles = np.random.default_rng(seed).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(tiles).resize((side, side), Image.NEAREST).save(buffer, format="PNG", compress_level=9)
    return base64.b64encode(buffer.getvalue()).decode()


def eight_images(seed: int) -> bytes:
    images = [image_b64(seed * 10 + i) for i in range(8)]
    body: dict[str, Any] = {
        **FAST, "prompt": "decode memory", "async_process": True, "uov_input_image": images[0],
        "inpaint_input_image": images[1], "inpaint_mask_image_upload": images[2], "enhance_input_image": images[3],
        "controlnet_image": [{"cn_img": image, "cn_type": "ImagePrompt"} for image in images[4:]],
    }  # fmt: skip
    return json.dumps(body).encode()


def memory_mb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":")
            fields[name] = int(value.split()[0]) // 1024
    return fields


def measure(tmp: Path, models: Path, concurrent: int, server_args: list[str]) -> dict[str, Any]:
    server = ServerProcess(tmp / f"data-{concurrent}", models, *server_args).start()
    url = server.url + "/v1/engine/generate/"
    try:
        requests.post(url, json={**FAST, "prompt": "warm-up"}, headers={"Accept": "application/json"}, timeout=120)
        busy = {"prompt": "busy", "overwrite_step": 400, "aspect_ratios_selection": "128*128", "async_process": True}
        requests.post(url, json=busy, timeout=60)
        bodies = [eight_images(i) for i in range(concurrent)]
        time.sleep(1)
        assert server.process is not None
        before = memory_mb(server.process.pid)["VmRSS"]
        codes: list[int] = []

        def one(body: bytes) -> None:
            response = requests.post(url, data=body, headers={"Content-Type": "application/json"}, timeout=300)
            codes.append(response.status_code)

        threads = [threading.Thread(target=one, args=(body,)) for body in bodies]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        after = memory_mb(server.process.pid)
    finally:
        server.stop()
    return {
        "concurrent_requests": concurrent, "request_kb": len(bodies[0]) // 1024, "statuses": sorted(codes),
        "rss_before_mb": before, "peak_growth_mb": after["VmHWM"] - before, "growth_after_mb": after["VmRSS"] - before,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-request-megapixels", help="the server's per-request budget (default: its own)")
    args = parser.parse_args()
    server_args = ["--max-request-megapixels", args.max_request_megapixels] if args.max_request_megapixels else []
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        models = tmp / "models"
        ensure_demo_checkpoint(models / "checkpoints")
        results = [measure(tmp, models, concurrent, server_args) for concurrent in (1, 4)]
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
