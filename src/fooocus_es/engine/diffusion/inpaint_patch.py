"""Fooocus's inpaint engines (v1, v2.5, v2.6) on a diffusers SDXL UNet.

Fooocus inpaints with two files from `lllyasviel/fooocus_inpaint`, kept in `models/inpaint/`:

* `fooocus_inpaint_head.pth`: `{"head": Tensor[320, 5, 3, 3]}`, the weight of Fooocus's
  `InpaintHead` (modules/inpaint_worker.py): replicate-pad by 1, then a bias-free 3x3 conv without
  padding, from 5 channels (latent mask + masked-image latents) to the UNet's first feature width.
  `InpaintWorker.patch` adds its output to `h` right after `input_blocks[0]` (the UNet's conv_in),
  before that `h` is pushed as the first skip connection (ldm_patched's openaimodel forward applies
  `input_block_patch` before `hs.append(h)`). In diffusers that is exactly a forward hook on
  `unet.conv_in`, whose output is both the sample and `down_block_res_samples[0]`.
* one `.fooocus.patch` per engine version: a pickled dict `{LDM key: (w1, w_min, w_max)}` with keys
  named like the LDM UNet's state dict (`diffusion_model.input_blocks.4.1...attn1.to_q.weight`).
  `core.StableDiffusionModel.refresh_loras` matches them 1:1 against the model's own keys
  (`match_lora` wraps each as `("fooocus", value)`) and `ModelPatcher.patch_model`/`calculate_weight`
  adds `(w1 / 255) * (w_max - w_min) + w_min`, computed in float32 on a float32 copy of the weight,
  then casts the sum back to the weight's dtype. The patch is loaded at weight 1.0, base model only.

Here the patch is kept encoded (uint8, a quarter of a float32 diff) on the UNet's device, decoded
and added in place when a task enters `InpaintPatch.applied`, and the touched tensors' original
values are copied back bit-exactly on exit, even when the body raises. Files are read with
`torch.load(weights_only=True)`: a file that needs arbitrary pickle code is refused.

torch is imported at module level (only the engine imports this module), diffusers where needed.
"""

from __future__ import annotations

import contextlib
import pickle
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
import torch.nn.functional as F

from fooocus_es.engine.models.ldm_convert import unet_to_ldm

Tensor = torch.Tensor

INPAINT_HEAD: Final = "fooocus_inpaint_head.pth"
PATCH_FILES: Final[dict[str, str]] = {
    "v1": "inpaint.fooocus.patch",
    "v2.5": "inpaint_v25.fooocus.patch",
    "v2.6": "inpaint_v26.fooocus.patch",
}
LDM_UNET_PREFIX: Final = "diffusion_model."  # the keys of ldm_patched's BaseModel.state_dict()
HEAD_IN_CHANNELS: Final = 5  # [latent mask, 4 latent channels]
_ACTIVE_ATTR: Final = "_fooocus_es_inpaint_patch_active"
_SHOWN_KEYS: Final = 5


class InpaintPatchUnsupported(Exception):
    """Inpaint engine files that cannot be applied to this UNet; the message says which and why."""

    def __init__(self, version: str, detail: str) -> None:
        self.version = version
        self.detail = detail
        super().__init__(f"inpaint engine {version}: {detail}")


class InpaintFilesMissing(FileNotFoundError):
    """The head or the patch file of an inpaint engine is not in the inpaint folder."""

    def __init__(self, version: str, paths: list[Path]) -> None:
        self.version = version
        self.paths = paths
        names = ", ".join(str(p) for p in paths)
        super().__init__(f"inpaint engine {version} needs {names}")


@dataclass(frozen=True)
class _Diff:
    """One patched UNet tensor: its diffusers name and its encoded Fooocus diff."""

    name: str  # diffusers parameter name, without peft's `base_layer.`
    ldm_key: str
    shape: torch.Size
    w1: Tensor
    w_min: Tensor
    w_max: Tensor


