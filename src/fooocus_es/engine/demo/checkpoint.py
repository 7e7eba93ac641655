"""The demo checkpoint: a tiny random-weight SDXL, written in the layout users' checkpoints have.

It lets the whole server run offline on a CPU in seconds (its images are noise-like by design) and
it goes through exactly the loader real checkpoints go through: an LDM single file read by
`from_single_file` with a shipped config folder.

torch and diffusers are imported inside the functions: the API names DEMO_CHECKPOINT without
paying for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Final

from fooocus_es.engine.planning.demo_names import DEMO_CHECKPOINT

if TYPE_CHECKING:
    import torch

TINY_CONFIG_DIR: Final = Path(__file__).resolve().parents[1] / "models" / "sdxl" / "tiny"
_SEED: Final = 20240229


def build_demo_models(config_dir: Path = TINY_CONFIG_DIR) -> dict[str, torch.nn.Module]:
    """The four tiny models, float32 on the CPU, with the same random weights on every run.

    Each model gets its own seed so that its weights do not depend on the others' sizes, and the
    caller's global RNG state is left untouched.
    """
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    builders = {
        "unet": lambda: UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config_dir / "unet")),
        "vae": lambda: AutoencoderKL.from_config(AutoencoderKL.load_config(config_dir / "vae")),
        "text_encoder": lambda: CLIPTextModel(CLIPTextConfig.from_pretrained(config_dir / "text_encoder")),
        "text_encoder_2": lambda: CLIPTextModelWithProjection(
            CLIPTextConfig.from_pretrained(config_dir / "text_encoder_2")
        ),
    }
    models: dict[str, torch.nn.Module] = {}
    with torch.random.fork_rng(devices=[]):
        for offset, (name, build) in enumerate(builders.items()):
            torch.manual_seed(_SEED + offset)
            models[name] = build().float().eval()  # float(), not to(dtype=): diffusers warns on the latter
    return models


def ensure_demo_checkpoint(checkpoints_dir: Path) -> Path:
    """Write `checkpoints_dir/fooocus_es_demo.safetensors` unless it is already there; returns its path."""
    from fooocus_es.engine.models.ldm_convert import save_checkpoint, sdxl_to_ldm

    path = checkpoints_dir / DEMO_CHECKPOINT
    if path.exists():
        return path
    return save_checkpoint(sdxl_to_ldm(**build_demo_models()), path)
