"""PyraCanny / CPDS control models: SAI Control-LoRAs merged onto the running base UNet, and full ControlNets.

A Control-LoRA (a file with a `lora_controlnet` key) is a ControlNet *relative to a base UNet*: its
`.up`/`.down` pairs add `up @ down` to the base's weights and every other tensor it holds (biases,
norms, the hint encoder, the zero convs) replaces the base's. We merge it into a plain
`ControlNetModel` ourselves: diffusers' `load_lora_adapter` reads these files too, but it leaves peft
wrappers and silently drops the biases of the LoRA-targeted layers (image-prompts.md §0.2).

The ControlNet's base part is the UNet's encoder half with the UNet's own names (conv_in, time and
add embeddings, down and mid blocks: what `ControlNetModel.from_unet` copies). Instead of letting
`from_unet` randomly initialise a full-size network and copy into it, the skeleton is built on the
meta device and the finished tensors are assigned, so a real SDXL pays for one ControlNet's memory
and no random init. The UNet's weights are read without its peft adapters (`base_state_dict`), so
LoRAs active on the shared UNet never leak into the ControlNet.

Full ControlNets are accepted in diffusers names (`controlnet_cond_embedding.*`) or LDM names
(`zero_convs.*`, `input_hint_block.*`, optionally under `control_model.`), laid out like the base
UNet. Nothing here downloads: every config is derived from the base UNet or read from a
`config.json` beside the file.
"""

from __future__ import annotations

import re
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from fooocus_es.engine.models.ldm_convert import unet_to_ldm

Tensor = torch.Tensor
StateDict = dict[str, Tensor]

CONTROL_LORA_MARKER: Final = "lora_controlnet"
_LDM_CONTROL_PREFIX: Final = "control_model."
# Tensors a ControlNet has and a UNet does not: they must come from the file.
_CONTROLNET_ONLY: Final = ("controlnet_cond_embedding.", "controlnet_down_blocks.", "controlnet_mid_block.")
_LORA_A: Final = ".lora_A.weight"
_LORA_B: Final = ".lora_B.weight"


