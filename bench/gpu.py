"""Stock diffusers StableDiffusionXLPipeline beside this project's Engine, in one run, on random weights.

The H200 run (one command, about 3-5 minutes; the 8-minute budget leaves room for the build):

    .venv/bin/python bench/gpu.py --device cuda --out bench/gpu-results.json

On the CPU (the demo architecture, seconds; what tests/engine/test_gpu_bench.py runs, smaller):

    .venv/bin/python bench/gpu.py --tiny --steps 4 --size 128 [--concurrency 1,4,8,16] [--out FILE]

The models are built from the real configs (engine/models/sdxl/base, or sdxl/tiny with `--tiny`) with
random weights directly on the device (fp16 on CUDA, fp32 on the CPU): nothing is downloaded. Both
sides share the UNet and text encoders; each has its own VAE (stock's fp16 one upcasts per decode as
diffusers does, the engine's is kept in fp32 as the ModelStore keeps it).

Modes: Speed (30 steps, CFG 4; the engine runs Fooocus's defaults: dpmpp_2m_sde_gpu karras, sharpness
2, adaptive CFG 7, ADM; stock runs its Euler) and Lightning (4 steps, CFG 1, euler sgm_uniform; no
LoRA, the weights are random anyway). `--steps` overrides both step counts.

Rows, per mode:
- concurrency 1: per-image latency, stock (one pipeline call) and engine (one one-image task);
- concurrency N: images a minute with N one-image tasks in flight:
  - stock-sequential: one pipeline call after another, as every peer server runs them (measured over
    min(N, --sequential-cap) calls: its rate does not depend on N);
  - stock-batch: one pipeline call with N prompts (a reference: no per-task progress, stop or seeds);
  - engine: N one-image tasks through Engine.generate_batch (continuous batching, --max-batch rows).
Each row has its peak memory: torch.cuda.max_memory_allocated on CUDA, the process's peak RSS
(VmHWM, reset per row) on the CPU. Prints a table; writes the rows as JSON to --out.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from fooocus_es.engine.diffusion.pipeline import Engine  # noqa: E402
from fooocus_es.engine.models.compile import compile_unet  # noqa: E402
from fooocus_es.engine.models.store import ModelStore  # noqa: E402
from fooocus_es.engine.planning.plan_types import GenerationPlan  # noqa: E402

CONFIGS = ROOT / "src" / "fooocus_es" / "engine" / "models" / "sdxl"
PROMPT = "a photo of a cat on a windowsill, soft light"
NEGATIVE = "blurry, low quality"
MODEL_NAME = "random-sdxl"


@dataclass(frozen=True)
class Mode:
    name: str
    steps: int
    guidance_scale: float
    sampler: str
    scheduler: str
    extras: dict[str, float]  # the plan's guidance extras (Fooocus's forced values for Lightning)


MODES = (
    Mode("speed", 30, 4.0, "dpmpp_2m_sde_gpu", "karras", {}),
    Mode("lightning", 4, 1.0, "euler", "sgm_uniform",
         {"sharpness": 0.0, "adaptive_cfg": 1.0, "adm_scaler_positive": 1.0, "adm_scaler_negative": 1.0,
          "adm_scaler_end": 0.0}),
)  # fmt: skip


@dataclass(frozen=True)
class Row:
    mode: str
    system: str  # stock | stock-sequential | stock-batch | engine
    concurrency: int
    images: int  # images timed
    seconds: float
    latency_s: float  # seconds per image one after another; for batched rows the batch's wall time / images
    images_per_min: float
    peak_memory_mib: float


class _Quiet:
    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        pass

    def poll_control(self) -> None:
        return None


class _InMemoryStore(ModelStore):
    """A ModelStore whose one checkpoint is an already built pipeline (random weights, no file)."""

    def __init__(self, models_dir: Path, device: str, dtype: torch.dtype, pipe: Any) -> None:
        super().__init__(models_dir, device=device, dtype=dtype)
        self._pipe = pipe

    def load_pipeline(self, name: str, *, keep: Any = ()) -> Any:
        return self._pipe


def build_pipelines(tiny: bool, device: str, dtype: torch.dtype) -> tuple[Any, Any]:
    """(stock pipeline, engine pipeline): the same UNet and text encoders, a VAE each."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    config_dir = CONFIGS / ("tiny" if tiny else "base")
    torch.manual_seed(0)
    with torch.device(device):  # initialised where they run: the full UNet's init on a CPU takes long
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet"))
        vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae"))
        text_encoder = CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder"))
        text_encoder_2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2"))
    if dtype != torch.float32:  # built in float32; .to(float32) would only log diffusers' warning
        unet, vae, text_encoder, text_encoder_2 = (m.to(dtype) for m in (unet, vae, text_encoder, text_encoder_2))
    parts = {
        "unet": unet.eval(),
        "text_encoder": text_encoder.eval(),
        "text_encoder_2": text_encoder_2.eval(),
        "tokenizer": CLIPTokenizer.from_pretrained(config_dir / "tokenizer"),
        "tokenizer_2": CLIPTokenizer.from_pretrained(config_dir / "tokenizer_2"),
        "scheduler": EulerDiscreteScheduler.from_pretrained(config_dir / "scheduler"),
    }
    stock_vae = vae.eval()
    engine_vae = copy.deepcopy(stock_vae)
    if dtype == torch.float16 and engine_vae.config.force_upcast:
        engine_vae.float()  # as ModelStore._load keeps it
    stock = StableDiffusionXLPipeline(**parts, vae=stock_vae, add_watermarker=False)
    engine = StableDiffusionXLPipeline(**parts, vae=engine_vae, add_watermarker=False)
    for pipe in (stock, engine):
        pipe.set_progress_bar_config(disable=True)
    return stock, engine


