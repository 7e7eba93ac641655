"""The tools of one device: describe-image and generate_mask, run by the runner like a task.

Each tool's models load on first use and stay (the runner is the only place models live); the
tool modules are imported only when a call needs them, so a server that never describes an image
never imports BLIP or onnxruntime.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from fooocus_es.engine.planning.tool_types import DescribeCall, MaskCall, ToolCall


@dataclass(frozen=True)
class ToolResult:
    text: str = ""  # describe-image's caption or tags
    image: Image.Image | None = None  # generate_mask's mask (RGB, 0/255)
    boxes: int = 0  # detections the mask came from (sam)


class ToolBox:
    """Per device, used from its runner thread; loads under the process's model-construction lock."""

    def __init__(self, models_dir: Path, device: str, dtype: torch.dtype, *, construction: threading.RLock) -> None:
        self.models_dir = models_dir
        self.device = device
        self.dtype = dtype
        self.construction = construction
        self._describer: Any = None
        self._masks: Any = None

    def run(self, call: ToolCall, image: Image.Image) -> ToolResult:
        if isinstance(call, DescribeCall):
            return ToolResult(text=self.describer().describe(image, call.request, demo=call.demo))
        if isinstance(call, MaskCall):
            made = self.masks().generate(image, call.options, demo=call.demo)
            return ToolResult(image=made.mask, boxes=made.boxes)
        raise TypeError(f"not a tool call: {call!r}")

    def free(self) -> None:
        """Drop every tool's models (the store's free(): clean_vram)."""
        for holder in (self._describer, self._masks):
            if holder is not None:
                holder.free()

    def describer(self) -> Any:
        if self._describer is None:
            from fooocus_es.engine.tools.describe import Describer

            self._describer = Describer(self.models_dir, self.device, self.dtype, construction=self.construction)
        return self._describer

    def masks(self) -> Any:
        if self._masks is None:
            from fooocus_es.engine.tools.masks import MaskGenerator

            self._masks = MaskGenerator(self.models_dir, self.device, self.dtype, construction=self.construction)
        return self._masks
