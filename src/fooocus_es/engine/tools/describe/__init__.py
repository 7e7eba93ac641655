"""describe-image on the runner: BLIP captions (Photo) and WD14 tags (Anime), from `models/clip_vision/`.

`Describer(models_dir, device, dtype, construction=lock).describe(image, DescribeRequest(...), demo=...)`
answers FooocusAPI's /v1/tools/describe-image. Models load on first use and stay (one BLIP, one WD14
session). The demo model reads tiny generated files under the real names in `clip_vision/demo/`.

BLIP's files, in order of preference:
1. `clip_vision/blip-image-captioning-base/` (HF format: config.json, model.safetensors, tokenizer files);
2. `clip_vision/model_base_caption_capfilt_large.pth` (Fooocus's file, Salesforce BLIP's names), with
   the tokenizer read from that same folder's tokenizer files: the `.pth` carries none, and
   bert-base-uncased (plus BLIP's [DEC]/[ENC], added when absent) is not on disk offline. A plain
   bert-base-uncased tokenizer folder copied there works too.
With neither, ModelMissing names the HF folder's first missing file (the downloadable complete set).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from PIL import Image

from fooocus_es.engine.models.store import ModelMissing
from fooocus_es.engine.planning.describe_files import (
    BLIP_FILE,
    BLIP_FOLDER,
    BLIP_TOKENIZER_REQUIRED,
    BLIP_WEIGHTS_REQUIRED,
    CLIP_VISION_DIR,
    WD14_CSV,
    WD14_ONNX,
)
from fooocus_es.engine.planning.tool_types import DescribeRequest
from fooocus_es.engine.tools.errors import loaded
from fooocus_es.engine.tools.masks.rembg_onnx import require_onnxruntime


def rgb(image: Image.Image) -> Image.Image:
    """RGB; transparency composited on white (Fooocus's HWC3), palette and grey images expanded."""
    if image.mode in ("RGBA", "LA", "PA", "P"):
        image = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", image.size, (255, 255, 255, 255)), image).convert("RGB")
    return image.convert("RGB")


class Describer:
    """Per device, used from its runner thread; loads under the process's model-construction lock."""

    def __init__(self, models_dir: Path, device: str, dtype: Any, *, construction: threading.RLock) -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self.dtype = dtype  # BLIP's; WD14 runs on onnxruntime's CPU provider in float32
        self.construction = construction
        self._blip: tuple[Path, Any] | None = None
        self._wd14: tuple[Path, Any] | None = None

    # -- files -------------------------------------------------------------------------------------
    def folder(self, *, demo: bool) -> Path:
        """`models/clip_vision/` (or its `demo/`, whose tiny files are written on first use)."""
        base = self.models_dir / CLIP_VISION_DIR
        return base / "demo" if demo else base

    def _write_demo(self, base: Path, image_type: str) -> None:
        names = (WD14_ONNX, WD14_CSV) if image_type == "Anime" else (BLIP_FOLDER, BLIP_FILE)
        if all((base / name).exists() for name in names):
            return
        from fooocus_es.engine.demo import describe_files as demo_files

        with self.construction:
            if image_type == "Anime":
                demo_files.write_demo_wd14(base)
            else:
                demo_files.write_demo_blip(base)

    def blip_source(self, *, demo: bool) -> tuple[Path, Path]:
        """(the HF folder or the `.pth`, the tokenizer folder) BLIP loads from; ModelMissing if neither is there."""
        base = self.folder(demo=demo)
        if demo:
            self._write_demo(base, "Photo")
        hf = base / BLIP_FOLDER
        if all((hf / name).is_file() for name in BLIP_WEIGHTS_REQUIRED):
            source = hf
        elif (base / BLIP_FILE).is_file():
            source = base / BLIP_FILE
        else:
            name = next(name for name in BLIP_WEIGHTS_REQUIRED if not (hf / name).is_file())
            raise ModelMissing(f"{BLIP_FOLDER}/{name}", hf / name, f"or {BLIP_FILE} with the folder's tokenizer")
        for name in BLIP_TOKENIZER_REQUIRED:
            if not (hf / name).is_file():
                raise ModelMissing(f"{BLIP_FOLDER}/{name}", hf / name, "BLIP's tokenizer files")
        return source, hf

    def wd14_paths(self, *, demo: bool) -> tuple[Path, Path]:
        base = self.folder(demo=demo)
        if demo:
            self._write_demo(base, "Anime")
        paths = (base / WD14_ONNX, base / WD14_CSV)
        for path in paths:
            if not path.is_file():
                raise ModelMissing(path.name, path)
        return paths

    # -- describe ----------------------------------------------------------------------------------
    def describe(self, image: Image.Image, request: DescribeRequest, *, demo: bool) -> str:
        """Fooocus's describe for one image: a BLIP caption or WD14 tags."""
        image = rgb(image)
        if request.image_type == "Anime":
            return self._tagger(demo=demo).tags(image)
        return self._captioner(demo=demo).caption(image, seed=request.seed)

    def _tagger(self, *, demo: bool) -> Any:
        from fooocus_es.engine.tools.describe.wd14 import Wd14Tagger, open_session, read_tags

        require_onnxruntime()  # before the files: installing them would not help
        onnx_path, csv_path = self.wd14_paths(demo=demo)
        if self._wd14 is None or self._wd14[0] != onnx_path:
            with self.construction:
                table = loaded(csv_path, read_tags, csv_path)
                session = loaded(onnx_path, open_session, onnx_path)
                self._wd14 = (onnx_path, loaded(onnx_path, Wd14Tagger, session, table))
        return self._wd14[1]

    def _captioner(self, *, demo: bool) -> Any:
        from fooocus_es.engine.tools.describe.blip import BlipCaptioner, load_blip_folder, load_blip_pth, load_tokenizer

        source, tokenizer_folder = self.blip_source(demo=demo)
        if self._blip is None or self._blip[0] != source:
            self._blip = None  # drop the old one first: a demo and a real BLIP need not both fit
            with self.construction:
                tokenizer = loaded(tokenizer_folder / BLIP_TOKENIZER_REQUIRED[0], load_tokenizer, tokenizer_folder)
                if source.is_dir():
                    weights = source / BLIP_WEIGHTS_REQUIRED[1]
                    model = loaded(weights, load_blip_folder, source, self.device, self.dtype)
                else:
                    model = loaded(source, load_blip_pth, source, tokenizer, self.device, self.dtype)
                self._blip = (source, BlipCaptioner(model, tokenizer, self.device))
        return self._blip[1]

    def free(self) -> None:
        """Drop both models (the engine's memory endpoint, or before a big load)."""
        self._blip = self._wd14 = None
