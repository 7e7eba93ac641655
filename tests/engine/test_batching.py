"""Batched denoising (engine/diffusion/batching.py) on the tiny demo SDXL: an image's pixels depend only
on its own request, whether it runs alone (the single-image pipeline call) or as rows of a batch, joins a
batch mid-way, or shares it with requests of other prompts, seeds, samplers and guidance settings.

The tolerance is measured: the differences come from the UNet's arithmetic at another batch size (CPU
kernels block their sums differently), never from the request's inputs. A batch of one request is
bit-identical to the single path, which pins that the set-up (noise, scheduler, conditioning, guidance)
is the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from engine_helpers import Hooks, call_sizes
from PIL import Image

from fooocus_es.engine.diffusion.batching import BatchDenoiser, DenoiseRequest, auto_max_batch, batch_key
from fooocus_es.engine.diffusion.image_to_image import vary_input_size
from fooocus_es.engine.diffusion.pipeline import Engine
from fooocus_es.engine.diffusion.sampling import ConditioningCache, decode_latents
from fooocus_es.engine.models.store import ModelStore
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan_types import GenerationPlan, UpscaleTask, VaryTask

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# Max abs pixel difference (of 255) between an image alone and in a batch. Measured on CPU float32
# across batches of 1-3 requests and mid-way joins: 1. Pinned one above.
TOLERANCE = 2
STEPS = 4


def make_plan(seed: int = 11, prompt: str = "a photo of a cat", **overrides: Any) -> GenerationPlan:
    """Fooocus's defaults (dpmpp_2m_sde_gpu karras, sharpness 2, adaptive CFG 7, ADM): every extra on."""
    fields: dict[str, Any] = {
        "task_id": "t", "prompt": prompt, "negative_prompt": "blurry", "width": 64, "height": 64,
        "steps": STEPS, "guidance_scale": 9.0, "seeds": (seed,), "base_model": DEMO_CHECKPOINT,
        **overrides,
    }  # fmt: skip
    return GenerationPlan(**fields)


# The request under test (guidance 9 > adaptive CFG 7: adaptive CFG active) and neighbours that differ
# in everything a row may own: seed, prompt (and its length), sampler, guidance (1.0: no uncond rows), steps.
TARGET = make_plan()
NEIGHBOURS = (
    make_plan(seed=5, prompt="a red house by the sea", guidance_scale=4.0, sampler_name="euler_ancestral",
              scheduler_name="normal"),  # fmt: skip
    make_plan(seed=6, prompt="a dog", guidance_scale=1.0, sharpness=0.0, sampler_name="euler"),
    # past 75 tokens: two 77-token chunks, tiled to the batch's lcm of sequence lengths
    make_plan(seed=7, prompt="a (tree:1.3) in fog, " + ", ".join(["old wood", "wet moss", "grey sky"] * 12), steps=6),
)


@pytest.fixture(scope="module")
def engine(demo_models: Path) -> Engine:
    torch.set_num_threads(1)  # a shared 2-core machine: a second thread mostly spin-waits
    return Engine(ModelStore(demo_models, cache_bytes=10**9), demo_models.parent)


@pytest.fixture(scope="module")
def batched(engine: Engine) -> Engine:
    return Engine(engine.store, engine.image_to_image.data_dir, max_batch=3)


@pytest.fixture(scope="module")
def alone(engine: Engine) -> dict[int, np.ndarray]:
    """Each plan's image from the single-image path (max_batch 1), by seed."""
    return {plan.seeds[0]: pixels_of(engine, plan) for plan in (TARGET, *NEIGHBOURS)}


def pixels_of(engine: Engine, plan: GenerationPlan) -> np.ndarray:
    images, status = engine.generate(plan, Hooks())
    assert status == "finished"
    return np.asarray(images[0].image)


def run_batch(engine: Engine, plans: Sequence[GenerationPlan], join_at: Sequence[int]) -> dict[int, np.ndarray]:
    """Each plan's image, plan i joining the batch after `join_at[i]` steps of the batch; by seed."""
    base = engine.store.load_pipeline(DEMO_CHECKPOINT)
    engine.prepare(plans[0])  # the setup (no LoRAs, no FreeU) on the shared models
    out: dict[int, np.ndarray] = {}
    with torch.inference_mode():
        conditioning = ConditioningCache(base, plans[0].clip_skip)
        denoiser = BatchDenoiser(base)
        step = 0
        while len(out) < len(plans):
            for plan, at in zip(plans, join_at, strict=True):
                if at == step:
                    denoiser.add(DenoiseRequest.of(plan, 0, conditioning))
            denoiser.step()
            step += 1
            for done in denoiser.finished():
                out[done.request.seed] = np.asarray(decode_latents(base, base.vae, done.latents))
    return out


