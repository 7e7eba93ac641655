"""Time and peak memory of the tiled super-resolution pass (engine/upscalers.upscale).

    .venv/bin/python bench/upscale_sr.py [--size 1024] [--tile 512] [--overlap 32] [--device cpu|cuda]
                                         [--model PATH]

Upscales a size x size RGB image with the tiny demo 4x ESRGAN (or --model, e.g. the real
fooocus_upscaler_s409985e5.bin) and prints one JSON object: seconds, tiles, output size, and
memory. `rss_growth_mib` is peak RSS during the run minus RSS just before it (an upper bound: the
peak counter is process-wide); `numpy_peak_mib` is tracemalloc's peak of numpy buffers.
On CUDA `cuda_peak_mib` is torch's peak allocated memory.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fooocus_es.engine.demo.upscaler import write_demo_upscaler  # noqa: E402
from fooocus_es.engine.models.upscalers import load_upscaler, upscale  # noqa: E402

MIB = 1024 * 1024


def current_rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / MIB


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def test_image(size: int) -> Image.Image:
    """A smooth gradient with some noise: deterministic, and not trivially compressible."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    rgb = np.stack([xx, yy, (xx + yy) / 2], axis=-1) * 255
    rgb += np.random.default_rng(0).normal(0, 8, rgb.shape)
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.model) if args.model else write_demo_upscaler(Path(tmp) / "demo.safetensors")
        dtype = torch.float16 if device.type == "cuda" else torch.float32
        model = load_upscaler(path, device, dtype)
    image = test_image(args.size)
    tiles: list[int] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_mib()
    tracemalloc.start()
    start = time.perf_counter()
    out = upscale(model, image, tile=args.tile, overlap=args.overlap, on_tile=lambda done, total: tiles.append(total))
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    numpy_peak = tracemalloc.get_traced_memory()[1] / MIB
    tracemalloc.stop()
    result = {
        "bench": "upscale_sr",
        "model": model.name,
        "architecture": model.architecture,
        "scale": model.scale,
        "device": str(device),
        "dtype": str(model.dtype),
        "input": [args.size, args.size],
        "output": list(out.size),
        "tile": args.tile,
        "overlap": args.overlap,
        "tiles": tiles[-1] if tiles else 0,
        "seconds": round(seconds, 3),
        "output_mpix_per_s": round(out.size[0] * out.size[1] / 1e6 / seconds, 3),
        "rss_before_mib": round(rss_before, 1),
        "rss_growth_mib": round(peak_rss_mib() - rss_before, 1),
        "numpy_peak_mib": round(numpy_peak, 1),
        "output_image_mib": round(out.size[0] * out.size[1] * 4 / MIB, 1),  # PIL stores RGB as 4 bytes/pixel
        "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(),
    }
    if device.type == "cuda":
        result["cuda_peak_mib"] = round(torch.cuda.max_memory_allocated() / MIB, 1)
        result["gpu"] = torch.cuda.get_device_name(device)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="an SR model file (default: the tiny demo ESRGAN)")
    print(json.dumps(run(parser.parse_args()), indent=2))


if __name__ == "__main__":
    main()
