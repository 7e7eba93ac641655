"""What image prompts cost per UNet call, per type, beside the plain call; and what they cost once per task.

    .venv/bin/python bench/image_prompts.py [--device cpu|cuda] [--repeat 20] [--full]

On the demo model (tiny UNet, the demo IP-Adapter / CLIP / Control-LoRA files generated under a
temporary models/), for 64x64 and 128x128 latents (512 and 1024 px), CFG rows [uncond; cond]:
- per call: the plain GuidedUNet call, then with one ImagePrompt, FaceSwap, PyraCanny, CPDS, and all
  four at once (median ms of --repeat calls, after 2 warm-up calls; the hint is made on the first);
- once per task: building the hooks (files loaded and cached on the first task, CLIP + Resampler
  encoding every time) and preprocessing the control hint at the working size.
`--full` adds the full-size SDXL UNet (random weights, engine/models/sdxl/base) at 64x64 latents, plain
and with one ControlNet built from it (`ControlNetModel.from_unet`): the cost that dominates a real
PyraCanny / CPDS task. On a CPU that takes minutes and ~20 GB. Writes bench/image-prompts-results.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fooocus_es.engine.demo.checkpoint import build_demo_models  # noqa: E402
from fooocus_es.engine.diffusion import image_prompts  # noqa: E402
from fooocus_es.engine.diffusion.control_residuals import ActiveControl, control_residuals  # noqa: E402
from fooocus_es.engine.diffusion.guided_unet import GuidanceSettings, GuidedUNet  # noqa: E402
from fooocus_es.engine.diffusion.image_prompt_models import ImagePromptModels  # noqa: E402
from fooocus_es.engine.imaging import cn_preprocess  # noqa: E402
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT  # noqa: E402
from fooocus_es.engine.planning.plan_types import GenerationPlan, ImagePrompt  # noqa: E402

SDXL_UNET_CONFIG = ROOT / "src" / "fooocus_es" / "engine" / "models" / "sdxl" / "base" / "unet"
RESULTS = ROOT / "bench" / "image-prompts-results.json"
CASES: dict[str, tuple[str, ...]] = {
    "plain": (),
    "ImagePrompt": ("ImagePrompt",),
    "FaceSwap": ("FaceSwap",),
    "PyraCanny": ("PyraCanny",),
    "CPDS": ("CPDS",),
    "all four": ("ImagePrompt", "FaceSwap", "PyraCanny", "CPDS"),
}


def timed(fn: Callable[[], Any], sync: Callable[[], None], repeat: int, warmup: int = 2) -> float:
    """Median milliseconds per call."""
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 3)


def unet_inputs(latent: int, cross: int, pooled: int, device: str, dtype: torch.dtype) -> dict[str, Any]:
    generator = torch.Generator().manual_seed(0)
    rows = 2
    px = latent * 8
    return {
        "sample": torch.randn(rows, 4, latent, latent, generator=generator).to(device, dtype),
        "timestep": torch.tensor(700, device=device),
        "encoder_hidden_states": torch.randn(rows, 77, cross, generator=generator).to(device, dtype),
        "added_cond_kwargs": {
            "text_embeds": torch.randn(rows, pooled, generator=generator).to(device, dtype),
            "time_ids": torch.tensor([[px, px, 0, 0, px, px]] * rows, device=device, dtype=dtype),
        },
    }


def write_input(data_dir: Path) -> None:
    (data_dir / "inputs").mkdir(parents=True)
    rng = np.random.default_rng(1)
    image = (rng.random((96, 128, 1)) * np.linspace(0, 255, 128)[None, :, None]).repeat(3, axis=-1)
    Image.fromarray(image.astype(np.uint8)).save(data_dir / "inputs" / "prompt.png")


def demo_rows(args: argparse.Namespace, sync: Callable[[], None]) -> list[dict[str, Any]]:
    dtype = torch.float32
    pristine = build_demo_models()["unet"].to(args.device)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-ip-") as tmp:
        data_dir = Path(tmp)
        write_input(data_dir)
        models = ImagePromptModels(data_dir / "models", args.device, dtype, construction=threading.RLock())
        for latent in (64, 128):
            inputs = unet_inputs(latent, 80, 32, args.device, dtype)
            plain_ms = None
            for case, types in CASES.items():
                unet = copy.deepcopy(pristine)
                plan = GenerationPlan(
                    task_id="bench", prompt="p", negative_prompt="", width=latent * 8, height=latent * 8, steps=30,
                    guidance_scale=4.0, seeds=(1,), base_model=DEMO_CHECKPOINT,
                    image_prompts=tuple(ImagePrompt(cn_type=t, image="inputs/prompt.png", stop=1.0, weight=1.0)
                                        for t in types),
                )  # fmt: skip
                image_prompts.build_hooks(plan, models, unet, data_dir)  # first task: loads the files
                started = time.perf_counter()
                hooks = image_prompts.build_hooks(plan, models, unet, data_dir)
                build_ms = round((time.perf_counter() - started) * 1000, 3)
                wrapped = GuidedUNet(unet, GuidanceSettings.off(4.0), None, image_prompts=hooks)

                def step(wrapped: GuidedUNet = wrapped, inputs: dict[str, Any] = inputs) -> None:
                    with torch.inference_mode():
                        wrapped(**inputs, return_dict=False)

                ms = timed(step, sync, args.repeat)
                plain_ms = plain_ms or ms
                rows.append({"model": "demo", "latent": latent, "case": case, "ms_per_call": ms,
                             "vs_plain": round(ms / plain_ms, 3), "hooks_build_ms": build_ms})  # fmt: skip
        image = np.asarray(Image.open(data_dir / "inputs" / "prompt.png").convert("RGB"))
        for cn_type in ("PyraCanny", "CPDS"):
            for px in (512, 1024):
                ms = timed(lambda t=cn_type, p=px: cn_preprocess.control_hint(  # noqa: B023
                    t, image, p, p, canny_low=64, canny_high=128, skip=False), lambda: None, 5, 1)  # fmt: skip
                rows.append({"model": "preprocess", "latent": px // 8, "case": cn_type, "ms_per_call": ms})
    return rows


def full_rows(args: argparse.Namespace, sync: Callable[[], None]) -> list[dict[str, Any]]:
    from diffusers import ControlNetModel, UNet2DConditionModel

    dtype = torch.float16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(args.device):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_UNET_CONFIG)).to(dtype).eval()
        control = ControlNetModel.from_unet(unet).to(dtype).eval()
    latent = 64
    inputs = unet_inputs(latent, 2048, 1280, args.device, dtype)
    hint = torch.rand(1, 3, latent * 8, latent * 8)
    active = ActiveControl(model=control, hint=hint, weight=1.0)
    repeat, warmup = (10, 3) if args.device == "cuda" else (2, 0)

    def plain() -> None:
        with torch.inference_mode():
            unet(**inputs, return_dict=False)

    def controlled() -> None:
        with torch.inference_mode():
            down, mid = control_residuals([active], inputs["sample"], inputs["timestep"],
                                          inputs["encoder_hidden_states"], inputs["added_cond_kwargs"])  # fmt: skip
            unet(**inputs, down_block_additional_residuals=down, mid_block_additional_residual=mid, return_dict=False)

    plain_ms = timed(plain, sync, repeat, warmup)
    control_ms = timed(controlled, sync, repeat, warmup)
    return [
        {"model": "sdxl", "latent": latent, "case": "plain", "ms_per_call": plain_ms, "vs_plain": 1.0},
        {"model": "sdxl", "latent": latent, "case": "one ControlNet", "ms_per_call": control_ms,
         "vs_plain": round(control_ms / plain_ms, 3)},
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--full", action="store_true", help="also the full-size SDXL UNet with one ControlNet")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    rows = demo_rows(args, sync)
    if args.full:
        rows += full_rows(args, sync)
    print(f"{'model':<11} {'latent':>6} {'case':<15} {'ms/call':>9} {'x plain':>8} {'hooks ms':>9}")
    for row in rows:
        print(f"{row['model']:<11} {row['latent']:>6} {row['case']:<15} {row['ms_per_call']:>9.2f} "
              f"{row.get('vs_plain', float('nan')):>8.2f} {row.get('hooks_build_ms', float('nan')):>9.1f}")  # fmt: skip
    result = {"bench": "image_prompts", "device": args.device, "cpu": platform.processor() or platform.machine(),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows}  # fmt: skip
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
