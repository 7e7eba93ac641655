"""Upscale (2x) of a 1024x1024 input on the demo model, stage by stage: SR, VAE encode/decode, tiled pass.

    python bench/upscale.py [--steps 4] [--device cpu] [--out bench/upscale-results.json]

The whole task runs through Engine.generate, as the server runs it; forward hooks on the VAE's
encoder and decoder time those stages, the super-resolution pass is timed on its own beforehand,
and the peak RSS of the process is reported (Linux: VmHWM).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from fooocus_es.engine.diffusion.image_to_image import DIFFUSION_OVERLAP, DIFFUSION_TILE
from fooocus_es.engine.diffusion.pipeline import Engine
from fooocus_es.engine.imaging.tiling import tile_boxes
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.models.upscalers import upscale
from fooocus_es.engine.planning import plan as planning
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT


class StageTimer:
    """Accumulates wall time of a module's forward calls (synchronising CUDA around them)."""

    def __init__(self, module: torch.nn.Module, device: str) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._device = device
        self._start = 0.0
        module.register_forward_pre_hook(self._before)
        module.register_forward_hook(self._after)

    def _sync(self) -> None:
        if self._device.startswith("cuda"):
            torch.cuda.synchronize()

    def _before(self, *_: Any) -> None:
        self._sync()
        self._start = time.perf_counter()

    def _after(self, *_: Any) -> None:
        self._sync()
        self.seconds += time.perf_counter() - self._start
        self.calls += 1


class Steps:
    def __init__(self) -> None:
        self.count = 0

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        self.count += 1

    def poll_control(self) -> None:
        return None


def peak_rss_kib() -> int:
    """This process's peak RSS (VmHWM; ru_maxrss would include a parent's peak folded in by execve)."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=4, help="diffusion steps per tile (Speed would be 18)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("upscale-results.json"))
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "inputs").mkdir()
        rng = np.random.default_rng(0)
        Image.fromarray((rng.random((1024, 1024, 3)) * 255).astype(np.uint8)).save(root / "inputs" / "in.png")
        store = ModelStore(root / "models", device=args.device)
        engine = Engine(store, root)
        pipe = store.load_pipeline(DEMO_CHECKPOINT)

        model = engine.image_to_image.load_upscaler(DEMO_CHECKPOINT)
        started = time.perf_counter()
        upscale(model, Image.open(root / "inputs" / "in.png").convert("RGB"))
        sr_seconds = time.perf_counter() - started

        encoder, decoder = StageTimer(pipe.vae.encoder, args.device), StageTimer(pipe.vae.decoder, args.device)
        sent = {
            "base_model_name": DEMO_CHECKPOINT,
            "uov_method": "Upscale (2x)",
            "uov_input_image": "inputs/in.png",
            "overwrite_step": args.steps,
            "style_selections": [],
            "prompt": "a detailed photograph",
            "image_seed": 1,
        }
        plan = planning.build_plan("bench", planning.finalize(planning.merge_layers(sent)), data_dir=root)
        hooks = Steps()
        started = time.perf_counter()
        images, _ = engine.generate(plan, hooks)
        total = time.perf_counter() - started
        width, height = images[0].image.size
        tiles = len(tile_boxes(width, height, DIFFUSION_TILE, DIFFUSION_OVERLAP))
        diffusion = total - sr_seconds - encoder.seconds - decoder.seconds
        result = {
            "device": args.device,
            "input": "1024x1024",
            "output": f"{width}x{height}",
            "tiles": tiles,
            "steps_per_tile": args.steps,
            "super_resolution_s": round(sr_seconds, 2),
            "vae_encode_s": round(encoder.seconds, 2),
            "vae_decode_s": round(decoder.seconds, 2),
            "denoising_s": round(diffusion, 2),  # UNet steps, text encoding, blending (task total minus the rest)
            "task_total_s": round(total, 2),
            "peak_rss_mib": round(peak_rss_kib() / 1024, 1),
        }
    print(json.dumps(result, indent=2))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