def decode_fooocus_diff(w1: Tensor, w_min: Tensor, w_max: Tensor) -> Tensor:
    """The float32 weight diff of one `.fooocus.patch` entry, in Fooocus's own arithmetic."""
    w1 = w1.to(torch.float32)
    w_min = w_min.to(device=w1.device, dtype=torch.float32)
    w_max = w_max.to(device=w1.device, dtype=torch.float32)
    return (w1 / 255.0) * (w_max - w_min) + w_min


def head_input(latent_mask: Tensor, masked_latents: Tensor) -> Tensor:
    """The head's 5-channel input, `torch.cat([latent_mask, process_latent_in(latent)], dim=1)`.

    `masked_latents` are the diffusers-scaled latents (VAE latents times `vae.config.scaling_factor`,
    which for SDXL is exactly ComfyUI's `process_latent_in`) of the *original* crop with its masked
    pixels set to mid-grey (see `neutral_masked_pixels`), not of the fill image. `latent_mask` is
    (B or 1, 1, h, w), 1 where to inpaint (see `fooocus_latent_mask`). Returned in float32.
    """
    if masked_latents.ndim != 4:
        raise ValueError(f"latents must be (B, C, h, w), got shape {tuple(masked_latents.shape)}")
    if latent_mask.ndim == 3:
        latent_mask = latent_mask[:, None]
    if latent_mask.ndim != 4 or latent_mask.shape[1] != 1:
        raise ValueError(f"the latent mask must be (B, 1, h, w), got shape {tuple(latent_mask.shape)}")
    if latent_mask.shape[-2:] != masked_latents.shape[-2:]:
        raise ValueError(
            f"latent mask {tuple(latent_mask.shape[-2:])} and latents {tuple(masked_latents.shape[-2:])} differ in size"
        )
    batch = masked_latents.shape[0]
    if latent_mask.shape[0] not in (1, batch):
        raise ValueError(f"latent mask batch {latent_mask.shape[0]} does not match latents batch {batch}")
    latents = masked_latents.to(torch.float32)
    mask = latent_mask.to(device=latents.device, dtype=torch.float32).expand(batch, -1, -1, -1)
    if mask.shape[1] + latents.shape[1] != HEAD_IN_CHANNELS:
        raise ValueError(f"the head takes 1 mask + 4 latent channels, got {latents.shape[1]} latent channels")
    return torch.cat([mask, latents], dim=1)


def fooocus_latent_mask(mask: Tensor, latent_size: tuple[int, int]) -> Tensor:
    """Fooocus's latent mask (core.encode_vae_inpaint): (B, 1, h, w) of 0/1.

    `mask` is the pixel mask of the diffused crop in [0, 1] ((H, W), (B, H, W) or (B, 1, H, W)),
    1 where to inpaint. Fooocus resizes it bilinearly to 8 x the latent size, rounds, max-pools
    each 8x8 cell and rounds again: a latent cell is masked when any of its pixels is.
    """
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    h, w = latent_size
    mask = mask.to(torch.float32)
    mask = F.interpolate(mask, size=(h * 8, w * 8), mode="bilinear").round()
    return F.max_pool2d(mask, (8, 8)).round()


def neutral_masked_pixels(pixels: Tensor, mask: Tensor) -> Tensor:
    """The image Fooocus encodes for the head: masked pixels replaced by mid-grey.

    `pixels` is (B, 3, H, W) in diffusers' [-1, 1] range and `mask` (H, W), (B, H, W) or
    (B, 1, H, W) in [0, 1]. Fooocus does `pixels * (1 - w) + 0.5 * w` with `w = mask.round()` in
    [0, 1] pixel space; mid-grey 0.5 is 0.0 in [-1, 1].
    """
    if mask.ndim == 2:
        mask = mask[None, None]
    elif mask.ndim == 3:
        mask = mask[:, None]
    w = mask.round().to(device=pixels.device, dtype=pixels.dtype)
    return pixels * (1 - w)


def unwrap_unet(unet: torch.nn.Module) -> torch.nn.Module:
    """The UNet2DConditionModel inside wrappers such as GuidedUNet (`.unet`) or torch.compile."""
    from diffusers import UNet2DConditionModel

    module = unet
    for _ in range(8):
        if isinstance(module, UNet2DConditionModel):
            return module
        children = module.__dict__.get("_modules", {})
        inner = children.get("unet", children.get("_orig_mod"))
        if not isinstance(inner, torch.nn.Module):
            break
        module = inner
    if isinstance(module, UNet2DConditionModel):
        return module
    raise TypeError(f"{type(unet).__name__} is not (and does not wrap) a diffusers UNet2DConditionModel")


