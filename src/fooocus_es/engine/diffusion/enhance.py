"""Enhance on the engine: each image through its plan's passes (planning/enhance.py), in order.

A pass's input image and mask are stored under inputs/ (content-addressed, as request images are)
and the pass runs as the engine runs any inpaint or vary/upscale plan, so it shares that path's
models, patches and progress. The results are every stage of every image (the image, then each
pass's output, and each mask when debugging), or only each image's last stage with
`save_final_enhanced_image_only`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace as replace_image
from pathlib import Path

import msgspec
import numpy as np
from PIL import Image

from fooocus_es.engine.diffusion.sampling import GeneratedImage, GenerationHooks, Status
from fooocus_es.engine.imaging.masks import mask_is_empty, prepare_mask
from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT
from fooocus_es.engine.planning.plan_types import EnhancePass, EnhancePlan, GenerationPlan
from fooocus_es.engine.tools.toolbox import ToolBox
from fooocus_es.media.blobs import LocalBlobs
from fooocus_es.media.inputs import store_input

Generate = Callable[[GenerationPlan, GenerationHooks], tuple[list[GeneratedImage], Status]]


class Enhancer:
    """Runs one plan's enhance passes with the engine's own `generate` for each pass."""

    def __init__(self, plan: GenerationPlan, generate: Generate, tools: ToolBox, data_dir: Path) -> None:
        assert plan.enhance is not None
        self.plan = plan
        self.setup: EnhancePlan = plan.enhance
        self.generate = generate
        self.tools = tools
        self.blobs = LocalBlobs(data_dir)
        self.demo = plan.base_model == DEMO_CHECKPOINT

    def run(self, images: list[GeneratedImage], hooks: GenerationHooks) -> tuple[list[GeneratedImage], Status]:
        results: list[GeneratedImage] = []
        for generated in images:
            stages, status = self._enhance_one(generated, hooks)
            results += stages[-1:] if self.setup.final_only else stages
            if status == "stopped":
                return results, "stopped"
        return results, "finished"

    def _enhance_one(self, generated: GeneratedImage, hooks: GenerationHooks) -> tuple[list[GeneratedImage], Status]:
        stages = [generated]
        current = generated.image
        steps: list[Callable[[Image.Image], tuple[list[Image.Image], Image.Image | None, Status]]] = []
        if self.setup.uov_before is not None:
            steps.append(lambda image, plan=self.setup.uov_before: self._uov(plan, image, hooks))
        steps += [lambda image, step=step: self._inpaint(step, image, hooks) for step in self.setup.passes]
        if self.setup.uov_after is not None:
            steps.append(lambda image, plan=self.setup.uov_after: self._uov(plan, image, hooks))
        for step in steps:
            extra, made, status = step(current)
            stages += [replace_image(generated, image=image) for image in extra]
            if made is not None:
                current = made
                stages.append(replace_image(generated, image=made))
            if status == "stopped":
                return stages, status
        return stages, "finished"

    def _uov(
        self, plan: GenerationPlan, image: Image.Image, hooks: GenerationHooks
    ) -> tuple[list[Image.Image], Image.Image | None, Status]:
        assert plan.image_task is not None
        task = msgspec.structs.replace(plan.image_task, image=self._store(image))
        return [], *self._one(msgspec.structs.replace(plan, image_task=task), hooks)

    def _inpaint(
        self, step: EnhancePass, image: Image.Image, hooks: GenerationHooks
    ) -> tuple[list[Image.Image], Image.Image | None, Status]:
        """The pass's mask, then its inpaint; skipped (the image as it was) when nothing is found."""
        found = self.tools.masks().generate(image, step.mask, demo=self.demo)
        upload = np.asarray(found.mask.convert("RGB"))
        mask = prepare_mask(upload, image.width, image.height, step.erode_or_dilate, step.invert)
        debug = [Image.fromarray(mask).convert("RGB")] if self.setup.debug_masks else []
        sam = step.mask.mask_model == "sam"
        if sam and (found.boxes == 0 or (not step.mask.dino_debug and found.masks_applied == 0)):
            return debug, None, "finished"  # Fooocus's skip rule: nothing detected, nothing to inpaint
        if mask_is_empty(mask):
            return debug, None, "finished"  # an empty region would inpaint nothing
        assert step.plan.image_task is not None
        mask_key = self._store(Image.fromarray(mask).convert("RGB"))
        task = msgspec.structs.replace(step.plan.image_task, image=self._store(image), mask=mask_key)
        made, status = self._one(msgspec.structs.replace(step.plan, image_task=task), hooks)
        return debug, made, status

    def _one(self, plan: GenerationPlan, hooks: GenerationHooks) -> tuple[Image.Image | None, Status]:
        images, status = self.generate(plan, hooks)
        return (images[0].image if images else None), status

    def _store(self, image: Image.Image) -> str:
        return f"inputs/{store_input(image.convert('RGB'), self.blobs)}"


def enhance_input(plan: GenerationPlan, data_dir: Path) -> list[GeneratedImage]:
    """The enhance tab's input image as the task's first image (no generation)."""
    assert plan.enhance is not None
    with Image.open(data_dir / plan.enhance.input_image) as stored:
        image = stored.convert("RGB")
    return [GeneratedImage(image_index=0, seed=plan.seeds[0], image=image)]
