"""Fooocus's guidance extras inside a stock diffusers SDXL pipeline, by wrapping its UNet.

diffusers' `callback_on_step_end` runs after the scheduler step, too late to change the noise
prediction, and the SDXL pipelines have no hook around their CFG combine. The UNet call is the
one place that sees everything needed (the noisy sample, the timestep, both branches, the time
ids), so `GuidedUNet` stands in for the UNet of a per-task pipeline:

- ADM: it replaces `added_cond_kwargs["time_ids"]` with Fooocus's per-branch ids (original size
  x1.5 for the cond rows, x0.8 for the uncond rows) while progress < adm_scaler_end.
- Sharpness and adaptive CFG: it splits the batch diffusers built, `[uncond; cond]`, computes
  Fooocus's final prediction, and returns it for *both* halves. diffusers' own combine
  `u + s * (c - u)` then gives back exactly that prediction, since `f + s * (f - f) == f`.
- CFG 1: diffusers already runs only the cond branch (one batch-1 UNet evaluation per step) when
  guidance_scale <= 1; the wrapper then applies ADM only, as Fooocus does.

With the extras off the wrapper passes the UNet's output through untouched, so the image is
bit-identical to the plain pipeline's; `wrap_unet` returns the bare UNet in that case anyway.
Works for every scheduler on the DDPM discretisation (all Fooocus samplers but EDM), epsilon or
v-prediction, and with second-order samplers (each UNet call uses its own timestep's progress).

The maths for one request (one image: its rows at one timestep) is `RowGuidance`; GuidedUNet applies
it to a whole pipeline call, the batch denoiser (batching.py) to each request's slice of a batched call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput

from fooocus_es.engine.diffusion import guidance

if TYPE_CHECKING:
    from fooocus_es.engine.diffusion.image_prompts import ImagePromptHooks

Tensor = torch.Tensor


@dataclass(frozen=True)
class GuidanceSettings:
    """One task's guidance parameters, FooocusAPI names and defaults (fooocus-facts.md §1.5)."""

    guidance_scale: float = 4.0
    adaptive_cfg: float = 7.0
    sharpness: float = 2.0
    adm_scaler_positive: float = 1.5
    adm_scaler_negative: float = 0.8
    adm_scaler_end: float = 0.3

    @classmethod
    def off(cls, guidance_scale: float) -> GuidanceSettings:
        """Plain diffusers CFG: no sharpness, no adaptive CFG, no ADM."""
        return cls(guidance_scale, adaptive_cfg=math.inf, sharpness=0.0,
                   adm_scaler_positive=1.0, adm_scaler_negative=1.0, adm_scaler_end=0.0)  # fmt: skip

    @property
    def uses_cfg(self) -> bool:
        """Whether an uncond branch runs: diffusers runs it for scale > 1, Fooocus skips it at 1."""
        return self.guidance_scale > 1.0 and not math.isclose(self.guidance_scale, 1.0)

    @property
    def reshapes_prediction(self) -> bool:
        """Sharpness or adaptive CFG will change the combined prediction."""
        return self.uses_cfg and (self.sharpness > 0 or self.guidance_scale > self.adaptive_cfg)

    @property
    def uses_adm(self) -> bool:
        return self.adm_scaler_end > 0 and not (self.adm_scaler_positive == self.adm_scaler_negative == 1.0)

    @property
    def active(self) -> bool:
        return self.reshapes_prediction or self.uses_adm


