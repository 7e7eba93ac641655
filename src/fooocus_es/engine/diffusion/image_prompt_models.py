"""The image prompt models of one device: CLIP vision, IP-Adapters, the face detector, ControlNets.

Loaded on first use and kept (one of each file; ControlNets one per base UNet and file, few), so
a run of image prompt tasks pays the loads once. Files live where Fooocus puts them
(models/clip_vision, models/controlnet); the demo model gets tiny generated files under the same
names in a `demo/` sub-folder of each, so they can never stand in for the real ones.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

import torch

from fooocus_es.engine.models.store import ModelMissing, ModelUnsupported
from fooocus_es.engine.planning.image_prompt_files import (
    CLIP_VISION_DIR,
    CLIP_VISION_FILE,
    CONTROL_FILES,
    CONTROLNET_DIR,
    FACE_DETECTOR_FILE,
    IP_ADAPTER_FILES,
    IP_NEGATIVE_FILE,
)

_IP_ADAPTERS_KEPT = 2  # ImagePrompt and FaceSwap both resident: a task may mix them


class ImagePromptModels:
    """Per device, used from its runner thread; loads under the process's model-construction lock."""

    def __init__(self, models_dir: Path, device: str, dtype: torch.dtype, *, construction: threading.RLock) -> None:
        self.models_dir = models_dir
        self.device = device
        self.dtype = dtype
        self.construction = construction
        self._clip: tuple[Path, Any] | None = None
        self._detector: tuple[Path, Any] | None = None
        # (file, base UNet) -> IPAdapter; the UNet held weakly: a reloaded checkpoint is a new object
        self._ip: list[tuple[Path, weakref.ref[Any], Any]] = []
        self._controls: Any = None  # ControlModelCache, made on first use

    # -- files -------------------------------------------------------------------------------------
    def path(self, folder: str, name: str, *, demo: bool) -> Path:
        """Where `name` is read from; for the demo model, its generated file (written on first use)."""
        base = self.models_dir / folder
        if not demo:
            path = base / name
            if not path.is_file():
                raise ModelMissing(name, path)
            return path
        return self._demo_file(base / "demo", folder, name)

    def _demo_file(self, folder: Path, kind: str, name: str) -> Path:
        path = folder / name
        if path.is_file():
            return path
        with self.construction:
            if name == FACE_DETECTOR_FILE:
                from fooocus_es.engine.demo.face_detector import write_demo_face_detector

                write_demo_face_detector(folder)
            elif name in CONTROL_FILES.values():
                from fooocus_es.engine.demo.control_lora_files import write_demo_control_loras

                write_demo_control_loras(folder)
            else:  # CLIP vision, the IP-Adapters and the negative tokens are written together
                from fooocus_es.engine.demo.ip_adapter_files import write_demo_ip_files

                controlnet = folder if kind == CONTROLNET_DIR else self.models_dir / CONTROLNET_DIR / "demo"
                clip = folder if kind == CLIP_VISION_DIR else self.models_dir / CLIP_VISION_DIR / "demo"
                write_demo_ip_files(controlnet, clip)
        return path

    # -- models ------------------------------------------------------------------------------------
    def clip_vision(self, *, demo: bool) -> Any:
        from fooocus_es.engine.models.clip_vision import load_clip_vision

        path = self.path(CLIP_VISION_DIR, CLIP_VISION_FILE, demo=demo)
        if self._clip is None or self._clip[0] != path:
            self._clip = None
            with self.construction:
                self._clip = (path, _loaded(path, load_clip_vision, path, self.device, self.dtype))
        return self._clip[1]

    def ip_adapter(self, cn_type: str, unet: Any, *, demo: bool) -> Any:
        from fooocus_es.engine.diffusion.ip_adapter import load_ip_adapter

        path = self.path(CONTROLNET_DIR, IP_ADAPTER_FILES[cn_type], demo=demo)
        for cached_path, cached_unet, adapter in self._ip:
            if cached_path == path and cached_unet() is unet:
                return adapter
        negative = self.path(CONTROLNET_DIR, IP_NEGATIVE_FILE, demo=demo)
        with self.construction:
            adapter = _loaded(path, load_ip_adapter, path, negative, unet, self.device, self.dtype)
        self._ip = [entry for entry in self._ip if entry[1]() is not None][-(_IP_ADAPTERS_KEPT - 1) :]
        self._ip.append((path, weakref.ref(unet), adapter))
        return adapter

    def face_detector(self, *, demo: bool) -> Any:
        from fooocus_es.engine.models.retinaface import load_face_detector

        path = self.path(CONTROLNET_DIR, FACE_DETECTOR_FILE, demo=demo)
        if self._detector is None or self._detector[0] != path:
            self._detector = None
            with self.construction:
                self._detector = (path, _loaded(path, load_face_detector, path, self.device, torch.float32))
        return self._detector[1]

    def control_model(self, cn_type: str, unet: Any, *, demo: bool) -> Any:
        from fooocus_es.engine.models.control_models import ControlModelCache

        path = self.path(CONTROLNET_DIR, CONTROL_FILES[cn_type], demo=demo)
        if self._controls is None:
            self._controls = ControlModelCache(self.device, self.dtype)
        with self.construction:
            return _loaded(path, self._controls.get, path, unet)

    def free(self) -> None:
        """Drop every model (the engine's memory endpoint, or before a big load)."""
        self._clip = self._detector = self._controls = None
        self._ip = []


def _loaded(path: Path, load: Any, *args: Any) -> Any:
    """`load(*args)`; a file that is there but not what its name says is ModelUnsupported."""
    try:
        return load(*args)
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ModelUnsupported(path.name, path, str(exc)) from exc
