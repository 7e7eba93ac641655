"""The demo fixtures' file names, which the planning rules map requests onto.

The files themselves are written by `engine/demo/` (torch); the names live here so that the rules
stay pure and never import the layer that builds the fixtures.
"""

from __future__ import annotations

from typing import Final

DEMO_CHECKPOINT: Final = "fooocus_es_demo.safetensors"

# The demo checkpoint's own tiny performance LoRAs (engine/demo/loras.py): a real file named like
# Fooocus's would be loaded onto a model it was not made for.
DEMO_PERFORMANCE_LORAS: Final[dict[str, str]] = {
    "sdxl_lcm_lora.safetensors": "fooocus_es_demo_lcm_lora.safetensors",
    "sdxl_lightning_4step_lora.safetensors": "fooocus_es_demo_lightning_lora.safetensors",
    "sdxl_hyper_sd_4step_lora.safetensors": "fooocus_es_demo_hyper_sd_lora.safetensors",
}
