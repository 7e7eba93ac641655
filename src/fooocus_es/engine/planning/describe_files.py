"""describe-image's model files (Fooocus extras/interrogate.py, extras/wd14tagger.py): names, folders, URLs.

Pure data, like mask_files: admission checks them, the catalogue downloads them, the engine loads
them, the demo model writes tiny ones under the same names (in a `demo/` sub-folder).

Everything lives in `models/clip_vision/`, Fooocus's folder for both tools:
- Photo (BLIP): the HF-format `Salesforce/blip-image-captioning-base` folder, each file an entry of
  its own ("blip-image-captioning-base/config.json") so the single-URL downloader fetches the bundle
  unchanged. It is the downloadable complete set: Fooocus's `model_base_caption_capfilt_large.pth`
  (Salesforce BLIP's original names) also loads, but it carries no tokenizer, and bert-base-uncased's
  vocabulary is not on disk offline, so the `.pth` reads the tokenizer files of the HF folder.
  The folder wins when its weights are there.
- Anime (WD14): `wd-v1-4-moat-tagger-v2.onnx` and its tag `.csv`, Fooocus's names and mirror.
"""

from __future__ import annotations

from typing import Final

CLIP_VISION_DIR: Final = "clip_vision"

BLIP_FILE: Final = "model_base_caption_capfilt_large.pth"  # Fooocus's name; Salesforce BLIP's key names
BLIP_FOLDER: Final = "blip-image-captioning-base"
BLIP_LICENCE: Final = "BSD-3-Clause (Salesforce BLIP)"
_MISC_URL: Final = "https://huggingface.co/lllyasviel/misc/resolve/main/"
_BLIP_HF_URL: Final = "https://huggingface.co/Salesforce/blip-image-captioning-base/resolve/main/"
_BLIP_HF_FILES: Final = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)
# What the loader cannot do without: the folder's weights (else the .pth), and its tokenizer either way.
BLIP_WEIGHTS_REQUIRED: Final = ("config.json", "model.safetensors")
BLIP_TOKENIZER_REQUIRED: Final = ("tokenizer_config.json",)
# (path relative to models/clip_vision/, URL): the files from_pretrained reads.
BLIP_BUNDLE: Final[tuple[tuple[str, str], ...]] = tuple(
    (f"{BLIP_FOLDER}/{name}", _BLIP_HF_URL + name) for name in _BLIP_HF_FILES
)

WD14_MODEL: Final = "wd-v1-4-moat-tagger-v2"
WD14_ONNX: Final = f"{WD14_MODEL}.onnx"
WD14_CSV: Final = f"{WD14_MODEL}.csv"
WD14_LICENCE: Final = "Apache-2.0 (SmilingWolf wd-v1-4-moat-tagger-v2)"

DESCRIBE_DOWNLOADS: Final[dict[str, tuple[str, str]]] = {  # file (relative to its folder) -> (models sub-folder, URL)
    BLIP_FILE: (CLIP_VISION_DIR, _MISC_URL + BLIP_FILE),
    **{path: (CLIP_VISION_DIR, url) for path, url in BLIP_BUNDLE},
    WD14_ONNX: (CLIP_VISION_DIR, _MISC_URL + WD14_ONNX),
    WD14_CSV: (CLIP_VISION_DIR, _MISC_URL + WD14_CSV),
}


def describe_files(image_type: str) -> tuple[str, ...]:
    """The DESCRIBE_DOWNLOADS keys one describe-image call needs (Photo: the HF bundle, complete on its own)."""
    if image_type == "Anime":
        return (WD14_ONNX, WD14_CSV)
    return tuple(path for path, _url in BLIP_BUNDLE)
