"""Model file names and folders that code without torch needs (admission, downloads, the API)."""

from __future__ import annotations

from typing import Final

UPSCALE_DIR: Final = "upscale_models"
DEFAULT_UPSCALER: Final = "fooocus_upscaler_s409985e5.bin"
# Fooocus modules/config.py downloading_upscale_model().
DEFAULT_UPSCALER_URL: Final = "https://huggingface.co/lllyasviel/misc/resolve/main/fooocus_upscaler_s409985e5.bin"
