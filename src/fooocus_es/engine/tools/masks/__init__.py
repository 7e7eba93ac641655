"""generate_mask on the runner: rembg's background-removal models (onnxruntime) or GroundingDINO + SAM.

`MaskGenerator(models_dir, device, dtype, construction=lock).generate(image, MaskOptions(...), demo=...)`
answers FooocusAPI's /v1/tools/generate_mask and the mask step of each enhance control. Models load on
first use and stay (one session per rembg file, one GroundingDINO, one SAM). The demo model reads tiny
generated files under the real names in each folder's `demo/` sub-folder.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fooocus_es.engine.models.store import ModelMissing
from fooocus_es.engine.planning.mask_files import (
    GROUNDING_DINO_FOLDER,
    GROUNDING_DINO_REQUIRED,
    INPAINT_DIR,
    REMBG_DIR,
    SAM_DIR,
    SAM_FILES,
    rembg_file,
)
from fooocus_es.engine.planning.tool_types import MaskOptions
from fooocus_es.engine.tools.errors import loaded
from fooocus_es.engine.tools.masks.rembg_onnx import RembgSessions, require_onnxruntime


@dataclass(frozen=True)
class MaskResult:
    """The mask (RGB: grey soft edges for rembg models, 0/255 for sam) and enhance's skip counts."""

    mask: Image.Image
    boxes: int = 0  # GroundingDINO detections (sam only)
    masks_applied: int = 0  # SAM masks in the union (sam only; 0 with dino_debug)


class MaskGenerator:
    """Per device, used from its runner thread; loads under the process's model-construction lock."""

    def __init__(self, models_dir: Path, device: str, dtype: Any, *, construction: threading.RLock) -> None:
        self.models_dir = Path(models_dir)
        self.device = device
        self.dtype = dtype  # SAM's; GroundingDINO always runs in fp32
        self.construction = construction
        self._rembg = RembgSessions()
        self._dino: tuple[Path, Any] | None = None
        self._sam: tuple[Path, Any] | None = None  # one SAM: vit_h alone is 2.5 GB

    # -- files -------------------------------------------------------------------------------------
    def path(self, folder: str, name: str, *, demo: bool) -> Path:
        """Where `name` (a file, or GroundingDINO's folder) is read from; demo files are written on first use."""
        base = self.models_dir / folder / "demo" if demo else self.models_dir / folder
        path = base / name
        if demo:
            self._write_demo(base, folder, name)
        if name == GROUNDING_DINO_FOLDER:
            for required in GROUNDING_DINO_REQUIRED:
                if not (path / required).is_file():
                    raise ModelMissing(f"{name}/{required}", path / required)
        elif not path.is_file():
            raise ModelMissing(name, path)
        return path

    def _write_demo(self, base: Path, folder: str, name: str) -> None:
        if (base / name).exists():
            return
        from fooocus_es.engine.demo import mask_files as demo_files

        with self.construction:
            if folder == REMBG_DIR:
                demo_files.write_demo_rembg(base, name.removesuffix(".onnx"))
            elif folder == SAM_DIR:
                demo_files.write_demo_sam(base)
            elif folder == INPAINT_DIR and name == GROUNDING_DINO_FOLDER:
                demo_files.write_demo_grounding_dino(base)

    # -- masks -------------------------------------------------------------------------------------
    def generate(self, image: Image.Image, options: MaskOptions, *, demo: bool) -> MaskResult:
        """Fooocus's generate_mask_from_image for one image; the mask has the image's size."""
        if options.mask_model != "sam":
            require_onnxruntime()  # before the file: installing the file would not help
            path = self.path(REMBG_DIR, rembg_file(options.mask_model), demo=demo)
            with self.construction:  # made once per file and kept
                loaded(path, self._rembg.session, path)
            mask = self._rembg.mask(path, options.mask_model, image, cloth_category=options.cloth_category)
            return MaskResult(mask.convert("RGB"))
        from fooocus_es.engine.tools.masks.grounded_sam import grounded_sam_mask

        result = grounded_sam_mask(
            image,
            self._grounding_dino(demo=demo),
            None if options.dino_debug else self._segmenter(options.sam_model, demo=demo),
            prompt=options.dino_prompt_text,
            box_threshold=options.box_threshold,
            grow=options.dino_erode_or_dilate,
            max_detections=options.sam_max_detections,
            debug=options.dino_debug,
        )
        pixels = np.repeat(np.where(result.mask, np.uint8(255), np.uint8(0))[..., None], 3, axis=2)
        return MaskResult(Image.fromarray(pixels, mode="RGB"), result.boxes, result.masks_applied)

    def _grounding_dino(self, *, demo: bool) -> Any:
        from fooocus_es.engine.tools.masks.grounded_sam import GroundingDino

        path = self.path(INPAINT_DIR, GROUNDING_DINO_FOLDER, demo=demo)
        if self._dino is None or self._dino[0] != path:
            self._dino = None
            with self.construction:
                self._dino = (path, loaded(path, GroundingDino, path, self.device))
        return self._dino[1]

    def _segmenter(self, sam_model: str, *, demo: bool) -> Any:
        from fooocus_es.engine.tools.masks.grounded_sam import SamSegmenter
        from fooocus_es.engine.tools.masks.sam_weights import load_sam

        path = self.path(SAM_DIR, SAM_FILES[sam_model], demo=demo)
        if self._sam is None or self._sam[0] != path:
            self._sam = None  # drop the old one before loading: two vit_h would not fit where one does
            with self.construction:
                model = loaded(path, load_sam, path, self.device, self.dtype)
                self._sam = (path, SamSegmenter(model, self.device, self.dtype))
        return self._sam[1]

    def free(self) -> None:
        """Drop every model and session (the engine's memory endpoint, or before a big load)."""
        self._rembg.free()
        self._dino = self._sam = None
