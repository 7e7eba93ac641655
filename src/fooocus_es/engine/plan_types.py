"""The engine's input: one frozen, pure description of a generation (no torch)."""

from __future__ import annotations

import msgspec


class GenerationPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the pipeline needs to produce a task's images, already resolved.

    Built from a request by `engine.plan.build_plan`; the runner hands it to `Engine.generate`.
    """

    task_id: str
    prompt: str
    negative_prompt: str
    width: int
    height: int
    steps: int
    guidance_scale: float
    seeds: tuple[int, ...]  # one per image; len(seeds) == image count
    base_model: str  # file (or folder) name under models/checkpoints/
    sampler_name: str = "dpmpp_2m_sde_gpu"
    scheduler_name: str = "karras"
    disable_preview: bool = False
