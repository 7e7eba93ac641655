"""Inpaint engine files for the tiny demo model, in the format of `lllyasviel/fooocus_inpaint`.

`fooocus_inpaint_head.pth` is `{"head": Tensor[C, 5, 3, 3]}` (C = the demo UNet's conv_in width,
`block_out_channels[0]`, where Fooocus's real head has 320) and the `.fooocus.patch` is a pickled
dict `{LDM key: (w1 uint8, w_min, w_max)}` over every tensor of the demo UNet, so the demo runs the
same loading and patching path as a real SDXL. Like the demo model they are random and small: they
change the output, they teach the model nothing. Same bytes' worth of tensors on every run.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import Any, Final

from fooocus_es.engine.demo.checkpoint import TINY_CONFIG_DIR
from fooocus_es.engine.diffusion.inpaint_patch import INPAINT_HEAD, LDM_UNET_PREFIX, PATCH_FILES

_HEAD_SCALE: Final = 0.02  # head weights ~N(0, 0.02^2): a visible feature, finite images
_DIFF_SCALE: Final = 0.01  # each weight moves by at most 0.01


def write_demo_inpaint_files(folder: Path, version: str = "v2.6", *, overwrite: bool = False) -> list[Path]:
    """Write the demo head and `version`'s demo patch into `folder`; returns [head, patch].

    An existing file is left alone unless `overwrite` (a real Fooocus head must never be replaced
    by a tiny one). Tensors depend only on the file name.
    """
    import torch
    from diffusers import UNet2DConditionModel

    from fooocus_es.engine.models.ldm_convert import unet_to_ldm

    if version not in PATCH_FILES:
        raise ValueError(f"unknown inpaint engine {version!r}; known: {', '.join(PATCH_FILES)}")
    config = UNet2DConditionModel.load_config(TINY_CONFIG_DIR / "unet")
    with torch.device("meta"):
        skeleton = UNet2DConditionModel.from_config(config)
    shapes = {name: p.shape for name, p in skeleton.named_parameters()}
    folder = Path(folder)
    head_path, patch_path = folder / INPAINT_HEAD, folder / PATCH_FILES[version]

    if overwrite or not head_path.exists():
        generator = torch.Generator().manual_seed(zlib.crc32(INPAINT_HEAD.encode()))
        channels = int(config["block_out_channels"][0])
        head = torch.randn(channels, 5, 3, 3, generator=generator) * _HEAD_SCALE
        _save_atomic({"head": head}, head_path)

    if overwrite or not patch_path.exists():
        generator = torch.Generator().manual_seed(zlib.crc32(PATCH_FILES[version].encode()))
        ldm_names = unet_to_ldm(dict.fromkeys(shapes), skeleton.config)  # type: ignore[arg-type]
        patch: dict[str, tuple[Any, Any, Any]] = {}
        for ldm_key, shape in zip(ldm_names, shapes.values(), strict=True):
            w1 = torch.randint(0, 256, tuple(shape), generator=generator, dtype=torch.uint8)
            patch[LDM_UNET_PREFIX + ldm_key] = (w1, torch.tensor(-_DIFF_SCALE), torch.tensor(_DIFF_SCALE))
        _save_atomic(patch, patch_path)
    return [head_path, patch_path]


def _save_atomic(obj: Any, path: Path) -> Path:
    """torch.save to a temp file, then rename: readers never see a half-written file."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