def patch_active(unet: torch.nn.Module) -> bool:
    """Whether an inpaint patch is applied to `unet` (or the UNet it wraps) right now."""
    return bool(unwrap_unet(unet).__dict__.get(_ACTIVE_ATTR))


class InpaintPatch:
    """One inpaint engine's head and weight diffs, matched to a UNet's layout.

    Apply with `with patch.applied(unet, head_input(...)): ...denoise...`. One application at a time
    per UNet; the patch object itself can be reused (and cached) across tasks.
    """

    def __init__(self, version: str, head_weight: Tensor, diffs: tuple[_Diff, ...]) -> None:
        self.version = version
        self.head_weight = head_weight
        self._diffs = diffs

    @property
    def parameter_names(self) -> list[str]:
        """The diffusers names of the UNet tensors the patch changes."""
        return [d.name for d in self._diffs]

    def head_feature(self, head_in: Tensor) -> Tensor:
        """InpaintHead(head_in) in float32: replicate pad 1, then conv2d with no padding."""
        if head_in.ndim != 4 or head_in.shape[1] != self.head_weight.shape[1]:
            raise ValueError(
                f"the inpaint head takes (B, {self.head_weight.shape[1]}, h, w), got shape {tuple(head_in.shape)}"
            )
        weight = self.head_weight.to(torch.float32)
        x = head_in.to(device=weight.device, dtype=torch.float32)
        with torch.no_grad():
            return F.conv2d(F.pad(x, (1, 1, 1, 1), "replicate"), weight)

    @contextlib.contextmanager
    def applied(self, unet: torch.nn.Module, head_in: Tensor) -> Iterator[AppliedPatch]:
        """Within the block, the UNet carries the patch and adds the head's feature after conv_in.

        The original values of every touched tensor are kept (a copy of those tensors only) and
        copied back on exit, bit for bit, whether the block returns or raises. The yielded
        `AppliedPatch` can `restore()` earlier, e.g. from a step callback at Fooocus's refiner
        switch (its synthetic refiner is the unpatched base UNet); exit is then a no-op.
        """
        model = unwrap_unet(unet)
        if patch_active(model):
            raise RuntimeError("an inpaint patch is already applied to this UNet")
        device = _parameter(model, "conv_in.weight").device
        feature = self.head_feature(head_in.to(device))
        if feature.shape[1] != model.config.block_out_channels[0]:
            raise InpaintPatchUnsupported(
                self.version,
                f"head makes {feature.shape[1]} channels, the UNet's conv_in {model.config.block_out_channels[0]}",
            )
        application = AppliedPatch(model)
        try:
            application._apply(self, feature)
            yield application
        finally:
            application.restore()


class AppliedPatch:
    """A patch in force on one UNet; `restore()` (idempotent) puts the UNet back exactly."""

    def __init__(self, model: torch.nn.Module) -> None:
        self._model = model
        self._backups: list[tuple[Tensor, Tensor]] = []
        self._handle: Any = None
        self._active = True
        model.__dict__[_ACTIVE_ATTR] = True

    @property
    def active(self) -> bool:
        return self._active

    def _apply(self, patch: InpaintPatch, feature: Tensor) -> None:
        # inference_mode: the in-place edits work whether or not the weights are inference tensors.
        with torch.inference_mode():
            for diff in patch._diffs:
                param = _parameter(self._model, diff.name)
                if param.shape != diff.shape:
                    raise InpaintPatchUnsupported(
                        patch.version, f"{diff.name} is {tuple(param.shape)} now, the patch is {tuple(diff.shape)}"
                    )
                self._backups.append((param, param.detach().clone()))
                decoded = decode_fooocus_diff(
                    diff.w1.to(param.device), diff.w_min.to(param.device), diff.w_max.to(param.device)
                )
                param.copy_((param.detach().to(torch.float32) + decoded).to(param.dtype))
                del decoded
        self._handle = self._model.conv_in.register_forward_hook(_FeatureHook(feature))

    def restore(self) -> None:
        """Remove the head's hook and copy every touched tensor's original value back."""
        if not self._active:
            return
        try:
            if self._handle is not None:
                self._handle.remove()
                self._handle = None
            with torch.inference_mode():
                while self._backups:
                    param, original = self._backups.pop()
                    param.copy_(original)
        finally:
            self._active = False
            self._model.__dict__.pop(_ACTIVE_ATTR, None)


