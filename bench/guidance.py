"""Cost per step of Fooocus's guidance extras (sharpness, adaptive CFG, ADM) beside the UNet call.

    .venv/bin/python bench/guidance.py [--device cpu|cuda] [--quick] [--sizes 128,64] [--no-check]

Per latent size (1x4x128x128 is a 1024 px image), it times:
- each extra alone on realistic tensors, and the whole GuidedUNet wrapper around a free stub UNet
  (what the extras add to one CFG step: casts, sharpness, adaptive CFG, ADM ids, the output);
- the CFG step's UNet call (batch 2: uncond + cond) of (a) the tiny demo UNet and (b) the
  full-size SDXL UNet with random weights built from engine/models/sdxl/base/unet/config.json.

It checks that the wrapper stays under 3% of a full-size UNet step at every size timed, prints a
table, and writes bench/guidance-results.json. On a CPU a full-size step takes tens of seconds, so
it is timed twice at 64x64 and once at 128x128 latents (--quick: once, at 64x64 only), with no
warm-up call; on CUDA, median of 10 after 3 warm-up calls.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fooocus_es.engine.diffusion import guidance as g  # noqa: E402
from fooocus_es.engine.diffusion.guided_unet import GuidanceSettings, GuidedUNet  # noqa: E402

SDXL_UNET_CONFIG = ROOT / "src" / "fooocus_es" / "engine" / "sdxl" / "base" / "unet"
RESULTS = ROOT / "bench" / "guidance-results.json"
BUDGET = 0.03  # the extras may cost at most 3% of a full-size CFG step


def timed(fn: Callable[[], Any], device: torch.device, repeat: int, warmup: int) -> list[float]:
    """Milliseconds per call, each call synchronised on CUDA."""
    for _ in range(warmup):
        fn()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - started) * 1000)
    return times


def median(times: list[float]) -> float:
    return round(statistics.median(times), 3)


def sdxl_alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2  # SDXL's scaled_linear
    return torch.cumprod(1 - betas, 0).float()


class FreeUNet(torch.nn.Module):
    """Stands in for the UNet at no cost: hands back a prepared prediction."""

    def __init__(self, output: torch.Tensor) -> None:
        super().__init__()
        self.output = output

    def forward(self, *args: Any, **kwargs: Any) -> tuple[torch.Tensor]:
        return (self.output,)


def bench_extras(size: int, device: torch.device, dtype: torch.dtype, repeat: int) -> dict[str, dict[str, float]]:
    """Each extra on one image's CFG step at latent size x size, and the wrapper with all of them."""
    gen = torch.Generator().manual_seed(0)
    shape = (1, 4, size, size)
    cond, uncond, x_t = (torch.randn(shape, generator=gen).to(device, dtype) for _ in range(3))
    t = torch.tensor(300.0, device=device)  # late-ish step: every extra is active, adaptive blends
    progress = g.progress_from_timestep(t)
    acp = sdxl_alphas_cumprod().to(device)
    alpha_bar = g.alpha_bar_at(t, acp)
    emphasized = torch.tensor([g.adm_time_ids(size * 8, size * 8, 0.8), g.adm_time_ids(size * 8, size * 8, 1.5)])
    consistent = torch.tensor([g.adm_consistent_ids(size * 8, size * 8)] * 2)
    emphasized, consistent = emphasized.to(device, dtype), consistent.to(device, dtype)

    def sharpness() -> torch.Tensor:
        x0 = g.predicted_x0(x_t, cond.float(), alpha_bar)
        return g.sharpen_eps(cond.float(), x0, 2.0, progress)

    settings = GuidanceSettings(guidance_scale=10.0, adaptive_cfg=7.0, sharpness=2.0)  # all three active
    wrapped = GuidedUNet(FreeUNet(torch.cat([uncond, cond])), settings, acp)
    sample = torch.cat([x_t, x_t])
    time_ids = torch.zeros(2, 6, device=device, dtype=dtype)
    text_embeds = torch.zeros(2, 1280, device=device, dtype=dtype)

    def wrapper() -> torch.Tensor:
        added = {"text_embeds": text_embeds, "time_ids": time_ids}
        return wrapped(sample, t, None, added_cond_kwargs=added, return_dict=False)[0]

    cases: dict[str, Callable[[], Any]] = {
        "plain CFG combine (diffusers does this anyway)": lambda: g.cfg(cond, uncond, 10.0),
        "sharpness (x0 + bilateral 13x13 + blend)": sharpness,
        "adaptive CFG": lambda: g.adaptive_cfg(cond.float(), uncond.float(), 10.0, 7.0, progress),
        "ADM time ids": lambda: g.timed_adm_ids(emphasized, consistent, progress, 0.3),
        "GuidedUNet wrapper, all extras": wrapper,
    }
    results = {}
    with torch.inference_mode():
        for name, fn in cases.items():
            times = timed(fn, device, repeat, warmup=2)
            results[name] = {"median_ms": median(times), "min_ms": round(min(times), 3)}
    return results


