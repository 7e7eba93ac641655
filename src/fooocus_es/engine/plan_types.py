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
    # Per image, parallel to `seeds` (engine.prompts): `prompt`/`negative_prompt` above are image 1's.
    prompts: tuple[str, ...] = ()  # styles applied, lines joined with ", ": what to encode
    negative_prompts: tuple[str, ...] = ()
    # The same texts as separate parts; Fooocus encodes each and concatenates the conditionings.
    prompt_parts: tuple[tuple[str, ...], ...] = ()
    negative_prompt_parts: tuple[tuple[str, ...], ...] = ()
    # The user's text with wildcards and arrays resolved, before styles: metadata's "prompt".
    resolved_prompts: tuple[str, ...] = ()
    resolved_negative_prompts: tuple[str, ...] = ()
    styles: tuple[str, ...] = ()  # styles applied to image 1 ("Random Style" resolved)
    image_styles: tuple[tuple[str, ...], ...] = ()  # the same, per image
    notes: tuple[str, ...] = ()  # things the plan could not honour, for the task record
    # Fooocus's guidance extras (engine/guidance.py); the few-step modes force them off.
    sharpness: float = 2.0
    adaptive_cfg: float = 7.0
    adm_scaler_positive: float = 1.5
    adm_scaler_negative: float = 0.8
    adm_scaler_end: float = 0.3

    def prompt_for(self, index: int) -> str:
        """Image `index`'s positive text; plans built without per-image prompts use `prompt`."""
        return self.prompts[index] if index < len(self.prompts) else self.prompt

    def negative_prompt_for(self, index: int) -> str:
        return self.negative_prompts[index] if index < len(self.negative_prompts) else self.negative_prompt