class _FeatureHook:
    """conv_in forward hook: output + feature, the feature repeated over the CFG batch."""

    def __init__(self, feature: Tensor) -> None:
        self.feature = feature
        self._cast: dict[tuple[Any, ...], Tensor] = {}

    def __call__(self, module: torch.nn.Module, args: Any, output: Tensor) -> Tensor:
        feature = self.feature
        if output.shape[1:] != feature.shape[1:]:
            raise ValueError(
                f"inpaint head feature {tuple(feature.shape[1:])} does not fit conv_in output {tuple(output.shape[1:])}"
            )
        batch = output.shape[0]
        if batch % feature.shape[0]:
            raise ValueError(f"UNet batch {batch} is not a multiple of the inpaint head batch {feature.shape[0]}")
        key = (batch, output.dtype, output.device)
        if key not in self._cast:
            # diffusers stacks [uncond; cond], each the latent batch: repeat keeps rows aligned.
            repeated = feature.repeat(batch // feature.shape[0], 1, 1, 1)
            self._cast[key] = repeated.to(device=output.device, dtype=output.dtype)
        return output + self._cast[key]


def _parameter(model: torch.nn.Module, name: str) -> Tensor:
    """A UNet parameter by its plain diffusers name, looking through peft's `base_layer` wrappers."""
    module_path, _, attr = name.rpartition(".")
    module = model.get_submodule(module_path) if module_path else model
    while "base_layer" in module._modules:
        module = module._modules["base_layer"]
    param = module._parameters.get(attr)
    if param is None:
        raise KeyError(f"the UNet has no parameter {name!r}")
    return param


def _unet_ldm_names(model: torch.nn.Module) -> dict[str, tuple[str, torch.Size]]:
    """LDM key (with `diffusion_model.`) -> (diffusers name, shape) for every UNet parameter.

    Names come from a meta-device copy of the UNet built from its config, so adapters (peft LoRA
    layers) already on the real UNet do not show up, and nothing is allocated.
    """
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        skeleton = UNet2DConditionModel.from_config(model.config)
    shapes = {name: p.shape for name, p in skeleton.named_parameters()}
    ldm = unet_to_ldm(dict.fromkeys(shapes), model.config)  # type: ignore[arg-type]
    return {
        LDM_UNET_PREFIX + ldm_key: (name, shape) for ldm_key, (name, shape) in zip(ldm, shapes.items(), strict=True)
    }


def _load_weights_only(path: Path, version: str) -> Any:
    """torch.load that only builds tensors and containers; any other pickle is refused."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
        raise InpaintPatchUnsupported(
            version, f"{path.name} needs arbitrary pickle code to load and is refused ({first_line[:200]})"
        ) from error
    except (RuntimeError, EOFError, OSError, ValueError) as error:
        raise InpaintPatchUnsupported(version, f"{path.name} is not a readable torch file: {error}") from error


def _as_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return torch.tensor(float(value))
    return None


def _read_head(path: Path, version: str, channels: int) -> Tensor:
    state = _load_weights_only(path, version)
    if not isinstance(state, Mapping) or set(state) != {"head"} or not isinstance(state["head"], Tensor):
        keys = sorted(map(str, state))[:_SHOWN_KEYS] if isinstance(state, Mapping) else type(state).__name__
        raise InpaintPatchUnsupported(
            version, f"{path.name} is not an InpaintHead state dict ({{'head': tensor}}): {keys}"
        )
    head = state["head"]
    expected = (channels, HEAD_IN_CHANNELS, 3, 3)
    if tuple(head.shape) != expected:
        raise InpaintPatchUnsupported(
            version, f"{path.name} holds a head of shape {tuple(head.shape)}; this UNet needs {expected}"
        )
    if not head.is_floating_point():
        raise InpaintPatchUnsupported(version, f"{path.name} holds a {head.dtype} head, not floating point")
    return head.detach().to(torch.float32).contiguous()


def _read_diffs(
    path: Path, version: str, names: Mapping[str, tuple[str, torch.Size]], device: torch.device
) -> tuple[_Diff, ...]:
    state = _load_weights_only(path, version)
    if not isinstance(state, Mapping) or not state:
        raise InpaintPatchUnsupported(version, f"{path.name} is not a dict of Fooocus weight diffs")
    diffs: list[_Diff] = []
    unmatched: list[str] = []
    bad_shape: list[str] = []
    bad_format: list[str] = []
    for raw_key, value in state.items():
        key = str(raw_key)
        lookup = key.removeprefix("model.")
        if lookup not in names:
            unmatched.append(key)
            continue
        parts = [_as_tensor(v) for v in value] if isinstance(value, (tuple, list)) and len(value) == 3 else None
        if parts is None or any(p is None for p in parts):
            bad_format.append(key)
            continue
        w1, w_min, w_max = parts  # type: ignore[misc]
        name, shape = names[lookup]
        try:
            decoded_shape = torch.broadcast_shapes(w1.shape, w_min.shape, w_max.shape)  # type: ignore[union-attr]
        except RuntimeError:
            decoded_shape = None
        if decoded_shape != shape:
            bad_shape.append(f"{key} {tuple(w1.shape)} != {tuple(shape)}")  # type: ignore[union-attr]
            continue
        diffs.append(
            _Diff(
                name=name,
                ldm_key=lookup,
                shape=shape,
                w1=w1.detach().to(device).contiguous(),  # type: ignore[union-attr]
                w_min=w_min.detach().to(device=device, dtype=torch.float32),  # type: ignore[union-attr]
                w_max=w_max.detach().to(device=device, dtype=torch.float32),  # type: ignore[union-attr]
            )
        )
    problems = []
    if bad_format:
        shown = bad_format[:_SHOWN_KEYS]
        problems.append(f"{len(bad_format)} entries are not (w1, w_min, w_max) tensors, e.g. {shown}")
    if unmatched:
        problems.append(f"{len(unmatched)} keys match no tensor of this UNet, e.g. {unmatched[:_SHOWN_KEYS]}")
    if bad_shape:
        problems.append(f"{len(bad_shape)} tensors have another shape, e.g. {bad_shape[:_SHOWN_KEYS]}")
    if problems:
        raise InpaintPatchUnsupported(version, f"{path.name} is not a patch for this model ({'; '.join(problems)})")
    return tuple(diffs)


def load_inpaint_patch(
    folder: Path, version: str, unet: torch.nn.Module, *, device: torch.device | str | None = None
) -> InpaintPatch:
    """Read `folder/fooocus_inpaint_head.pth` and the version's patch, matched to `unet`'s layout.

    `version` is Fooocus's inpaint_engine ("v1", "v2.5", "v2.6"). The encoded diffs and the head
    are kept on `device` (default: the UNet's). Raises InpaintFilesMissing when a file is absent and
    InpaintPatchUnsupported when a file is unsafe, malformed, or made for another model shape.
    """
    if version not in PATCH_FILES:
        raise InpaintPatchUnsupported(version, f"unknown inpaint engine; known: {', '.join(PATCH_FILES)}")
    head_path, patch_path = Path(folder) / INPAINT_HEAD, Path(folder) / PATCH_FILES[version]
    missing = [p for p in (head_path, patch_path) if not p.is_file()]
    if missing:
        raise InpaintFilesMissing(version, missing)
    model = unwrap_unet(unet)
    target = torch.device(device) if device is not None else next(model.parameters()).device
    channels = int(model.config.block_out_channels[0])
    head = _read_head(head_path, version, channels).to(target)
    diffs = _read_diffs(patch_path, version, _unet_ldm_names(model), target)
    return InpaintPatch(version, head, diffs)
