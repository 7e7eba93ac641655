"""bench/gpu.py on the CPU: the demo architecture, tiny shapes, concurrency 1 and 2 (in-process)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "gpu.py"


def _bench_module():
    spec = importlib.util.spec_from_file_location("bench_gpu", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gpu"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_gpu_bench_runs_on_the_cpu_and_writes_every_row(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    result = _bench_module().main(["--tiny", "--steps", "2", "--size", "64", "--concurrency", "1,2", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(result))
    assert written["architecture"] == "tiny" and written["size"] == 64 and written["max_batch"] == 2
    rows = {(row["mode"], row["system"], row["concurrency"]): row for row in written["rows"]}
    expected = {
        (mode, system, concurrency)
        for mode in ("speed", "lightning")
        for system, concurrency in (
            ("stock", 1), ("engine", 1), ("stock-sequential", 2), ("stock-batch", 2), ("engine", 2)
        )
    }  # fmt: skip
    assert set(rows) == expected and len(written["rows"]) == len(expected)
    for key, row in rows.items():
        assert row["images"] == key[2], key
        for field in ("seconds", "latency_s", "images_per_min", "peak_memory_mib"):
            assert row[field] > 0, (key, field)