class RowGuidance:
    """Fooocus's per-request guidance maths, shared by `GuidedUNet` (a whole pipeline call is one
    request) and the batch denoiser (`batching.py`: each request's slice of a batched call).

    A request's rows are `[uncond; cond]` (split) or `[cond]`, all at one timestep `t`; its
    progress, ADM ids and final prediction depend on that `t` only, so a batch whose requests sit
    at different timesteps applies this once per request, each with its own progress.
    """

    def __init__(
        self,
        settings: GuidanceSettings,
        alphas_cumprod: Tensor,
        *,
        prediction_type: str = "epsilon",
        vae_scale_factor: int = 8,
    ) -> None:
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"prediction type {prediction_type!r} is not supported by the guidance extras")
        self.settings = settings
        self.prediction_type = prediction_type
        self.vae_scale_factor = vae_scale_factor
        self.num_train_timesteps = int(alphas_cumprod.numel())
        self._alphas_cumprod = alphas_cumprod.detach().to(torch.float32)
        # Per-request memo of device tensors (time-id rows, the schedule), so a step uploads nothing.
        self._device_tensors: dict[tuple[Any, ...], Tensor] = {}

    def progress(self, t: Tensor) -> guidance.Progress:
        """Fooocus's progress at this request's (0-d, on-device) timestep."""
        return guidance.progress_from_timestep(t, self.num_train_timesteps)

    def adm_time_ids(self, sample: Tensor, time_ids: Tensor, progress: guidance.Progress, split: bool) -> Tensor:
        """Fooocus's ids for this step: rows `[uncond] * n + [cond] * n` (or `[cond] * n` without CFG).

        `sample` is this request's rows; `time_ids` gives only the dtype and device.
        """
        s = self.settings
        height, width = sample.shape[2] * self.vae_scale_factor, sample.shape[3] * self.vae_scale_factor
        rows = sample.shape[0] // 2 if split else sample.shape[0]
        key = ("adm", height, width, rows, split, time_ids.dtype, time_ids.device)
        if key not in self._device_tensors:
            cond = [guidance.adm_time_ids(height, width, s.adm_scaler_positive)] * rows
            uncond = [guidance.adm_time_ids(height, width, s.adm_scaler_negative)] * rows if split else []
            consistent = [guidance.adm_consistent_ids(height, width)] * len(uncond + cond)
            both = torch.tensor([uncond + cond, consistent], dtype=time_ids.dtype).to(time_ids.device)
            self._device_tensors[key] = both
        emphasized, consistent_ids = self._device_tensors[key]
        return guidance.timed_adm_ids(emphasized, consistent_ids, progress, s.adm_scaler_end)

    def _alpha_bar(self, t: Tensor) -> Tensor:
        key = ("alphas_cumprod", t.device)
        if key not in self._device_tensors:
            self._device_tensors[key] = self._alphas_cumprod.to(t.device)
        return guidance.alpha_bar_at(t, self._device_tensors[key])

    def final_prediction(self, sample: Tensor, out: Tensor, t: Tensor, progress: guidance.Progress) -> Tensor:
        """Sharpen the cond eps and combine with adaptive CFG: one half's worth of rows.

        `sample` and `out` are this request's `[uncond; cond]` input and output rows. Computed in
        float32 (Fooocus samples in float32 even with a float16 UNet), cast back at the end.
        """
        s = self.settings
        uncond_out, cond_out = out.to(torch.float32).chunk(2)
        x_t = sample.chunk(2)[1].to(torch.float32)
        alpha_bar = self._alpha_bar(t)
        if self.prediction_type == "v_prediction":
            cond_eps = guidance.eps_from_v(x_t, cond_out, alpha_bar)
            uncond_eps = guidance.eps_from_v(x_t, uncond_out, alpha_bar)
        else:
            cond_eps, uncond_eps = cond_out, uncond_out
        if s.sharpness > 0:
            x0 = guidance.predicted_x0(x_t, cond_eps, alpha_bar)
            cond_eps = guidance.sharpen_eps(cond_eps, x0, s.sharpness, progress)
        final = guidance.adaptive_cfg(cond_eps, uncond_eps, s.guidance_scale, s.adaptive_cfg, progress)
        if self.prediction_type == "v_prediction":
            final = guidance.v_from_eps(x_t, final, alpha_bar)
        return final.to(out.dtype)


