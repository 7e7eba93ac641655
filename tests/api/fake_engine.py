"""A fake engine for in-process API tests: the runner's EngineLike without torch models.

It honours the contract the runner relies on (runner/worker.py, engine/sampling.py): one image per
seed at the plan's size, `hooks.on_step` per step, `hooks.poll_control()` after each step ("skip"
drops the current image, "stop" ends the task with the images finished so far). `hold()` parks
it after the first step of the next image until `release()`, so a test can act on a running task
at a known point instead of racing a timer.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

from PIL import Image

from fooocus_es.engine.diffusion.sampling import GeneratedImage, Status
from fooocus_es.engine.planning.plan_types import GenerationPlan

PARK_TIMEOUT_S = 30.0  # a test that forgets release() fails instead of hanging the runner forever


class FakeModels:
    """The part of ModelStore the runner touches itself (the warm-up load)."""

    def __init__(self) -> None:
        self.loaded: list[str] = []

    def load_pipeline(self, name: str, keep: Any = None) -> None:
        self.loaded.append(name)


class FakeEngine:
    def __init__(self) -> None:
        self.store = FakeModels()
        self.prepared: list[GenerationPlan] = []
        self.parked = threading.Event()  # set while held at a step
        self._go = threading.Event()
        self._go.set()

    @classmethod
    def factory(cls, engine: FakeEngine) -> Any:
        """What create_app's engine_factory takes: (model store, data dir) -> engine."""

        def make(_store: Any, _data_dir: Path) -> FakeEngine:
            return engine

        return make

    # -- test controls ---------------------------------------------------------------------------
    def hold(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self.parked.clear()
        self._go.set()

    # -- EngineLike --------------------------------------------------------------------------------
    def prepare(self, plan: GenerationPlan) -> None:
        self.prepared.append(plan)

    def generate(self, plan: GenerationPlan, hooks: Any) -> tuple[list[GeneratedImage], Status]:
        images: list[GeneratedImage] = []
        for index, seed in enumerate(plan.seeds):
            for step in range(1, plan.steps + 1):
                hooks.on_step(index, step, plan.steps, _preview())
                if step == 1 and not self._go.is_set():
                    self.parked.set()
                    self._go.wait(PARK_TIMEOUT_S)
                action = hooks.poll_control()
                if action == "stop":
                    return images, "stopped"
                if action == "skip":
                    break
            else:
                image = Image.new("RGB", (plan.width, plan.height), _colour(seed))
                images.append(GeneratedImage(image_index=index, seed=seed, image=image))
        return images, "finished"


def _colour(seed: int) -> tuple[int, int, int]:
    return (seed % 256, (seed >> 8) % 256, (seed >> 16) % 256)


def _preview() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (120, 60, 30)).save(buffer, "JPEG")
    return buffer.getvalue()
