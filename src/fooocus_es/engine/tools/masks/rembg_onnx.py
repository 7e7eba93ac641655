"""rembg's seven background-removal sessions, written fresh on onnxruntime (no rembg, numba or pymatting).

What rembg v2.0.57 does with `remove(image, session, only_mask=True)`, as Fooocus calls it: resize
the RGB image to the model's square with LANCZOS, divide by the image's own maximum (not 255),
normalise per channel, run NCHW float32; the u2net family and IS-Net min-max normalise channel 0 of
the first output into an L mask, u2net_cloth_seg takes the class argmax and keeps one class. Both
go back to the input size with LANCZOS, so the masks are soft (grey edges), as in Fooocus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from fooocus_es.engine.tools.errors import ToolUnavailable

IMAGENET_MEAN: Final = (0.485, 0.456, 0.406)
IMAGENET_STD: Final = (0.229, 0.224, 0.225)
CLOTH_CLASSES: Final[dict[str, int]] = {"upper": 1, "lower": 2, "full": 3}  # the seg model's class ids
INSTALL_HINT: Final = "generate_mask's background-removal models need onnxruntime: pip install 'fooocus-es[tools]'"


@dataclass(frozen=True)
class RembgSpec:
    size: int  # the square the model reads
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    classes: bool = False  # a class-logit output (cloth_seg) rather than one saliency map


U2NET_SPEC: Final = RembgSpec(320, IMAGENET_MEAN, IMAGENET_STD)
ISNET_SPEC: Final = RembgSpec(1024, IMAGENET_MEAN, (1.0, 1.0, 1.0))
REMBG_SPECS: Final[dict[str, RembgSpec]] = {
    "u2net": U2NET_SPEC,
    "u2netp": U2NET_SPEC,
    "u2net_human_seg": U2NET_SPEC,
    "silueta": U2NET_SPEC,
    "isnet-general-use": ISNET_SPEC,
    "isnet-anime": ISNET_SPEC,
    "u2net_cloth_seg": RembgSpec(768, IMAGENET_MEAN, IMAGENET_STD, classes=True),
}


def preprocess(image: Image.Image, spec: RembgSpec) -> np.ndarray:
    """The model input: 1x3xSxS float32, RGB order."""
    pixels = np.asarray(image.convert("RGB").resize((spec.size, spec.size), Image.Resampling.LANCZOS), np.float64)
    pixels = pixels / max(float(pixels.max()), 1e-6)  # rembg scales by the image's max, so a dark image brightens
    pixels = (pixels - np.asarray(spec.mean)) / np.asarray(spec.std)
    return pixels.transpose(2, 0, 1)[None].astype(np.float32)


def saliency_mask(output: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """Channel 0 of a [1, C, H, W] output, min-max normalised, as an L mask of `size` (W, H)."""
    pred = output[0, 0].astype(np.float64)
    low, high = float(pred.min()), float(pred.max())
    pred = (pred - low) / max(high - low, 1e-12)  # a constant map gives black, not NaN
    return Image.fromarray((pred * 255).astype(np.uint8), mode="L").resize(size, Image.Resampling.LANCZOS)


def cloth_mask(output: np.ndarray, size: tuple[int, int], category: str) -> Image.Image:
    """The argmax label map (log-softmax does not move it), LANCZOS-resized, 255 where it equals the class.

    Resizing labels with LANCZOS rings at class borders (3 next to 0 can pass through 1 and 2): rembg does
    it, so its masks have those fringes too.
    """
    labels = np.argmax(output[0], axis=0).astype(np.uint8)
    labels = np.asarray(Image.fromarray(labels, mode="L").resize(size, Image.Resampling.LANCZOS))
    return Image.fromarray(np.where(labels == CLOTH_CLASSES[category], np.uint8(255), np.uint8(0)), mode="L")


def require_onnxruntime() -> None:
    """ToolUnavailable unless onnxruntime imports (it is the optional `tools` extra)."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        raise ToolUnavailable(INSTALL_HINT) from exc


class RembgSessions:
    """onnxruntime sessions, one per file, made on first use and kept (rembg makes one per call)."""

    def __init__(self) -> None:
        self._sessions: dict[Path, Any] = {}

    def session(self, path: Path) -> Any:
        if path not in self._sessions:
            require_onnxruntime()
            import onnxruntime

            self._sessions[path] = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return self._sessions[path]

    def mask(self, path: Path, model: str, image: Image.Image, *, cloth_category: str = "full") -> Image.Image:
        """The L mask of `image` (its size) from rembg model `model` stored at `path`."""
        spec = REMBG_SPECS[model]
        session = self.session(path)
        output = session.run(None, {session.get_inputs()[0].name: preprocess(image, spec)})[0]
        if spec.classes:
            return cloth_mask(np.asarray(output), image.size, cloth_category)
        return saliency_mask(np.asarray(output), image.size)

    def free(self) -> None:
        self._sessions.clear()