def unet_inputs(unet: torch.nn.Module, size: int, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """A CFG step's inputs (batch 2) with the shapes this UNet expects."""
    config = unet.config
    text_dim = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
    gen = torch.Generator().manual_seed(1)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device, dtype)

    return {
        "sample": randn(2, config.in_channels, size, size),
        "timestep": torch.tensor(500.0, device=device),
        "encoder_hidden_states": randn(2, 77, config.cross_attention_dim),
        "added_cond_kwargs": {
            "text_embeds": randn(2, text_dim),
            "time_ids": torch.tensor([[size * 8.0, size * 8.0, 0, 0, size * 8.0, size * 8.0]] * 2).to(device, dtype),
        },
        "return_dict": False,
    }


def bench_unet(
    unet: torch.nn.Module, size: int, device: torch.device, dtype: torch.dtype, repeat: int, warmup: int
) -> dict[str, Any]:
    inputs = unet_inputs(unet, size, device, dtype)
    with torch.inference_mode():
        times = timed(lambda: unet(**inputs), device, repeat, warmup)
    return {
        "median_ms": median(times),
        "min_ms": round(min(times), 1),
        "calls": [round(v, 1) for v in times],
        "warmup_calls": warmup,
    }


def tiny_unet(device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    from fooocus_es.engine.demo.checkpoint import build_demo_models

    return build_demo_models()["unet"].to(device, dtype).eval()


def sdxl_unet(device: torch.device, dtype: torch.dtype) -> tuple[torch.nn.Module, float]:
    from diffusers import UNet2DConditionModel

    started = time.perf_counter()
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(SDXL_UNET_CONFIG))
    unet = unet.to(device, dtype).eval()
    return unet, time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="fewer repeats; on CPU the full UNet at 64x64 only")
    parser.add_argument("--sizes", default="128,64", help="latent sizes, comma-separated (128 = 1024 px)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-check", action="store_true", help="report the 3%% budget but always exit 0")
    args = parser.parse_args()

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.float16 if cuda else torch.float32  # what the server runs on each
    if args.threads:
        torch.set_num_threads(args.threads)
    if not cuda:
        torch.set_flush_denormal(True)
    sizes = [int(s) for s in args.sizes.split(",")]
    full_sizes = sizes if cuda or not args.quick else [s for s in sizes if s <= 64] or [min(sizes)]
    extra_repeat = 10 if args.quick else (50 if cuda else 20)
    unet_warmup = 3 if cuda else 0

    def unet_repeat(size: int) -> int:
        # CPU: one 128x128 batch-2 call of the full UNet is minutes; 64x64 is about a minute
        return 10 if cuda else (1 if args.quick or size > 64 else 2)

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if cuda else f"cpu ({platform.processor() or platform.machine()})",
        "dtype": str(dtype).removeprefix("torch."),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "quick": args.quick,
        "filter_rows_per_pass": 13 if cuda else 1,
        "extras_ms": {},
        "tiny_unet_ms": {},
        "sdxl_unet_ms": {},
    }
    for size in sizes:
        print(f"extras at 1x4x{size}x{size} ...", flush=True)
        results["extras_ms"][str(size)] = bench_extras(size, device, dtype, extra_repeat)

    tiny = tiny_unet(device, dtype)
    for size in sizes:
        print(f"tiny demo UNet, batch 2 at {size}x{size} ...", flush=True)
        tiny_repeat = extra_repeat if cuda else 5
        results["tiny_unet_ms"][str(size)] = bench_unet(tiny, size, device, dtype, tiny_repeat, warmup=1)
    del tiny

    print("building the full-size SDXL UNet (random weights) ...", flush=True)
    unet, build_s = sdxl_unet(device, dtype)
    results["sdxl_unet_params_m"] = round(sum(p.numel() for p in unet.parameters()) / 1e6, 1)
    results["sdxl_unet_build_s"] = round(build_s, 1)
    for size in sorted(full_sizes):
        print(f"SDXL UNet, batch 2 at {size}x{size} ({unet_repeat(size)} timed call(s)) ...", flush=True)
        results["sdxl_unet_ms"][str(size)] = bench_unet(unet, size, device, dtype, unet_repeat(size), unet_warmup)
        gc.collect()
    del unet

    wrapper_key = "GuidedUNet wrapper, all extras"
    checks = {}
    for size, timing in results["sdxl_unet_ms"].items():
        share = results["extras_ms"][size][wrapper_key]["median_ms"] / timing["median_ms"]
        checks[size] = {"extras_share_of_step": round(share, 5), "within_3_percent": share < BUDGET}
    results["checks"] = checks

    print_table(results, wrapper_key)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(ROOT)}")
    ok = all(c["within_3_percent"] for c in checks.values())
    print("CHECK extras < 3% of a full-size SDXL CFG step:", "PASS" if ok else "FAIL")
    return 0 if ok or args.no_check else 1


