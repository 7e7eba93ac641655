"""PyraCanny and CPDS Control-LoRAs for the tiny demo model, in Stability's Control-LoRA layout.

Like SAI's `control-lora-canny-rank128.safetensors` they hold LDM (cldm) names: each LoRA-targeted
layer as a `.up`/`.down` pair (rank 4 here, 128 there), every other tensor in full (biases, norms,
`input_hint_block.*`, `zero_convs.*`, `middle_block_out.*`), plus the `lora_controlnet` marker key.
They are built from `ControlNetModel.from_unet(demo UNet)`: every tensor perturbed, the deltas of the
LoRA-targeted weights cut to rank 4 by SVD, so the file describes that perturbed network exactly.
The zero convs are small random convs, not zeros, so the demo control visibly changes the UNet
output. Random and small, like the demo model: they change images, they teach nothing.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    import torch
    from diffusers import ControlNetModel

DEMO_CONTROL_LORAS: Final = ("control-lora-canny-rank128.safetensors", "fooocus_xl_cpds_128.safetensors")
DEMO_RANK: Final = 4
_DELTA_SCALE: Final = 0.05  # a weight delta ~5% of that tensor's spread, before the rank cut
_ZERO_CONV_SCALE: Final = 0.05  # the residual convs: strong enough to show, small enough to stay finite


def build_demo_control_lora(unet: torch.nn.Module, seed: int) -> tuple[dict[str, torch.Tensor], ControlNetModel]:
    """(the file's tensors in SAI Control-LoRA layout, the float32 ControlNet they describe on `unet`).

    `unet` gives the base weights (its peft adapters ignored). Same tensors for the same seed and
    base; the caller's RNG state is left untouched.
    """
    import torch
    from diffusers import ControlNetModel

    from fooocus_es.engine.models.control_models import (
        CONTROL_LORA_MARKER,
        clean_unet,
        controlnet_ldm_names,
        is_control_lora_target,
    )

    tensors: dict[str, torch.Tensor] = {}
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        net = ControlNetModel.from_unet(clean_unet(unet).float()).float().eval()
        ldm = controlnet_ldm_names(list(net.state_dict()), unet.config)
        for name, param in net.named_parameters():
            module, kind = name.rsplit(".", 1)
            if kind == "weight" and is_control_lora_target(module):
                up, down = _rank_cut(torch.randn_like(param) * (_DELTA_SCALE * float(param.std())), DEMO_RANK)
                param += (up.flatten(1) @ down.flatten(1)).reshape(param.shape)
                ldm_module = ldm[name].removesuffix(".weight")
                tensors[f"{ldm_module}.up"], tensors[f"{ldm_module}.down"] = up, down
                continue
            if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.")):
                param.copy_(torch.randn_like(param) * _ZERO_CONV_SCALE)  # from_unet zero-inits them
            else:
                param += torch.randn_like(param) * (_DELTA_SCALE * (float(param.std()) if param.numel() > 1 else 1.0))
            tensors[ldm[name]] = param.detach().clone()
    tensors[CONTROL_LORA_MARKER] = torch.ones(1)
    return tensors, net


def _rank_cut(delta: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best rank-`rank` factors of `delta`: up [out, r] and down [r, in] (convs: [out, r, 1, 1], [r, in, k, k])."""
    import torch

    u, s, vh = torch.linalg.svd(delta.flatten(1), full_matrices=False)
    up = (u[:, :rank] * s[:rank]).contiguous()
    down = vh[:rank].contiguous()
    if delta.ndim == 4:
        return up[:, :, None, None], down.reshape(rank, *delta.shape[1:])
    return up, down


def write_demo_control_loras(folder: Path, *, overwrite: bool = False) -> list[Path]:
    """Write the demo PyraCanny and CPDS Control-LoRAs into `folder` (Fooocus's controlnet folder); returns their paths.

    Built on the demo checkpoint's UNet. An existing file is left alone unless `overwrite` (a real
    Control-LoRA must never be replaced by a tiny one). Tensors depend only on the file name.
    """
    from fooocus_es.engine.demo.checkpoint import build_demo_models

    folder = Path(folder)
    paths = [folder / name for name in DEMO_CONTROL_LORAS]
    todo = [path for path in paths if overwrite or not path.exists()]
    if todo:
        unet = build_demo_models()["unet"]
        for path in todo:
            tensors, _ = build_demo_control_lora(unet, zlib.crc32(path.name.encode()))
            _save_atomic(tensors, path)
    return paths


def _save_atomic(tensors: dict[str, torch.Tensor], path: Path) -> Path:
    """save_file to a temp file, then rename: readers never see a half-written file."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        save_file({key: t.contiguous() for key, t in tensors.items()}, str(temp))
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
