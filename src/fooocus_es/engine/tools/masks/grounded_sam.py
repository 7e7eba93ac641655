"""generate_mask's "sam" model: GroundingDINO boxes for a text prompt, then SAM masks in those boxes.

Fooocus extras/inpaint_mask.py, on transformers: GroundingDINO SwinT-OGC from its HF conversion
(grounding-dino-tiny) and SamModel from Meta's .pth (sam_weights). The box and mask arithmetic are
pure numpy functions so the tests can pin them without a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image, ImageDraw

HOLE_AREA: Final = 400  # segment_anything remove_small_regions(mask, 400, mode="holes"), as Fooocus calls it


def dino_caption(text: str) -> str:
    """GroundingDINO's caption: lowercased, stripped, ending in '.'."""
    caption = text.lower().strip()
    return caption if caption.endswith(".") else caption + "."


def boxes_from_outputs(
    logits: np.ndarray, pred_boxes: np.ndarray, size: tuple[int, int], threshold: float
) -> np.ndarray:
    """Pixel xyxy boxes (N, 4) of the queries whose best token sigmoid is > threshold, in query order.

    logits (Q, T) and pred_boxes (Q, 4: normalised cx, cy, w, h) are one image's outputs; size is (W, H).
    """
    scores = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).max(axis=1)
    keep = pred_boxes[scores > threshold].astype(np.float64) * np.array([size[0], size[1], size[0], size[1]])
    centre, half = keep[:, :2], keep[:, 2:] / 2
    return np.concatenate([centre - half, centre + half], axis=1).reshape(-1, 4)


def grow_boxes(boxes: np.ndarray, pixels: int) -> np.ndarray:
    """Every side moved out by `pixels` (in when negative): Fooocus's dino_erode_or_dilate on boxes."""
    return boxes + np.array([-pixels, -pixels, pixels, pixels], dtype=np.float64)


def debug_boxes(boxes: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """dino_debug's picture: the boxes filled white on black, HxW uint8 (PIL rectangles, corners included)."""
    canvas = Image.new("L", size, 0)
    draw = ImageDraw.Draw(canvas)
    for x0, y0, x1, y1 in boxes.tolist():
        if x1 >= x0 and y1 >= y0:  # a box shrunk past nothing draws nothing
            draw.rectangle((x0, y0, x1, y1), fill=255)
    return np.asarray(canvas)


def fill_small_holes(mask: np.ndarray, area: int = HOLE_AREA) -> np.ndarray:
    """Fill every 8-connected region of the inverse mask smaller than `area` px.

    Like segment_anything's "holes" mode, that includes small background pieces touching the border.
    """
    import cv2

    count, labels, stats, _ = cv2.connectedComponentsWithStats((~mask).astype(np.uint8), connectivity=8)
    small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < area) + 1
    if small.size == 0:
        return mask.copy()
    return mask | np.isin(labels, small)


def union_masks(masks: np.ndarray, max_detections: int) -> tuple[np.ndarray, int]:
    """OR of the first min(N, max_detections or N) masks (N, H, W) and how many that was."""
    applied = masks.shape[0] if max_detections <= 0 else min(masks.shape[0], max_detections)
    return np.logical_or.reduce(masks[:applied], axis=0), applied


@dataclass(frozen=True)
class SamResult:
    mask: np.ndarray  # HxW bool
    boxes: int  # GroundingDINO detections
    masks_applied: int  # SAM masks in the union (0 for debug boxes)


class GroundingDino:
    """GroundingDINO from an HF folder, with Fooocus's preprocessing (shortest side 800, max 1333, BGR)."""

    def __init__(self, folder: Path, device: str) -> None:
        import torch
        from transformers import (
            AutoTokenizer,
            GroundingDinoForObjectDetection,
            GroundingDinoImageProcessorPil,
            GroundingDinoProcessor,
        )

        self.device = device
        # fp32 always: Fooocus runs it so, and multi-scale deformable attention is fragile in fp16
        self.model = GroundingDinoForObjectDetection.from_pretrained(folder, dtype=torch.float32).to(device).eval()
        image_processor = GroundingDinoImageProcessorPil(size={"shortest_edge": 800, "longest_edge": 1333})
        self.processor = GroundingDinoProcessor(image_processor, AutoTokenizer.from_pretrained(folder))

    def detect(self, image: Image.Image, prompt: str, box_threshold: float) -> np.ndarray:
        """Pixel xyxy boxes (N, 4) in query order."""
        import torch

        rgb = np.asarray(image.convert("RGB"))
        # Fooocus hands RGB to a function that swaps BGR->RGB, so the model sees the channels swapped.
        swapped = Image.fromarray(np.ascontiguousarray(rgb[..., ::-1]))
        inputs = self.processor(
            images=swapped,
            text=dino_caption(prompt),
            truncation=True,  # the original model cuts the caption at max_text_len too
            max_length=self.model.config.max_text_len,
            return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        logits = outputs.logits[0].float().cpu().numpy()
        return boxes_from_outputs(logits, outputs.pred_boxes[0].float().cpu().numpy(), image.size, box_threshold)


class SamSegmenter:
    """SamModel plus the processor its config implies (the longest side resized to its image size, padded)."""

    def __init__(self, model: Any, device: str, dtype: Any) -> None:
        from transformers import SamImageProcessorPil, SamProcessor

        self.model, self.device, self.dtype = model, device, dtype
        side = model.config.vision_config.image_size
        self.processor = SamProcessor(
            SamImageProcessorPil(size={"longest_edge": side}, pad_size={"height": side, "width": side})
        )

    def masks(self, image: Image.Image, boxes: np.ndarray) -> np.ndarray:
        """One mask per box, (N, H, W) bool at the image's size (multimask_output=False, binarised at 0)."""
        import torch

        inputs = self.processor(images=image.convert("RGB"), input_boxes=[boxes.tolist()], return_tensors="pt")
        with torch.inference_mode():
            outputs = self.model(
                pixel_values=inputs["pixel_values"].to(self.device, self.dtype),
                input_boxes=inputs["input_boxes"].to(self.device, self.dtype),
                multimask_output=False,
            )
        masks = self.processor.image_processor.post_process_masks(
            outputs.pred_masks.float().cpu(), inputs["original_sizes"], inputs["reshaped_input_sizes"]
        )[0]
        return masks[:, 0].numpy()


def grounded_sam_mask(
    image: Image.Image,
    dino: GroundingDino,
    sam: SamSegmenter | None,
    *,
    prompt: str,
    box_threshold: float,
    grow: int,
    max_detections: int,
    debug: bool,
) -> SamResult:
    """The whole "sam" path; `sam` may be None only when `debug` (the boxes are the answer)."""
    boxes = grow_boxes(dino.detect(image, prompt, box_threshold), grow)
    if debug:
        return SamResult(debug_boxes(boxes, image.size) > 0, boxes.shape[0], 0)
    if boxes.shape[0] == 0 or sam is None:
        return SamResult(np.zeros((image.height, image.width), dtype=bool), boxes.shape[0], 0)
    # SAM reads each box on its own, so masks of boxes past max_detections (never used) are not computed.
    kept = boxes if max_detections <= 0 else boxes[:max_detections]
    mask, applied = union_masks(np.stack([fill_small_holes(mask) for mask in sam.masks(image, kept)]), 0)
    return SamResult(mask, boxes.shape[0], applied)
