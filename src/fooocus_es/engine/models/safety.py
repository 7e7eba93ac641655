"""The NSFW safety checker behind `black_out_nsfw`: flag output images and replace them with black ones.

The checker is diffusers' `StableDiffusionSafetyChecker` (a CLIP vision model compared against 17
concept embeddings) stored as a Hugging Face folder in `models/safety_checker/`:
`config.json` + `model.safetensors` for the model, `preprocessor_config.json` for its CLIP image
preprocessing. Without that folder, requests asking for `black_out_nsfw` are refused up front.

torch, diffusers and transformers are imported inside the functions: the API asks
`safety_checker_installed` on every request without paying for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from PIL import Image

if TYPE_CHECKING:
    import torch

SAFETY_CHECKER_DIR: Final = "safety_checker"  # under models/
SAFETY_CHECKER_FILES: Final = ("config.json", "model.safetensors", "preprocessor_config.json")


def safety_checker_folder(models_dir: Path) -> Path:
    return models_dir / SAFETY_CHECKER_DIR


def safety_checker_installed(models_dir: Path) -> bool:
    """Whether `models/safety_checker/` holds every file the checker loads from."""
    folder = safety_checker_folder(models_dir)
    return all((folder / name).is_file() for name in SAFETY_CHECKER_FILES)


class SafetyChecker:
    """A loaded checker: the CLIP model, its preprocessing, and where it runs."""

    def __init__(self, model: torch.nn.Module, processor: object, device: str, dtype: torch.dtype) -> None:
        self.model = model
        self.processor = processor
        self.device = device
        self.dtype = dtype

    @classmethod
    def load(cls, folder: Path, device: str, dtype: torch.dtype) -> SafetyChecker:
        """Load offline from a Hugging Face folder; raises what transformers raises for a broken one."""
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        model = StableDiffusionSafetyChecker.from_pretrained(folder, dtype=dtype, local_files_only=True)
        processor = CLIPImageProcessor.from_pretrained(folder, local_files_only=True)
        return cls(model.to(device).eval(), processor, device, dtype)

    def check(self, images: list[Image.Image]) -> list[bool]:
        """One flag per image, True where the checker finds NSFW content."""
        if not images:
            return []
        import numpy as np
        import torch

        pixels = self.processor(images=[image.convert("RGB") for image in images], return_tensors="pt")
        clip_input = pixels["pixel_values"].to(device=self.device, dtype=self.dtype)
        # forward() blacks out the arrays it is given in place; tiny stand-ins spare copying the images.
        stand_ins = [np.zeros((1, 1, 3)) for _ in images]
        with torch.inference_mode():
            _, flags = self.model(clip_input=clip_input, images=stand_ins)
        return [bool(flag) for flag in flags]

    def black_out(self, images: list[Image.Image]) -> tuple[list[Image.Image], list[bool]]:
        """The images with every flagged one replaced by a black image of its size and mode, and the flags."""
        flags = self.check(images)
        pairs = zip(images, flags, strict=True)
        kept = [Image.new(image.mode, image.size, "black") if flag else image for image, flag in pairs]
        return kept, flags