class Memory:
    """Peak memory since `reset`: CUDA's allocator high-water mark, or the process's peak RSS."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def reset(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            return
        with contextlib.suppress(OSError):  # Linux: "5" resets VmHWM to the current RSS
            Path("/proc/self/clear_refs").write_text("5")

    def peak_mib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Bench:
    def __init__(self, args: argparse.Namespace, stock: Any, engine: Engine) -> None:
        self.args = args
        self.stock = stock
        self.engine = engine
        self.memory = Memory(args.device)
        self.seeds = iter(range(1, 10**9))

    def _sync(self) -> None:
        if self.args.device.startswith("cuda"):
            torch.cuda.synchronize()

    def _timed(self, run: Callable[[], int], mode: Mode, system: str, concurrency: int) -> Row:
        self.memory.reset()
        start = time.perf_counter()
        images = run()
        self._sync()
        seconds = time.perf_counter() - start
        return Row(
            mode=mode.name, system=system, concurrency=concurrency, images=images, seconds=round(seconds, 4),
            latency_s=round(seconds / images, 4), images_per_min=round(60 * images / seconds, 2),
            peak_memory_mib=round(self.memory.peak_mib(), 1),
        )  # fmt: skip

    def steps(self, mode: Mode) -> int:
        return self.args.steps or mode.steps

    # -- stock diffusers ---------------------------------------------------------------------------
    def stock_call(self, mode: Mode, images: int, steps: int | None = None) -> int:
        seeds = [next(self.seeds) for _ in range(images)]
        output = self.stock(
            prompt=[PROMPT] * images, negative_prompt=[NEGATIVE] * images, width=self.args.size,
            height=self.args.size, num_inference_steps=steps or self.steps(mode),
            guidance_scale=mode.guidance_scale, output_type="pil",
            generator=[torch.Generator("cpu").manual_seed(seed) for seed in seeds],
        )  # fmt: skip
        assert len(output.images) == images
        return images

    def stock_sequential(self, mode: Mode, calls: int) -> int:
        for _ in range(calls):
            self.stock_call(mode, 1)
        return calls

    # -- the engine --------------------------------------------------------------------------------
    def plan(self, mode: Mode, task: int, steps: int | None = None) -> GenerationPlan:
        return GenerationPlan(
            task_id=f"bench-{task}", prompt=PROMPT, negative_prompt=NEGATIVE, width=self.args.size,
            height=self.args.size, steps=steps or self.steps(mode), guidance_scale=mode.guidance_scale,
            seeds=(next(self.seeds),), base_model=MODEL_NAME, sampler_name=mode.sampler,
            scheduler_name=mode.scheduler, disable_preview=True, **mode.extras,
        )  # fmt: skip

    def engine_tasks(self, mode: Mode, tasks: int, steps: int | None = None) -> int:
        """`tasks` one-image tasks in flight at once: the first starts the batch, the rest join it."""
        plans = [self.plan(mode, index, steps) for index in range(tasks)]
        waiting = plans[1:]
        ended: list[GenerationPlan] = []

        def admit(_key: object, free: int) -> list[tuple[GenerationPlan, Any]]:
            taken, waiting[:] = waiting[:free], waiting[free:]
            for plan in taken:
                self.engine.prepare(plan)
            return [(plan, _Quiet()) for plan in taken]

        def on_done(plan: GenerationPlan, images: list[Any], status: str, error: Exception | None) -> None:
            if error is not None:
                raise error
            assert status == "finished" and len(images) == 1
            ended.append(plan)

        self.engine.prepare(plans[0])
        # One call: past --max-batch, the waiting tasks join as slots free up (continuous batching).
        self.engine.generate_batch(plans[0], _Quiet(), admit=admit, on_done=on_done)
        assert len(ended) == tasks, f"{len(ended)} of {tasks} tasks ended"
        return tasks

    # -- rows --------------------------------------------------------------------------------------
    def run_mode(self, mode: Mode) -> list[Row]:
        warm = min(2, self.steps(mode))
        self.stock_call(mode, 1, warm)  # first calls: kernels chosen, allocator grown
        self.engine_tasks(mode, 1, warm)
        rows = [
            self._timed(lambda: self.stock_call(mode, 1), mode, "stock", 1),
            self._timed(lambda: self.engine_tasks(mode, 1), mode, "engine", 1),
        ]
        for n in self.args.concurrency_levels:
            if n == 1:
                continue
            calls = min(n, self.args.sequential_cap)
            rows.append(self._timed(lambda c=calls: self.stock_sequential(mode, c), mode, "stock-sequential", n))
            rows.append(self._timed(lambda k=n: self.stock_call(mode, k), mode, "stock-batch", n))
            rows.append(self._timed(lambda k=n: self.engine_tasks(mode, k), mode, "engine", n))
        return rows


def print_table(rows: list[Row]) -> None:
    print(f"{'mode':<10} {'system':<17} {'conc':>4} {'images':>6} {'s/image':>8} {'img/min':>8} {'peak MiB':>9}")
    for row in rows:
        print(
            f"{row.mode:<10} {row.system:<17} {row.concurrency:>4} {row.images:>6} {row.latency_s:>8.3f} "
            f"{row.images_per_min:>8.1f} {row.peak_memory_mib:>9.0f}"
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--tiny", action="store_true", help="the demo architecture (engine/models/sdxl/tiny)")
    parser.add_argument("--steps", type=int, default=0, help="steps of every mode (default: 30 Speed, 4 Lightning)")
    parser.add_argument("--size", type=int, default=0, help="image side (default 1024; 128 with --tiny)")
    parser.add_argument("--concurrency", default="1,4,8,16", help="concurrency levels, comma-separated")
    parser.add_argument("--max-batch", type=int, default=0, help="the engine's rows per UNet call (default: max N)")
    parser.add_argument("--sequential-cap", type=int, default=4, help="stock-sequential calls timed at most")
    parser.add_argument("--modes", default="speed,lightning")
    parser.add_argument("--compile", dest="compile_mode", default="off", choices=["off", "default", "max-autotune"],
                        help="torch.compile the engine's UNet (behind the fidelity guard; stock stays eager)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "gpu-results.json")
    args = parser.parse_args(argv)
    args.size = args.size or (128 if args.tiny else 1024)
    args.concurrency_levels = sorted({int(part) for part in args.concurrency.split(",")} | {1})
    args.max_batch = args.max_batch or max(args.concurrency_levels)
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here")
    dtype = torch.float16 if args.device.startswith("cuda") else torch.float32
    started = time.perf_counter()
    stock, engine_pipe = build_pipelines(args.tiny, args.device, dtype)
    build_s = time.perf_counter() - started
    guard = compile_unet(engine_pipe.unet, args.compile_mode, name="bench")
    modes = [mode for mode in MODES if mode.name in args.modes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        store = _InMemoryStore(Path(tmp) / "models", args.device, dtype, engine_pipe)
        engine = Engine(store, Path(tmp), max_batch=args.max_batch)
        bench = Bench(args, stock, engine)
        rows = [row for mode in modes for row in bench.run_mode(mode)]
    result = {
        "bench": "gpu", "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
        "architecture": "tiny" if args.tiny else "sdxl", "dtype": str(dtype).removeprefix("torch."),
        "size": args.size, "steps": {mode.name: bench.steps(mode) for mode in modes}, "max_batch": args.max_batch,
        "build_s": round(build_s, 2), "rows": [asdict(row) for row in rows], "compile": args.compile_mode,
        "compile_errors": sorted(guard.errors.values()) if guard is not None else [],
    }  # fmt: skip
    print_table(rows)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
