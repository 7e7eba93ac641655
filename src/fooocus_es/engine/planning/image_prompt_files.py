"""Image prompt model files (issue 13; Fooocus modules/config.py and extras/*): names, folders, URLs.

Pure data in the planning layer: admission checks them, the catalogue downloads them, the engine loads
them. The demo model generates tiny ones under the same names.
"""

from __future__ import annotations

from typing import Final

CLIP_VISION_DIR: Final = "clip_vision"
CONTROLNET_DIR: Final = "controlnet"
CLIP_VISION_FILE: Final = "clip_vision_vit_h.safetensors"
IP_NEGATIVE_FILE: Final = "fooocus_ip_negative.safetensors"
IP_ADAPTER_FILES: Final = {
    "ImagePrompt": "ip-adapter-plus_sdxl_vit-h.bin",
    "FaceSwap": "ip-adapter-plus-face_sdxl_vit-h.bin",
}
CONTROL_FILES: Final = {
    "PyraCanny": "control-lora-canny-rank128.safetensors",
    "CPDS": "fooocus_xl_cpds_128.safetensors",
}
FACE_DETECTOR_FILE: Final = "detection_Resnet50_Final.pth"
_MISC: Final = "https://huggingface.co/lllyasviel/misc/resolve/main/"
IMAGE_PROMPT_DOWNLOADS: Final[dict[str, tuple[str, str]]] = {  # file -> (models sub-folder, URL)
    CLIP_VISION_FILE: (CLIP_VISION_DIR, _MISC + CLIP_VISION_FILE),
    IP_NEGATIVE_FILE: (CONTROLNET_DIR, _MISC + IP_NEGATIVE_FILE),
    **{name: (CONTROLNET_DIR, _MISC + name) for name in (*IP_ADAPTER_FILES.values(), *CONTROL_FILES.values())},
    FACE_DETECTOR_FILE: (
        CONTROLNET_DIR,
        "https://github.com/xinntao/facexlib/releases/download/v0.1.0/" + FACE_DETECTOR_FILE,
    ),
}


def image_prompt_files(cn_type: str, *, skip_preprocessor: bool = False) -> tuple[str, ...]:
    """The files one image prompt of `cn_type` needs (FaceSwap's face detector only when it crops)."""
    if cn_type in CONTROL_FILES:
        return (CONTROL_FILES[cn_type],)
    face = (FACE_DETECTOR_FILE,) if cn_type == "FaceSwap" and not skip_preprocessor else ()
    return (CLIP_VISION_FILE, IP_ADAPTER_FILES[cn_type], IP_NEGATIVE_FILE, *face)
