"""Per-image time of one task's images denoised one after another (max_batch 1) or as rows of one batch.

    .venv/bin/python bench/batching.py [--device cpu|cuda] [--images 4] [--size 128] [--steps 30]
                                       [--max-batch 1,4] [--repeat 2] [--threads 0]
                                       [--task text|vary|upscale|inpaint]

On the tiny demo SDXL (engine/demo): a plan of `--images` images at `--size`² and `--steps` steps,
Fooocus's defaults (dpmpp_2m_sde_gpu karras, guidance 4, sharpness, ADM), through `Engine.generate`
(so encoding, denoising and the VAE decode all count). `--task vary` varies a 128x96 input (Vary
(Subtle): Fooocus diffuses it at ~1024 px, whatever `--size`); `--task upscale` runs Upscale (1.5x)
of a 160x128 input, whose tiled pass has two 1024-px tiles; `--task inpaint` inpaints a 30x24 box
of a 160x128 input with Fooocus's inpaint engine (v2.6, the demo's tiny patch), its crop at ~1024
px. Best of `--repeat` runs after one warm-up, per max_batch. Prints one JSON object: seconds per
image per max_batch, the speed-up, and the max abs pixel difference of the batched images against
the max_batch 1 ones.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fooocus_es.engine.demo.checkpoint import ensure_demo_checkpoint  # noqa: E402
from fooocus_es.engine.diffusion.pipeline import Engine  # noqa: E402
from fooocus_es.engine.models.store import ModelStore  # noqa: E402
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT  # noqa: E402
from fooocus_es.engine.planning.plan_types import (  # noqa: E402
    GenerationPlan,
    ImageTask,
    InpaintTask,
    UpscaleTask,
    VaryTask,
)

# (width, height) of the task's input image
INPUT_SIZES = {"vary": (128, 96), "upscale": (160, 128), "inpaint": (160, 128)}


def _image_task(task: str, data_dir: Path) -> ImageTask | None:
    """The task's input written under data_dir/inputs, and its image task (None: text to image)."""
    if task == "text":
        return None
    width, height = INPUT_SIZES[task]
    (data_dir / "inputs").mkdir(parents=True, exist_ok=True)
    pixels = (np.random.default_rng(3).random((height, width, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(data_dir / "inputs" / "photo.png")
    if task == "vary":
        return VaryTask(image="inputs/photo.png", denoise=0.5)
    if task == "inpaint":
        mask = np.zeros((height, width), np.uint8)
        mask[50:74, 60:90] = 255
        Image.fromarray(mask).save(data_dir / "inputs" / "mask.png")
        return InpaintTask(image="inputs/photo.png", mask="inputs/mask.png", inpaint_engine="v2.6")
    return UpscaleTask(image="inputs/photo.png", denoise=0.382, method="Upscale (1.5x)", upscale_factor=1.5)


class _Quiet:
    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        pass

    def poll_control(self) -> None:
        return None


def _plan(images: int, size: int, steps: int, image_task: ImageTask | None = None) -> GenerationPlan:
    return GenerationPlan(
        task_id="bench", prompt="a photo of a cat", negative_prompt="blurry", width=size, height=size,
        steps=steps, guidance_scale=4.0, seeds=tuple(range(1, images + 1)), base_model=DEMO_CHECKPOINT,
        disable_preview=True,  # previews are the runner's cost, not the denoiser's
        image_task=image_task,
    )  # fmt: skip


def _run(engine: Engine, plan: GenerationPlan) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    images, status = engine.generate(plan, _Quiet())
    if engine.store.device.startswith("cuda"):
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    assert status == "finished" and len(images) == len(plan.seeds)
    return elapsed, [np.asarray(image.image, dtype=np.int16) for image in images]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--max-batch", default="1,4", help="max_batch values, comma-separated; first: baseline")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--task", choices=("text", "vary", "upscale", "inpaint"), default="text")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [int(part) for part in args.max_batch.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        models = Path(tmp) / "models"
        ensure_demo_checkpoint(models / "checkpoints")
        store = ModelStore(models, device=args.device, cache_bytes=10**9)
        image_task = _image_task(args.task, Path(tmp))
        plan = _plan(args.images, args.size, args.steps, image_task)
        per_image: dict[str, float] = {}
        pixels: dict[int, list[np.ndarray]] = {}
        for max_batch in batches:
            engine = Engine(store, Path(tmp), max_batch=max_batch)
            _run(engine, _plan(args.images, args.size, 2, image_task))  # warm-up: load, first calls
            best = float("inf")
            for _ in range(args.repeat):
                elapsed, pixels[max_batch] = _run(engine, plan)
                best = min(best, elapsed)
            per_image[str(max_batch)] = round(best / args.images, 4)
    baseline = batches[0]
    result = {
        "bench": "batching", "task": args.task, "device": args.device, "torch_threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "images": args.images, "size": args.size,
        "steps": args.steps, "seconds_per_image": per_image,
        "speedup": {key: round(per_image[str(baseline)] / value, 3) for key, value in per_image.items()},
        "max_abs_pixel_diff_vs_baseline": {
            str(b): max(int(np.abs(x - y).max()) for x, y in zip(pixels[b], pixels[baseline], strict=True))
            for b in batches
        },
    }  # fmt: skip
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