def max_diff(a: np.ndarray, b: np.ndarray) -> int:
    assert a.shape == b.shape
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


def test_a_request_gives_its_alone_image_in_batches_of_one_two_and_three(
    engine: Engine, alone: dict[int, np.ndarray]
) -> None:
    one = run_batch(engine, [TARGET], [0])
    assert max_diff(one[TARGET.seeds[0]], alone[TARGET.seeds[0]]) == 0  # same shapes: bit-identical
    diffs = []
    for size in (2, 3):
        plans = [TARGET, *NEIGHBOURS[: size - 1]]
        images = run_batch(engine, plans, [0] * size)
        diffs += [max_diff(images[plan.seeds[0]], alone[plan.seeds[0]]) for plan in plans]
    print(f"max abs pixel diff, alone vs batches of 2 and 3: {diffs}")
    assert max(diffs) <= TOLERANCE
    assert not np.array_equal(alone[TARGET.seeds[0]], alone[NEIGHBOURS[0].seeds[0]])  # the rows differ


def test_a_request_joining_mid_way_gives_its_alone_image(engine: Engine, alone: dict[int, np.ndarray]) -> None:
    plans = [NEIGHBOURS[2], TARGET, NEIGHBOURS[0]]  # 6 steps; joins at its step 2; at step 3
    images = run_batch(engine, plans, [0, 2, 3])
    diffs = [max_diff(images[plan.seeds[0]], alone[plan.seeds[0]]) for plan in plans]
    print(f"max abs pixel diff, alone vs joined mid-way: {diffs}")
    assert max(diffs) <= TOLERANCE


def test_a_dropped_request_leaves_only_its_rows(engine: Engine, alone: dict[int, np.ndarray]) -> None:
    base = engine.store.load_pipeline(DEMO_CHECKPOINT)
    engine.prepare(TARGET)
    with torch.inference_mode():
        conditioning = ConditioningCache(base, TARGET.clip_skip)
        denoiser = BatchDenoiser(base)
        kept = denoiser.add(DenoiseRequest.of(TARGET, 0, conditioning))
        dropped = denoiser.add(DenoiseRequest.of(NEIGHBOURS[0], 0, conditioning))
        assert denoiser.rows == 4  # two requests with CFG
        denoiser.step()
        denoiser.drop(dropped)
        assert (len(denoiser), denoiser.rows) == (1, 2)
        results = [denoiser.step() for _ in range(STEPS - 1)]
        assert [[r.request_id for r in step] for step in results] == [[kept]] * (STEPS - 1)
        (done,) = denoiser.finished()
        assert len(denoiser) == 0 and denoiser.step() == []
        image = np.asarray(decode_latents(base, base.vae, done.latents))
        with pytest.raises(ValueError, match="does not share"):  # another size: another batch
            denoiser.add(DenoiseRequest.of(make_plan(width=128), 0, conditioning))
        with pytest.raises(ValueError, match="cannot be batched"):
            denoiser.add(DenoiseRequest.of(make_plan(sampler_name="heun"), 0, conditioning))
    assert max_diff(image, alone[TARGET.seeds[0]]) <= TOLERANCE


class Control(Hooks):
    """Hooks that answer `action` once, after the step `at` = (image_index, step) is reported."""

    def __init__(self, action: str, at: tuple[int, int]) -> None:
        super().__init__()
        self.action, self.at, self.pending = action, at, False

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        super().on_step(image_index, step, steps, preview_jpeg)
        self.pending = (image_index, step) == self.at

    def poll_control(self) -> str | None:
        return self.action if self.pending else None


def three_images(**overrides: Any) -> GenerationPlan:
    return make_plan(seeds=(21, 22, 23), guidance_scale=4.0, **overrides)


