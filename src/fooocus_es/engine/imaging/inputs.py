"""A task's stored input images as the image-to-image engine reads them (no torch).

Used twice: at admission, to refuse an inpaint request whose mask selects nothing (a 4xx, not a
silent text-to-image run as in Fooocus), and by the engine, to build the image and mask it diffuses.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fooocus_es.engine.imaging.masks import mask_array_from_pil, mask_is_empty, prepare_mask
from fooocus_es.engine.imaging.outpaint import expand_for_outpaint
from fooocus_es.engine.planning.plan import ParamError, image_task
from fooocus_es.engine.planning.plan_types import InpaintTask


def load_rgb(path: Path) -> np.ndarray:
    """HxWx3 uint8; transparency composited on white, as Fooocus's HWC3 does with RGBA inputs."""
    with Image.open(path) as opened:
        image = opened.convert("RGBA") if opened.mode in ("RGBA", "LA", "PA", "P") else opened.convert("RGB")
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, image)
    return np.asarray(image.convert("RGB"))


def inpaint_image_and_mask(task: InpaintTask, data_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The (outpaint-extended) image and its binary mask, after erode/dilate and invert."""
    image = load_rgb(data_dir / task.image)
    height, width = image.shape[:2]
    upload = None
    if task.mask:
        with Image.open(data_dir / task.mask) as opened:
            upload = mask_array_from_pil(opened)
    mask = prepare_mask(upload, width, height, task.erode_or_dilate, task.invert_mask)
    if task.outpaint:
        image, mask = expand_for_outpaint(image, mask, task.outpaint, task.outpaint_distance)
    return image, mask


def check_inpaint_mask(params: dict[str, Any], data_dir: Path) -> None:
    """Refuse an inpaint task with nothing to inpaint: an empty mask and no outpaint direction."""
    task = image_task(params)
    if not isinstance(task, InpaintTask) or task.outpaint:
        return
    _image, mask = inpaint_image_and_mask(task, data_dir)
    if mask_is_empty(mask):
        field = "inpaint_mask_image_upload"
        detail = "selects nothing to inpaint" if task.mask else "is missing, and no outpaint_selections were sent"
        raise ParamError(field, f"the mask {detail}: paint the area to change white (or send outpaint_selections)")