def print_table(results: dict[str, Any], wrapper_key: str) -> None:
    sizes = list(results["extras_ms"])
    print(f"\n{results['device']}, {results['dtype']}, torch {results['torch']}, {results['threads']} threads")
    header = f"{'per CFG step, ms: median (min)':<48}" + "".join(f"{s + 'x' + s + ' latent':>22}" for s in sizes)
    print(header)
    print("-" * len(header))

    def cell(timing: dict[str, float] | None, digits: int) -> str:
        if not timing:
            return f"{'not timed':>22}"
        return f"{timing['median_ms']:.{digits}f} ({timing['min_ms']:.{digits}f})".rjust(22)

    for name in results["extras_ms"][sizes[0]]:
        print(f"{name:<48}" + "".join(cell(results["extras_ms"][s][name], 3) for s in sizes))
    for label, key in (("tiny demo UNet call, batch 2", "tiny_unet_ms"), ("SDXL UNet call, batch 2", "sdxl_unet_ms")):
        print(f"{label:<48}" + "".join(cell(results[key].get(s), 1) for s in sizes))
    cells = [results["checks"].get(s) for s in sizes]
    print(
        f"{'wrapper / SDXL step (medians)':<48}"
        + "".join(f"{c['extras_share_of_step'] * 100:>21.3f}%" if c else f"{'-':>22}" for c in cells)
    )
    tiny = [results["extras_ms"][s][wrapper_key]["median_ms"] / results["tiny_unet_ms"][s]["median_ms"] for s in sizes]
    print(f"{'wrapper / tiny demo UNet step (medians)':<48}" + "".join(f"{v * 100:>21.1f}%" for v in tiny))


if __name__ == "__main__":
    raise SystemExit(main())
