"""describe-image's model files (Fooocus extras/interrogate.py, extras/wd14tagger.py): names, folders, URLs."""

from __future__ import annotations

from typing import Final

CLIP_VISION_DIR: Final = "clip_vision"
_MISC: Final = "https://huggingface.co/lllyasviel/misc/resolve/main/"
BLIP_FILE: Final = "model_base_caption_capfilt_large.pth"
WD14_FILES: Final = ("wd-v1-4-moat-tagger-v2.onnx", "wd-v1-4-moat-tagger-v2.csv")
DESCRIBE_DOWNLOADS: Final[dict[str, tuple[str, str]]] = {
    name: (CLIP_VISION_DIR, _MISC + name) for name in (BLIP_FILE, *WD14_FILES)
}
DESCRIBE_LICENCES: Final[dict[str, str]] = {BLIP_FILE: "BSD-3-Clause", **dict.fromkeys(WD14_FILES, "Apache-2.0")}


def describe_files(image_type: str) -> tuple[str, ...]:
    return (BLIP_FILE,) if image_type == "Photo" else WD14_FILES