class GuidedUNet(torch.nn.Module):
    """The pipeline's UNet with Fooocus's extras applied around each call. One per task.

    Attributes it does not define (config, dtype, device, add_embedding, ...) are the inner UNet's,
    so the pipeline code that inspects `self.unet` keeps working.
    """

    def __init__(
        self,
        unet: torch.nn.Module,
        settings: GuidanceSettings,
        alphas_cumprod: Tensor | None,
        *,
        prediction_type: str = "epsilon",
        vae_scale_factor: int = 8,
        image_prompts: ImagePromptHooks | None = None,
    ) -> None:
        """`alphas_cumprod` may be None only when every extra is off (the wrapper is there for image prompts)."""
        super().__init__()
        if alphas_cumprod is None and settings.active:
            raise ValueError("Fooocus's guidance extras need the scheduler's DDPM noise schedule")
        self.rows = (
            RowGuidance(settings, alphas_cumprod, prediction_type=prediction_type, vae_scale_factor=vae_scale_factor)
            if alphas_cumprod is not None
            else None
        )
        self.unet = unet
        self.settings = settings
        # Applied around every call while this wraps the base UNet; the refiner swap clears it.
        self.image_prompts = image_prompts

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("unet")
            if inner is None:
                raise
            return getattr(inner, name)

    def forward(
        self,
        sample: Tensor,
        timestep: Tensor | float | int,
        encoder_hidden_states: Tensor,
        *args: Any,
        added_cond_kwargs: dict[str, Tensor] | None = None,
        return_dict: bool = True,
        **kwargs: Any,
    ) -> tuple[Tensor] | UNet2DConditionOutput:
        t = timestep if isinstance(timestep, Tensor) else torch.tensor(timestep, device=sample.device)
        t = t.reshape(-1)[0]  # one timestep per call in every SDXL pipeline; stays on the device
        # diffusers stacks [uncond; cond] exactly when it does CFG (guidance_scale > 1)
        split = self.settings.uses_cfg and sample.shape[0] % 2 == 0
        progress = self.rows.progress(t) if self.rows is not None and self.settings.active else None
        if progress is not None and self.settings.uses_adm and added_cond_kwargs and "time_ids" in added_cond_kwargs:
            time_ids = self.rows.adm_time_ids(sample, added_cond_kwargs["time_ids"], progress, split)  # type: ignore[union-attr]
            added_cond_kwargs = {**added_cond_kwargs, "time_ids": time_ids}
        if self.image_prompts is not None:
            out = self.image_prompts.unet_call(
                self.unet, sample, timestep, t, split, encoder_hidden_states, args, added_cond_kwargs, kwargs
            )
        else:
            out = self.unet(
                sample,
                timestep,
                encoder_hidden_states,
                *args,
                added_cond_kwargs=added_cond_kwargs,
                return_dict=False,
                **kwargs,
            )[0]
        if progress is not None and split and self.settings.reshapes_prediction:
            final = self.rows.final_prediction(sample, out, t, progress)  # type: ignore[union-attr]
            out = torch.cat([final, final])  # diffusers' combine then gives back `final` exactly
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)


def row_guidance(settings: GuidanceSettings, scheduler: Any, vae_scale_factor: int = 8) -> RowGuidance | None:
    """A request's guidance maths on `scheduler`'s noise schedule; None when every extra is off.

    Raises ValueError as `wrap_unet` does.
    """
    if not settings.active:
        return None
    return RowGuidance(settings, _ddpm_schedule(scheduler), prediction_type=_prediction_type(scheduler),
                       vae_scale_factor=vae_scale_factor)  # fmt: skip


def wrap_unet(
    unet: torch.nn.Module,
    settings: GuidanceSettings,
    scheduler: Any,
    vae_scale_factor: int = 8,
    image_prompts: ImagePromptHooks | None = None,
) -> Any:
    """The UNet to give a task's pipeline: `GuidedUNet` when any extra or image prompt is active, else `unet`.

    Raises ValueError for schedulers outside the DDPM discretisation (EDM) when extras are active:
    Fooocus's progress `1 - t / 999` has no meaning there.
    """
    if not settings.active and image_prompts is None:
        return unet
    schedule = _ddpm_schedule(scheduler) if settings.active else getattr(scheduler, "alphas_cumprod", None)
    return GuidedUNet(unet, settings, schedule, prediction_type=_prediction_type(scheduler),
                      vae_scale_factor=vae_scale_factor, image_prompts=image_prompts)  # fmt: skip


def _ddpm_schedule(scheduler: Any) -> Tensor:
    alphas_cumprod = getattr(scheduler, "alphas_cumprod", None)
    if alphas_cumprod is None:
        raise ValueError(f"{type(scheduler).__name__} has no DDPM noise schedule; Fooocus's guidance extras need one")
    return alphas_cumprod


def _prediction_type(scheduler: Any) -> str:
    return scheduler.config.get("prediction_type", "epsilon")
