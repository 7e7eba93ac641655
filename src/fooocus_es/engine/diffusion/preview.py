"""Latent -> small JPEG preview, cheap enough to run after every denoising step.

A VAE decode per step would cost more than the step itself; instead each latent pixel is mapped
to RGB by a fixed linear fit of SDXL's VAE (ComfyUI's `latent_formats.SDXL` factors and bias,
fitted on scaled latents, which is what diffusers' step callback hands us). The result is 1/8 of
the image's resolution, scaled up by whole factors with nearest-neighbour to stay crisp.
"""

from __future__ import annotations

import io
from typing import Final

import torch
from PIL import Image

# rows: latent channels 0..3; columns: R, G, B.
SDXL_LATENT_RGB: Final = (
    (0.3651, 0.4232, 0.4341),
    (-0.2533, -0.0042, 0.1068),
    (0.1076, 0.1111, -0.0362),
    (-0.3165, -0.2492, -0.2188),
)
SDXL_LATENT_RGB_BIAS: Final = (0.1084, -0.0175, -0.0011)
JPEG_QUALITY: Final = 80


def latent_preview_jpeg(latents: torch.Tensor, max_side: int = 256) -> bytes:
    """JPEG bytes of the first latent in `latents` (shape (B, 4, h, w) or (4, h, w)), at most `max_side` px."""
    latent = latents[0] if latents.ndim == 4 else latents
    pixels = _latent_to_rgb8(latent.detach())
    image = Image.fromarray(pixels.numpy(), "RGB")
    image = _fit(image, max_side)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def _latent_to_rgb8(latent: torch.Tensor) -> torch.Tensor:
    """(4, h, w) latent -> (h, w, 3) uint8 on the CPU."""
    factors = torch.tensor(SDXL_LATENT_RGB, dtype=torch.float32, device=latent.device)
    bias = torch.tensor(SDXL_LATENT_RGB_BIAS, dtype=torch.float32, device=latent.device)
    rgb = torch.einsum("chw,cr->hwr", latent.float(), factors) + bias  # roughly in [-1, 1]
    return ((rgb + 1.0) * 127.5).clamp(0, 255).to(torch.uint8).cpu()


def _fit(image: Image.Image, max_side: int) -> Image.Image:
    longest = max(image.size)
    if longest > max_side:  # only for huge images: shrink to fit
        scale = max_side / longest
        return image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), Image.BILINEAR)
    factor = max_side // longest
    if factor > 1:
        return image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    return image
