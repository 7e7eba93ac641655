"""The feature model files the server fetches on first use (image prompts, describe, masks): each
with its place under models/, its URL, its approximate size and its licence.

What `fooocus-es models catalogue` prints. Sizes are approximate (the published files' sizes,
rounded; the download reports the real Content-Length). The Fooocus V2 expansion is not here on
purpose: it is CC BY-NC outside Fooocus and only ever user-installed.
"""

from __future__ import annotations

from typing import Final

import msgspec

from fooocus_es.engine.planning.image_prompt_files import (
    CLIP_VISION_FILE,
    CONTROL_FILES,
    FACE_DETECTOR_FILE,
    IMAGE_PROMPT_DOWNLOADS,
    IP_ADAPTER_FILES,
    IP_NEGATIVE_FILE,
)
from fooocus_es.engine.planning.tool_files import TOOL_DOWNLOADS, licence_of

_KB: Final = 1000
_MB: Final = 1000 * _KB


class CatalogueFile(msgspec.Struct, frozen=True, kw_only=True):
    path: str  # relative to models/
    url: str
    approx_bytes: int  # 0: a small file (a config, vocabulary or tokenizer, under a megabyte)
    licence: str
    use: str


_IMAGE_PROMPT_FILES: Final[dict[str, tuple[int, str, str]]] = {  # name -> (approx bytes, licence, use)
    CLIP_VISION_FILE: (1970 * _MB, "MIT (OpenCLIP LAION ViT-H-14)", "ImagePrompt, FaceSwap"),
    IP_ADAPTER_FILES["ImagePrompt"]: (1010 * _MB, "Apache-2.0 (h94/IP-Adapter)", "ImagePrompt"),
    IP_ADAPTER_FILES["FaceSwap"]: (1010 * _MB, "Apache-2.0 (h94/IP-Adapter)", "FaceSwap"),
    IP_NEGATIVE_FILE: (66 * _KB, "Fooocus (GPL-3.0 repository)", "ImagePrompt, FaceSwap"),
    CONTROL_FILES["PyraCanny"]: (396 * _MB, "Stability AI Control-LoRA licence", "PyraCanny"),
    CONTROL_FILES["CPDS"]: (396 * _MB, "none stated (Fooocus)", "CPDS"),
    FACE_DETECTOR_FILE: (104 * _MB, "MIT (facexlib)", "FaceSwap face crop"),
}
_TOOL_SIZES: Final[dict[str, int]] = {
    "model_base_caption_capfilt_large.pth": 896_081_425,
    "blip-image-captioning-base/model.safetensors": 990 * _MB,
    "wd-v1-4-moat-tagger-v2.onnx": 326 * _MB,
    "wd-v1-4-moat-tagger-v2.csv": 254 * _KB,
    "u2net.onnx": 176 * _MB,
    "u2netp.onnx": 4_600 * _KB,
    "u2net_human_seg.onnx": 176 * _MB,
    "u2net_cloth_seg.onnx": 176 * _MB,
    "silueta.onnx": 43 * _MB,
    "isnet-general-use.onnx": 179 * _MB,
    "isnet-anime.onnx": 176 * _MB,
    "grounding-dino-tiny/model.safetensors": 690 * _MB,
    "sam_vit_b_01ec64.pth": 375 * _MB,
    "sam_vit_l_0b3195.pth": 1250 * _MB,
    "sam_vit_h_4b8939.pth": 2560 * _MB,
}


def _tool_use(key: str) -> str:
    if key.startswith("blip") or key.startswith("model_base_caption"):
        return "describe-image Photo"
    if key.startswith("wd-v1-4"):
        return "describe-image Anime"
    if key.startswith("grounding-dino") or key.startswith("sam_"):
        return "generate_mask sam, enhance"
    return f"generate_mask {key.removesuffix('.onnx')}, enhance"


def catalogue_files() -> tuple[CatalogueFile, ...]:
    image_prompts = [
        CatalogueFile(path=f"{folder}/{name}", url=url, approx_bytes=size, licence=licence, use=use)
        for name, (folder, url) in IMAGE_PROMPT_DOWNLOADS.items()
        for size, licence, use in (_IMAGE_PROMPT_FILES[name],)
    ]
    tools = [
        CatalogueFile(
            path=f"{folder}/{key}", url=url, approx_bytes=_TOOL_SIZES.get(key, 0),
            licence=licence_of(key), use=_tool_use(key),
        )  # fmt: skip
        for key, (folder, url) in TOOL_DOWNLOADS.items()
    ]
    return (*image_prompts, *tools)