class ControlModelError(ValueError):
    """A control model file that cannot be used; the message names the file and says why."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        super().__init__(f"control model {Path(path).name!r} {detail}")


# -- the base UNet without its adapters -----------------------------------------------------------
def base_state_dict(unet: torch.nn.Module) -> StateDict:
    """The UNet's own weights in plain diffusers names: peft adapter tensors (`lora_*`) dropped,
    `.base_layer` stripped. peft never fuses here (loras.py), so these are the unmerged base weights."""
    state: StateDict = {}
    for key, tensor in unet.state_dict().items():
        parts = key.split(".")
        if any(part.startswith("lora_") for part in parts):
            continue
        state[".".join(part for part in parts if part != "base_layer")] = tensor
    return state


def clean_unet(unet: torch.nn.Module) -> UNet2DConditionModel:
    """A fresh `UNet2DConditionModel` with copies of `unet`'s base weights and no peft adapters.

    `ControlNetModel.from_unet` fails on peft-wrapped UNets; this copy has plain layers. Built on the
    meta device and then given the copied tensors, so it costs one copy and no random init.
    """
    state = {key: tensor.detach().clone() for key, tensor in base_state_dict(unet).items()}
    with torch.device("meta"):
        clean = UNet2DConditionModel.from_config(unet.config)
    clean.load_state_dict(state, strict=True, assign=True)
    _check_materialised(clean)
    return clean.eval()


# -- diffusers <-> LDM names for a ControlNet -----------------------------------------------------
def controlnet_ldm_names(keys: list[str], unet_config: Mapping[str, Any]) -> dict[str, str]:
    """diffusers ControlNet tensor name -> LDM (cldm) name, for a ControlNet laid out like `unet_config`'s UNet.

    The encoder half shares the UNet's names (ldm_convert's table); the hint encoder's convs are
    `input_hint_block.{0,2,..}` (SiLUs sit between them in LDM's Sequential), the zero convs
    `zero_convs.i.0`, the mid one `middle_block_out.0`.
    """
    blocks = {int(key.split(".")[2]) for key in keys if key.startswith("controlnet_cond_embedding.blocks.")}
    conv_out = 2 * (len(blocks) + 1)
    names: dict[str, str] = {}
    unet_part = [key for key in keys if not key.startswith(_CONTROLNET_ONLY)]
    names.update(zip(unet_part, unet_to_ldm(dict.fromkeys(unet_part), unet_config), strict=True))  # type: ignore[arg-type]
    for key in keys:
        if key.startswith("controlnet_cond_embedding."):
            rest = key.removeprefix("controlnet_cond_embedding.")
            if rest.startswith("conv_in."):
                names[key] = "input_hint_block.0." + rest.removeprefix("conv_in.")
            elif rest.startswith("conv_out."):
                names[key] = f"input_hint_block.{conv_out}." + rest.removeprefix("conv_out.")
            else:
                _, index, kind = rest.split(".")
                names[key] = f"input_hint_block.{2 * int(index) + 2}.{kind}"
        elif key.startswith("controlnet_down_blocks."):
            _, index, kind = key.split(".")
            names[key] = f"zero_convs.{index}.0.{kind}"
        elif key.startswith("controlnet_mid_block."):
            names[key] = "middle_block_out.0." + key.split(".")[-1]
    return names


_LORA_TARGET: Final = re.compile(
    r"(?:^conv_in|\.(?:to_[qkv]|to_out\.0|ff\.net\.0\.proj|ff\.net\.2|proj_in|proj_out|conv|conv1|conv2|conv_shortcut"
    r"|linear_1|linear_2|time_emb_proj))$"
)


def is_control_lora_target(module_name: str) -> bool:
    """Whether a ControlNet module (diffusers name) is one SAI Control-LoRAs store as an up/down pair:
    the layers diffusers' Control-LoRA key table converts to lora_A/lora_B."""
    return not module_name.startswith(_CONTROLNET_ONLY) and _LORA_TARGET.search(module_name) is not None


# -- loading ---------------------------------------------------------------------------------------
def load_control_model(path: Path, base_unet: torch.nn.Module, device: str, dtype: torch.dtype) -> ControlNetModel:
    """The ControlNet in `path` for `base_unet`, in eval mode on `device`/`dtype`.

    Control-LoRAs are merged onto `base_unet`'s base weights (its peft adapters ignored); full
    ControlNets must fit its layout. Raises ControlModelError (a ValueError naming the file) for
    anything else: not a control model, unreadable, or made for another base model.
    """
    path = Path(path)
    raw = _read_tensors(path)
    ldm = _strip_ldm_prefix(raw)
    merged: frozenset[str] = frozenset()
    if CONTROL_LORA_MARKER in raw:
        state, skeleton, merged = _control_lora_state(path, raw, base_unet, device, dtype)
    elif any(key.startswith("controlnet_cond_embedding.") for key in raw):
        state, skeleton = raw, _full_skeleton(path, raw, base_unet)
    elif any(key.startswith(("zero_convs.", "input_hint_block.")) for key in ldm):
        state, skeleton = _ldm_full_state(path, ldm, base_unet)
    else:
        raise ControlModelError(
            path, "is not a control model: neither a Control-LoRA (no 'lora_controlnet' key) nor a full ControlNet "
            "(no controlnet_cond_embedding.* / input_hint_block.* / zero_convs.* tensors)"
        )  # fmt: skip
    _assign(path, skeleton, state, device, dtype, fresh=merged)
    return skeleton.eval()


def _read_tensors(path: Path) -> StateDict:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # safetensors and pickle raise their own types for damaged files
        raise ControlModelError(path, f"is not a readable tensor file ({type(exc).__name__}: {exc})") from exc
    if isinstance(loaded, Mapping) and isinstance(loaded.get("state_dict"), Mapping):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ControlModelError(path, "is not a control model: it does not hold a flat dict of tensors")
    return dict(loaded)


def _strip_ldm_prefix(raw: StateDict) -> StateDict:
    if any(key.startswith(_LDM_CONTROL_PREFIX) for key in raw):
        return {
            key.removeprefix(_LDM_CONTROL_PREFIX): t for key, t in raw.items() if key.startswith(_LDM_CONTROL_PREFIX)
        }
    return raw


def _skeleton(unet_config: Mapping[str, Any], **overrides: Any) -> ControlNetModel:
    """from_unet's ControlNet for this UNet layout, on the meta device (no memory, no random init)."""
    with torch.device("meta"):
        shell = UNet2DConditionModel.from_config(unet_config)
        return ControlNetModel.from_unet(shell, load_weights_from_unet=False, **overrides)


def _control_lora_state(
    path: Path, raw: StateDict, base_unet: torch.nn.Module, device: str, dtype: torch.dtype
) -> tuple[StateDict, ControlNetModel, frozenset[str]]:
    """The merged ControlNet tensors (base + up@down for LoRA pairs, the file's other tensors as they are),
    its skeleton, and the names of the merged tensors (already new tensors on device/dtype)."""
    from diffusers.utils import convert_sai_sd_control_lora_state_dict_to_peft

    skeleton = _skeleton(base_unet.config)
    wanted = skeleton.state_dict()
    try:
        converted = convert_sai_sd_control_lora_state_dict_to_peft(
            {key: t for key, t in raw.items() if key != CONTROL_LORA_MARKER}
        )
    except Exception as exc:  # the converter assumes SD/SDXL block numbering
        raise ControlModelError(path, f"is not a Control-LoRA for this model ({type(exc).__name__}: {exc})") from exc
    absent = sorted(key for key, t in converted.items() if t is None)
    if absent:
        raise ControlModelError(path, f"is an incomplete Control-LoRA: it lacks {', '.join(absent[:3])}")
    base = base_state_dict(base_unet)
    state: StateDict = {key: base[key] for key in wanted if key in base}
    merged: set[str] = set()
    for key, tensor in converted.items():
        if key.endswith(_LORA_B):
            continue
        if key.endswith(_LORA_A):
            stem = key.removesuffix(_LORA_A)
            up = converted.get(stem + _LORA_B)
            target = stem + ".weight"
            if up is None or target not in state:
                raise ControlModelError(path, f"does not fit this model: no base weight for the LoRA pair {stem}")
            state[target] = _merge(path, target, state[target], up, tensor, device).to(dtype)
            merged.add(target)
        else:
            state[key] = tensor
            merged.discard(key)
    return state, skeleton, frozenset(merged)


def _merge(path: Path, name: str, weight: Tensor, up: Tensor, down: Tensor, device: str) -> Tensor:
    """weight + up @ down in float32 on `device` (convs: up [out, r, 1, 1], down [r, in, k, k]).

    The caller casts each result at once, so a real SDXL never holds a float32 copy of the whole net.
    """
    up32, down32 = up.to(device, torch.float32).flatten(1), down.to(device, torch.float32).flatten(1)
    if up32.shape[1] != down32.shape[0] or up32.shape[0] * down32.shape[1] != weight.numel():
        raise ControlModelError(
            path, f"does not fit this model: {name} is {list(weight.shape)} here but its LoRA pair gives "
            f"{[up32.shape[0], down32.shape[1]]} (a Control-LoRA for another base model?)"
        )  # fmt: skip
    return weight.to(device, torch.float32) + (up32 @ down32).reshape(weight.shape)


def _hint_layout(convs: list[Tensor]) -> dict[str, Any]:
    """from_unet's hint-encoder arguments from its convs in order (conv_in, blocks..., conv_out).

    The blocks come in pairs (same width, then a stride-2 widening), so the widths are conv_in's and
    each second block's outputs.
    """
    if len(convs) < 2 or len(convs) % 2:
        return {}
    conv_in, blocks = convs[0], convs[1:-1]
    widths = [conv_in.shape[0], *(block.shape[0] for block in blocks[1::2])]
    return {"conditioning_channels": int(conv_in.shape[1]), "conditioning_embedding_out_channels": tuple(widths)}


def _full_skeleton(path: Path, state: StateDict, base_unet: torch.nn.Module) -> ControlNetModel:
    """A diffusers-format ControlNet's skeleton: its own config.json if one sits beside it, else the base's layout."""
    config_file = path.parent / "config.json"
    if config_file.is_file():
        config = ControlNetModel.load_config(path.parent)
        if config.get("_class_name") == "ControlNetModel":
            with torch.device("meta"):
                return ControlNetModel.from_config(config)
    blocks = sorted({int(key.split(".")[2]) for key in state if key.startswith("controlnet_cond_embedding.blocks.")})
    convs = [state.get("controlnet_cond_embedding.conv_in.weight")]
    convs += [state.get(f"controlnet_cond_embedding.blocks.{i}.weight") for i in blocks]
    convs += [state.get("controlnet_cond_embedding.conv_out.weight")]
    if any(conv is None for conv in convs):
        raise ControlModelError(path, "is an incomplete ControlNet: its hint encoder lacks tensors")
    return _skeleton(base_unet.config, **_hint_layout(convs))  # type: ignore[arg-type]


def _ldm_full_state(path: Path, ldm: StateDict, base_unet: torch.nn.Module) -> tuple[StateDict, ControlNetModel]:
    """An LDM (cldm) ControlNet renamed to diffusers names by inverting `controlnet_ldm_names`."""
    hint = sorted(
        {int(key.split(".")[1]) for key in ldm if key.startswith("input_hint_block.") and key.endswith(".weight")}
    )
    skeleton = _skeleton(base_unet.config, **_hint_layout([ldm[f"input_hint_block.{i}.weight"] for i in hint]))
    to_diffusers = {
        ldm_name: key for key, ldm_name in controlnet_ldm_names(list(skeleton.state_dict()), base_unet.config).items()
    }
    unknown = sorted(key for key in ldm if key not in to_diffusers)
    if unknown:
        raise ControlModelError(
            path,
            f"does not fit this model: {len(unknown)} LDM tensors have no place in it, e.g. {', '.join(unknown[:3])}",
        )
    return {to_diffusers[key]: t for key, t in ldm.items()}, skeleton


def _assign(
    path: Path,
    skeleton: ControlNetModel,
    state: StateDict,
    device: str,
    dtype: torch.dtype,
    fresh: frozenset[str] = frozenset(),
) -> None:
    """Give the meta skeleton its tensors, every one of its shape, on device/dtype.

    Each is copied (nothing shared with the base UNet or the file's dict) except those named in
    `fresh`, made for this model already.
    """
    expected = skeleton.state_dict()
    unexpected = sorted(key for key in state if key not in expected)
    missing = sorted(key for key in expected if key not in state)
    wrong = [key for key in expected if key in state and tuple(state[key].shape) != tuple(expected[key].shape)]
    problems = []
    if missing:
        problems.append(f"lacks {len(missing)} tensors (e.g. {', '.join(missing[:3])})")
    if unexpected:
        problems.append(f"has {len(unexpected)} tensors this model has no place for (e.g. {', '.join(unexpected[:3])})")
    if wrong:
        key = wrong[0]
        problems.append(
            f"has {len(wrong)} tensors of other shapes (e.g. {key} is {list(state[key].shape)} in the file, "
            f"{list(expected[key].shape)} here)"
        )
    if problems:
        raise ControlModelError(path, "does not fit this base model: it " + "; it ".join(problems))
    tensors = {key: state[key] if key in fresh else _own_copy(state[key], device, dtype) for key in expected}
    skeleton.load_state_dict(tensors, strict=True, assign=True)
    _check_materialised(skeleton)


def _own_copy(tensor: Tensor, device: str, dtype: torch.dtype) -> Tensor:
    """`tensor` on device/dtype, never sharing storage with the base UNet or the file."""
    moved = tensor.to(device=device, dtype=dtype)
    return moved.clone() if moved is tensor else moved


def _check_materialised(model: torch.nn.Module) -> None:
    """assign=True leaves non-persistent buffers on the meta device; none of these models has any."""
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{type(model).__name__} kept meta tensors after loading: {', '.join(left[:3])}")


# -- cache ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _CacheEntry:
    base: weakref.ref[torch.nn.Module]
    model: ControlNetModel


class ControlModelCache:
    """The last `max_entries` control models of one device, per (file version, base UNet).

    Keyed on the file's resolved path, size and mtime (a replaced file loads anew) and on the base
    UNet's identity (held weakly, so a dropped checkpoint is not kept alive). Least recently used
    entries go first, before a new one loads, so at most `max_entries` exist at any time.
    Runner-thread only, like the model cache: there is no lock.
    """

    def __init__(self, device: str, dtype: torch.dtype, max_entries: int = 2) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.device, self.dtype, self.max_entries = device, dtype, max_entries
        self._entries: OrderedDict[tuple[Any, ...], _CacheEntry] = OrderedDict()

    def get(self, path: Path, base_unet: torch.nn.Module) -> ControlNetModel:
        resolved = Path(path).resolve()
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns, id(base_unet))
        entry = self._entries.get(key)
        if entry is not None and entry.base() is base_unet:
            self._entries.move_to_end(key)
            return entry.model
        self._entries.pop(key, None)  # a reused id of a collected UNet
        while len(self._entries) >= self.max_entries:
            self._entries.popitem(last=False)
        model = load_control_model(resolved, base_unet, self.device, self.dtype)
        self._entries[key] = _CacheEntry(weakref.ref(base_unet), model)
        return model

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
