"""Engine.generate on the real tiny SDXL: determinism, step hooks, previews, skip and stop, every sampler."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from fooocus_es.engine.diffusion.pipeline import Engine, GeneratedImage, GenerationFailed
from fooocus_es.engine.diffusion.preview import latent_preview_jpeg
from fooocus_es.engine.models.store import ModelMissing, ModelStore
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan_types import GenerationPlan
from fooocus_es.engine.planning.sampler_names import SAMPLER_NAMES, unsupported_reason

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:__array_wrap__ must accept:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Should have t[ab]"),  # torchsde's Brownian tree at sigma_min
]

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclass
class RecordingHooks:
    """Records every step; answers polls from a script of (image_index, step) -> action."""

    actions: dict[tuple[int, int], str] = field(default_factory=dict)
    steps: list[tuple[int, int, int]] = field(default_factory=list)
    previews: list[bytes | None] = field(default_factory=list)

    def on_step(self, image_index: int, step: int, steps: int, preview_jpeg: bytes | None) -> None:
        self.steps.append((image_index, step, steps))
        self.previews.append(preview_jpeg)

    def poll_control(self) -> str | None:
        image_index, step, _ = self.steps[-1]
        return self.actions.get((image_index, step))


@pytest.fixture(scope="module")
def engine(demo_models: Path) -> Engine:
    torch.set_num_threads(2)
    return Engine(ModelStore(demo_models))


def make_plan(seeds: Iterable[int] = (1,), steps: int = 4, size: int = 64, **overrides: object) -> GenerationPlan:
    fields = {
        "task_id": "t1",
        "prompt": "a photo of a cat",
        "negative_prompt": "blurry",
        "width": size,
        "height": size,
        "steps": steps,
        "guidance_scale": 4.0,
        "seeds": tuple(seeds),
        "base_model": DEMO_CHECKPOINT,
        **overrides,
    }
    return GenerationPlan(**fields)  # type: ignore[arg-type]


def pixels(image: GeneratedImage) -> np.ndarray:
    return np.asarray(image.image)


def test_same_seed_same_pixels_different_seed_different_pixels(engine: Engine) -> None:
    hooks = RecordingHooks()
    images, status = engine.generate(make_plan(seeds=(7, 7, 8)), hooks)
    assert status == "finished"
    assert [(i.image_index, i.seed) for i in images] == [(0, 7), (1, 7), (2, 8)]
    assert all(i.image.mode == "RGB" and i.image.size == (64, 64) for i in images)
    assert np.array_equal(pixels(images[0]), pixels(images[1]))
    assert not np.array_equal(pixels(images[0]), pixels(images[2]))
    # A later task with the same seed alone: nothing carried over from the previous images.
    again, _ = engine.generate(make_plan(seeds=(7,)), RecordingHooks())
    assert np.array_equal(pixels(again[0]), pixels(images[0]))


def test_hooks_see_every_step_of_every_image_with_a_jpeg_preview(engine: Engine) -> None:
    hooks = RecordingHooks()
    engine.generate(make_plan(seeds=(1, 2), steps=4), hooks)
    assert hooks.steps == [(i, s, 4) for i in (0, 1) for s in (1, 2, 3, 4)]
    assert all(p is not None and p.startswith(JPEG_MAGIC) for p in hooks.previews)


@dataclass
class PacedHooks(RecordingHooks):
    """Wants a preview every other step (as the runner's hooks pace them to the stream rate)."""

    asked: list[int] = field(default_factory=list)

    def wants_preview(self, image_index: int) -> bool:
        self.asked.append(image_index)
        return len(self.asked) % 2 == 1


@pytest.mark.parametrize("max_batch", [1, 2])
def test_hooks_that_pace_previews_get_only_the_ones_they_want(demo_models: Path, max_batch: int) -> None:
    hooks = PacedHooks()
    Engine(ModelStore(demo_models), max_batch=max_batch).generate(make_plan(seeds=(1, 2), steps=3), hooks)
    assert len(hooks.steps) == 6 and len(hooks.asked) == 6  # asked once a step, single and batched path
    made = [preview is not None for preview in hooks.previews]
    assert made == [True, False, True, False, True, False]  # no JPEG made where none was wanted


def test_no_previews_when_disabled(engine: Engine) -> None:
    hooks = RecordingHooks()
    images, _ = engine.generate(make_plan(seeds=(1,), steps=3, disable_preview=True), hooks)
    assert len(images) == 1
    assert [s for _, s, _ in hooks.steps] == [1, 2, 3]
    assert hooks.previews == [None, None, None]


def test_stop_returns_the_finished_images_only(engine: Engine) -> None:
    hooks = RecordingHooks(actions={(1, 2): "stop"})
    images, status = engine.generate(make_plan(seeds=(1, 2, 3), steps=4), hooks)
    assert status == "stopped"
    assert [i.image_index for i in images] == [0]
    assert hooks.steps[-1] == (1, 2, 4)  # nothing ran after the stop


def test_skip_drops_exactly_the_current_image(engine: Engine) -> None:
    hooks = RecordingHooks(actions={(0, 1): "skip"})
    images, status = engine.generate(make_plan(seeds=(1, 2, 3), steps=3), hooks)
    assert status == "finished"
    assert [i.image_index for i in images] == [1, 2]
    assert [(i, s) for i, s, _ in hooks.steps] == [(0, 1), (1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    # The images after a skip are the ones the seeds give anyway.
    alone, _ = engine.generate(make_plan(seeds=(2,), steps=3), RecordingHooks())
    assert np.array_equal(pixels(images[0]), pixels(alone[0]))


def sampler_cases() -> list[tuple[str, str]]:
    cases = []
    for sampler in SAMPLER_NAMES:
        for scheduler in ("karras", "sgm_uniform"):
            if unsupported_reason(sampler, scheduler) is None:
                cases.append((sampler, scheduler))
                break
    return cases


@pytest.mark.parametrize(("sampler", "scheduler"), sampler_cases())
def test_every_supported_sampler_runs(engine: Engine, sampler: str, scheduler: str) -> None:
    hooks = RecordingHooks()
    plan = make_plan(steps=2, sampler_name=sampler, scheduler_name=scheduler, disable_preview=True)
    images, status = engine.generate(plan, hooks)  # non-finite latents would raise GenerationFailed
    assert status == "finished" and len(images) == 1
    assert [s for _, s, _ in hooks.steps] == [1, 2]  # one report per step, even for 2nd-order solvers
    assert pixels(images[0]).std() > 0


@pytest.mark.parametrize("scheduler", ["normal", "exponential", "simple", "ddim_uniform", "lcm", "tcd"])
def test_every_supported_schedule_runs(engine: Engine, scheduler: str) -> None:
    images, _ = engine.generate(make_plan(steps=2, sampler_name="euler", scheduler_name=scheduler), RecordingHooks())
    assert len(images) == 1


def test_plans_that_cannot_run_fail_clearly(engine: Engine) -> None:
    with pytest.raises(GenerationFailed, match="multiples of 8"):
        engine.generate(make_plan(size=60), RecordingHooks())
    with pytest.raises(GenerationFailed, match="restart"):
        engine.generate(make_plan(sampler_name="restart"), RecordingHooks())
    with pytest.raises(ModelMissing, match="absent.safetensors"):
        engine.prepare(make_plan(base_model="absent.safetensors"))
    engine.prepare(make_plan())  # the demo model is fine


def test_latent_preview_is_a_small_jpeg() -> None:
    from io import BytesIO

    from PIL import Image

    jpeg = latent_preview_jpeg(torch.randn(1, 4, 16, 24), max_side=256)
    assert jpeg.startswith(JPEG_MAGIC)
    image = Image.open(BytesIO(jpeg))
    assert image.size == (240, 160)  # x10: the largest whole factor within 256
    big = Image.open(BytesIO(latent_preview_jpeg(torch.zeros(4, 128, 64), max_side=64)))
    assert big.size == (32, 64)


def test_a_tasks_setup_is_applied_once_and_again_only_when_it_changes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    import fooocus_es.engine.diffusion.pipeline as pipeline_module

    calls: list[list[str]] = []
    real = pipeline_module.activate_loras

    def counting(pipe: object, specs: list, path_of: object) -> None:
        calls.append([spec.name for spec in specs])
        real(pipe, specs, path_of)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline_module, "activate_loras", counting)
    engine._active = None
    plan = make_plan(steps=1)
    engine.prepare(plan)
    engine.generate(plan, RecordingHooks())  # prepare then generate: one setup, applied once
    engine.generate(make_plan(seeds=(9,), steps=1), RecordingHooks())  # another task, same setup
    assert calls == [[]]
    engine.generate(make_plan(steps=1, freeu=(1.01, 1.02, 0.99, 0.95)), RecordingHooks())
    assert calls == [[], []]  # FreeU changed: the setup is applied again (LoRAs re-set with it)


def test_the_batch_key_separates_what_cannot_share_a_unet_call() -> None:
    base = make_plan()
    assert base.batch_key() == make_plan(seeds=(5, 6), prompt="another prompt", steps=8).batch_key()
    for different in (make_plan(size=128), make_plan(loras=(("x.safetensors", 0.5),)),
                      make_plan(freeu=(1.0, 1.0, 1.0, 1.0))):  # fmt: skip
        assert different.batch_key() != base.batch_key()
    for per_row in (make_plan(guidance_scale=7.0), make_plan(sampler_name="euler")):  # each row owns these
        assert per_row.batch_key() == base.batch_key()
    assert hash(base.batch_key()) == hash(make_plan().batch_key())  # usable as a dict key
