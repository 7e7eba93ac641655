"""generate_mask's model files (Fooocus extras/inpaint_mask.py, rembg's sessions): names, folders, URLs.

Pure data, like image_prompt_files: admission checks them, the catalogue downloads them, the engine
loads them, the demo model writes tiny ones under the same names (in a `demo/` sub-folder).

Folders:
- rembg's ONNX files go to `models/rembg/`. Fooocus never manages them: rembg downloads them itself
  into `~/.u2net` (or $U2NET_HOME), outside Fooocus's models tree. A folder of our own under
  models/ keeps every file under the one models dir the catalogue, admission and `--models-dir` know.
- GroundingDINO is the HF-format conversion of Fooocus's `groundingdino_swint_ogc.pth`, a folder of
  files in `models/inpaint/` (Fooocus's folder for the .pth). Each file is an entry of its own
  ("grounding-dino-tiny/config.json"), so the single-URL downloader fetches the bundle unchanged.
- SAM stays Meta's `.pth` in `models/sam/`, Fooocus's names and mirror.
"""

from __future__ import annotations

from typing import Final

REMBG_DIR: Final = "rembg"
INPAINT_DIR: Final = "inpaint"
SAM_DIR: Final = "sam"

# rembg session name -> md5 prefix rembg v2.0.57 pins for the download (the first 8 hex digits).
REMBG_MD5_PREFIXES: Final[dict[str, str]] = {
    "u2net": "60024c5c",
    "u2netp": "8e83ca70",
    "u2net_human_seg": "c09ddc2e",
    "u2net_cloth_seg": "2434d1f3",
    "silueta": "55e59e0d",
    "isnet-general-use": "fc16ebd8",
    "isnet-anime": "6f184e75",
}
REMBG_MODELS: Final[tuple[str, ...]] = tuple(REMBG_MD5_PREFIXES)
REMBG_LICENCE: Final = "rembg MIT (the sessions); U²-Net and DIS (IS-Net) weights Apache-2.0"
_REMBG_URL: Final = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/"


def rembg_file(model: str) -> str:
    """`u2net` -> `u2net.onnx` (rembg's release asset name, also ours)."""
    return f"{model}.onnx"


GROUNDING_DINO_FOLDER: Final = "grounding-dino-tiny"  # IDEA-Research/grounding-dino-tiny = SwinT-OGC
GROUNDING_DINO_LICENCE: Final = "Apache-2.0"
_DINO_URL: Final = "https://huggingface.co/IDEA-Research/grounding-dino-tiny/resolve/main/"
_DINO_FILES: Final = (
    "config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
)
# The files the loader cannot do without (the real repo also has vocab.txt and the others listed).
GROUNDING_DINO_REQUIRED: Final = ("config.json", "model.safetensors", "tokenizer_config.json")
# (path relative to models/inpaint/, URL): the files from_pretrained reads.
GROUNDING_DINO_BUNDLE: Final[tuple[tuple[str, str], ...]] = tuple(
    (f"{GROUNDING_DINO_FOLDER}/{name}", _DINO_URL + name) for name in _DINO_FILES
)

SAM_FILES: Final[dict[str, str]] = {
    "vit_b": "sam_vit_b_01ec64.pth",
    "vit_l": "sam_vit_l_0b3195.pth",
    "vit_h": "sam_vit_h_4b8939.pth",
}
SAM_LICENCE: Final = "Apache-2.0 (Meta segment-anything)"
_SAM_URL: Final = "https://huggingface.co/mashb1t/misc/resolve/main/"

MASK_DOWNLOADS: Final[dict[str, tuple[str, str]]] = {  # file (relative to its folder) -> (models sub-folder, URL)
    **{rembg_file(model): (REMBG_DIR, _REMBG_URL + rembg_file(model)) for model in REMBG_MODELS},
    **{path: (INPAINT_DIR, url) for path, url in GROUNDING_DINO_BUNDLE},
    **{name: (SAM_DIR, _SAM_URL + name) for name in SAM_FILES.values()},
}


def mask_files(mask_model: str, *, sam_model: str = "vit_b", dino_debug: bool = False) -> tuple[str, ...]:
    """The MASK_DOWNLOADS keys one generate_mask call needs (debug boxes need GroundingDINO only)."""
    if mask_model != "sam":
        return (rembg_file(mask_model),)
    dino = tuple(path for path, _url in GROUNDING_DINO_BUNDLE)
    return dino if dino_debug else (*dino, SAM_FILES[sam_model])