def test_a_task_s_images_run_as_rows_of_one_batch_with_per_image_progress(engine: Engine, batched: Engine) -> None:
    plan = three_images()
    calls: list[int] = []
    handle = engine.store.load_pipeline(DEMO_CHECKPOINT).unet.register_forward_pre_hook(
        lambda _module, args: calls.append(args[0].shape[0])
    )
    try:
        hooks = Hooks()
        images, status = batched.generate(plan, hooks)
        alone_images, _ = engine.generate(plan, Hooks())
    finally:
        handle.remove()
    assert status == "finished" and [image.seed for image in images] == [21, 22, 23]
    assert calls[:STEPS] == [6] * STEPS  # three images x CFG in each call; then the single path's
    assert calls[STEPS:] == [2] * (3 * STEPS)
    for index in range(3):  # each image reports steps 1..n, as alone
        assert [s for i, s, n in hooks.steps if i == index] == list(range(1, STEPS + 1))
    diffs = [max_diff(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(images, alone_images, strict=True)]
    print(f"max abs pixel diff, image_number 3 with max_batch 1 vs 3: {diffs}")
    assert max(diffs) <= TOLERANCE


def test_more_images_than_max_batch_join_as_others_leave(engine: Engine) -> None:
    two = Engine(engine.store, engine.image_to_image.data_dir, max_batch=2)
    hooks = Control("skip", at=(0, 2))  # image 0 leaves at step 2: image 2 takes its place at once
    images, status = two.generate(three_images(), hooks)
    assert status == "finished" and [image.seed for image in images] == [22, 23]
    assert hooks.steps[:4] == [(0, 1, STEPS), (1, 1, STEPS), (0, 2, STEPS), (1, 2, STEPS)]
    assert hooks.steps[4:6] == [(1, 3, STEPS), (2, 1, STEPS)]  # image 2 joined mid-way through image 1
    assert [s for i, s, n in hooks.steps if i == 2] == list(range(1, STEPS + 1))


def test_skip_drops_only_that_image_and_stop_ends_all(batched: Engine) -> None:
    plan = three_images()
    full, _ = batched.generate(plan, Hooks())
    skip = Control("skip", at=(1, 2))
    images, status = batched.generate(plan, skip)
    assert status == "finished" and [image.seed for image in images] == [21, 23]
    assert [s for i, s, n in skip.steps if i == 1] == [1, 2]
    for image in images:  # the others are untouched by the drop (same batch until then, same arithmetic)
        assert max_diff(np.asarray(image.image), np.asarray(full[image.image_index].image)) <= TOLERANCE
    stop = Control("stop", at=(2, 3))
    images, status = batched.generate(plan, stop)
    assert (images, status) == ([], "stopped")
    assert stop.steps[-1] == (2, 3, STEPS) and len(stop.steps) == 3 * 3  # nothing after the stop


def test_stop_keeps_the_images_already_finished(engine: Engine) -> None:
    two = Engine(engine.store, engine.image_to_image.data_dir, max_batch=2)
    images, status = two.generate(three_images(), Control("stop", at=(2, 1)))
    assert status == "stopped" and [image.seed for image in images] == [21, 22]


def test_max_batch_1_is_the_single_image_path(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from fooocus_es.engine.diffusion import pipeline

    def no_batching(*_args: object) -> None:
        raise AssertionError("max_batch 1 must not batch")

    monkeypatch.setattr(pipeline, "BatchDenoiser", no_batching)
    images, status = engine.generate(three_images(), Hooks())
    assert status == "finished" and len(images) == 3
    with pytest.raises(ValueError, match="max_batch"):
        Engine(engine.store, max_batch=-1)
    assert Engine(engine.store, max_batch=0).max_batch == 1  # by the device: one on a CPU


def test_the_default_batch_follows_the_devices_memory() -> None:
    assert auto_max_batch("cpu") == 1
    assert [auto_max_batch("cuda:0", gib * 2**30) for gib in (16, 24, 48, 80, 141)] == [1, 2, 4, 8, 8]


def test_the_batch_key_says_which_plans_share_a_unet_call() -> None:
    key = batch_key(TARGET)
    assert key is not None
    for compatible in (*NEIGHBOURS, make_plan(seeds=(1, 2, 3)), make_plan(sharpness=0.0, adm_scaler_end=0.0)):
        assert batch_key(compatible) == key
    loras = make_plan(loras=(("a.safetensors", 0.5),))
    for different in (make_plan(width=128), loras, make_plan(loras=(("a.safetensors", 0.7),)),
                      make_plan(freeu=(1.01, 1.02, 0.99, 0.95)), make_plan(vae_name="other.safetensors")):  # fmt: skip
        assert batch_key(different) is not None and batch_key(different) != key
    assert batch_key(loras) == batch_key(make_plan(seed=3, loras=(("a.safetensors", 0.5),)))
    vary = make_plan(image_task=VaryTask(image="inputs/x.png", denoise=0.5))
    # vary batches at its input's size (which the engine reads from the file), with text to image rows
    assert batch_key(vary, (1152, 896)) == batch_key(make_plan(width=1152, height=896))
    for single_path in (
        vary,  # its size unknown
        make_plan(image_task=UpscaleTask(image="inputs/x.png", method="Upscale (2x)")),
        make_plan(refiner_model="refiner.safetensors", refiner_switch_step=2),
        make_plan(sampler_name="heun"),  # second order: two UNet calls a step
        make_plan(sampler_name="dpmpp_sde_gpu"),
    ):
        assert batch_key(single_path) is None


def test_prompts_of_different_lengths_share_a_call(engine: Engine) -> None:
    base = engine.store.load_pipeline(DEMO_CHECKPOINT)
    conditioning = ConditioningCache(base, TARGET.clip_skip)
    with torch.inference_mode():
        lengths = {DenoiseRequest.of(plan, 0, conditioning).conditioning.prompt_embeds.shape[1] for plan in
                   (TARGET, NEIGHBOURS[2])}  # fmt: skip
    assert lengths == {77, 154}


def test_max_batch_reaches_the_engine_from_the_cli_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import msgspec

    from fooocus_es import cli
    from fooocus_es.settings import settings_from_env

    monkeypatch.delenv("FOOOCUS_ES_MAX_BATCH", raising=False)
    assert cli._settings(cli._parser().parse_args(["serve"])).max_batch == 0  # by the device
    assert cli._settings(cli._parser().parse_args(["serve", "--max-batch", "4"])).max_batch == 4
    assert settings_from_env({"FOOOCUS_ES_MAX_BATCH": "8"}).max_batch == 8
    with pytest.raises(msgspec.ValidationError, match="max_batch"):
        settings_from_env({}, max_batch=-1)


def test_the_server_s_runner_builds_its_engine_with_max_batch(tmp_path: Path) -> None:
    from fooocus_es.services import Services
    from fooocus_es.settings import settings_from_env

    settings = settings_from_env({}, data_dir=tmp_path, device="cpu", max_batch=3, download_models=False)
    engine = Services(settings).runners.runners[0].engine_factory()  # what the runner thread calls
    assert isinstance(engine, Engine) and engine.max_batch == 3


class StopAt(Hooks):
    """Hooks that answer "stop" once the image has done `at` steps."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at = at
        self.steps_seen = 0

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        super().on_step(image_index, step, steps, preview_jpeg)
        self.steps_seen = step

    def poll_control(self) -> str | None:
        return "stop" if self.steps_seen >= self.at else None


def test_tasks_join_a_running_batch_and_each_ends_on_its_own(batched: Engine, alone: dict[int, np.ndarray]) -> None:
    """Continuous batching across tasks: plans admitted between steps (same batch key) give their
    alone images; each ends through on_done when its own images are done, one stopped mid-way
    ends alone, and admission stops at the free slots."""
    first = make_plan(task_id="first")
    joiners = [
        make_plan(task_id="second", seed=NEIGHBOURS[0].seeds[0], prompt="a red house by the sea", guidance_scale=4.0,
                  sampler_name="euler_ancestral", scheduler_name="normal"),  # fmt: skip
        make_plan(task_id="stopped", seed=99),
        make_plan(task_id="late", seed=NEIGHBOURS[1].seeds[0], prompt="a dog", guidance_scale=1.0, sharpness=0.0,
                  sampler_name="euler"),  # fmt: skip
    ]
    queue = list(joiners)
    asked: list[int] = []
    ended: list[tuple[str, list[Any], str, Exception | None]] = []

    def admit(key: Any, free: int) -> list[tuple[GenerationPlan, Any]]:
        asked.append(free)
        if len(asked) < 2 or not queue:  # nothing waiting at the first step
            return []
        plan = queue.pop(0)
        assert batch_key(plan) == key
        return [(plan, StopAt(2) if plan.task_id == "stopped" else Hooks())]

    def on_done(plan: GenerationPlan, images: list[Any], status: str, error: Exception | None) -> None:
        ended.append((plan.task_id, images, status, error))

    assert batched.batches_tasks(first)
    batched.generate_batch(first, Hooks(), admit=admit, on_done=on_done)
    assert max(asked) <= 2 and min(asked) >= 1  # max_batch 3: never more than the free slots
    by_task = {task_id: (images, status, error) for task_id, images, status, error in ended}
    assert set(by_task) == {"first", "second", "stopped", "late"} and ended[0][0] == "first"  # in first, out first
    assert all(error is None for _images, _status, error in by_task.values())
    assert by_task["stopped"][1] == "stopped" and by_task["stopped"][0] == []
    seeds = {"first": TARGET.seeds[0], "second": NEIGHBOURS[0].seeds[0], "late": NEIGHBOURS[1].seeds[0]}
    for task_id, seed in seeds.items():
        images, status, _error = by_task[task_id]
        assert status == "finished" and len(images) == 1
        assert max_diff(np.asarray(images[0].image), alone[seed]) <= TOLERANCE


# -- vary: rows that start from an image ---------------------------------------------------------

# Vary diffuses at Fooocus's ~1024 px, where a demo UNet call takes about a second a row on this
# CPU: two steps, and guidance 1 (no uncond rows; the CFG combine is the text to image rows' own).
VARY_STEPS = 2


@pytest.fixture(scope="module")
def vary_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("vary-batch")
    (root / "inputs").mkdir()
    pixels = (np.random.default_rng(3).random((96, 128, 3)) * 255).astype(np.uint8)
    Image.fromarray(pixels).save(root / "inputs" / "photo.png")
    return root


def vary_plan(seeds: tuple[int, ...] = (31, 32)) -> GenerationPlan:
    return make_plan(task_id="vary", seeds=seeds, steps=VARY_STEPS, guidance_scale=1.0,
                     image_task=VaryTask(image="inputs/photo.png", denoise=0.5))  # fmt: skip


def t2i_at_vary_size(vary_dir: Path) -> GenerationPlan:
    width, height = vary_input_size(vary_dir, VaryTask(image="inputs/photo.png", denoise=0.5))  # type: ignore[misc]
    return make_plan(task_id="t2i", seed=41, width=width, height=height, steps=VARY_STEPS, guidance_scale=1.0)


@pytest.fixture(scope="module")
def vary_alone(engine: Engine, vary_dir: Path) -> dict[int, np.ndarray]:
    """The single path's images (img2img pipeline calls for vary), by seed: vary 31, 32 and text to image 41."""
    alone = Engine(engine.store, vary_dir, max_batch=1)
    images, _ = alone.generate(vary_plan(), Hooks())
    t2i, _ = alone.generate(t2i_at_vary_size(vary_dir), Hooks())
    return {image.seed: np.asarray(image.image) for image in (*images, *t2i)}


def test_vary_images_are_rows_of_one_batch_and_keep_their_alone_pixels(
    engine: Engine, vary_dir: Path, vary_alone: dict[int, np.ndarray]
) -> None:
    """A vary task's images denoise together (from its input's latents, at Fooocus's shortened
    schedule) and decode in one VAE call, each within the tolerance of the single img2img path."""
    batched = Engine(engine.store, vary_dir, max_batch=3)
    plan = vary_plan()
    assert batched.batches_tasks(plan) and not Engine(engine.store, vary_dir).batches_tasks(plan)
    hooks = Hooks()
    with call_sizes(engine.store.load_pipeline(DEMO_CHECKPOINT)) as sizes:
        images, status = batched.generate(plan, hooks)
    assert (sizes.unet, sizes.decoder) == ([2] * VARY_STEPS, [2])  # both images in every UNet call, one decode
    assert status == "finished" and [image.seed for image in images] == [31, 32]
    assert [s for i, s, n in hooks.steps if i == 1] == list(range(1, VARY_STEPS + 1))
    size = t2i_at_vary_size(vary_dir)
    assert images[0].image.size == (size.width, size.height)
    diffs = [max_diff(np.asarray(image.image), vary_alone[image.seed]) for image in images]
    print(f"max abs pixel diff, vary with max_batch 1 vs 3: {diffs}")
    assert max(diffs) <= TOLERANCE
    assert not np.array_equal(vary_alone[31], vary_alone[32])  # each seed its own noise


def test_a_text_to_image_task_joins_a_vary_batch_of_its_size(
    engine: Engine, vary_dir: Path, vary_alone: dict[int, np.ndarray]
) -> None:
    """Across tasks: a text to image plan at the vary input's size shares the vary task's UNet calls."""
    batched = Engine(engine.store, vary_dir, max_batch=3)
    first, joiner = vary_plan(seeds=(31,)), t2i_at_vary_size(vary_dir)
    key = batched.batch_key_of(first)
    assert key is not None and key == batched.batch_key_of(joiner)
    assert batched.batch_key_of(make_plan(width=joiner.width + 64, height=joiner.height)) != key
    queue = [joiner]
    ended: dict[str, tuple[list[Any], str, Exception | None]] = {}

    def admit(asked: Any, free: int) -> list[tuple[GenerationPlan, Any]]:
        assert asked == key
        return [(queue.pop(), Hooks())] if queue else []

    def on_done(plan: GenerationPlan, images: list[Any], status: str, error: Exception | None) -> None:
        ended[plan.task_id] = (images, status, error)

    batched.generate_batch(first, Hooks(), admit=admit, on_done=on_done)
    for plan in (first, joiner):
        images, status, error = ended[plan.task_id]
        assert error is None and status == "finished" and len(images) == 1
        assert max_diff(np.asarray(images[0].image), vary_alone[plan.seeds[0]]) <= TOLERANCE
