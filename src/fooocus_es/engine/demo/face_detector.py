"""A tiny random-weight RetinaFace in facexlib's key layout, so FaceSwap's face crop runs offline.

Same key names as `detection_Resnet50_Final.pth` (with its DataParallel `module.` prefix), narrow
widths and one bottleneck per stage; the loader reads the architecture from the shapes, so it goes
through the same code as the real file. Random weights: it finds "faces" only at low thresholds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from fooocus_es.engine.models.retinaface import RetinaFaceDims

DEMO_FACE_DETECTOR: Final = "detection_Resnet50_Final.pth"  # the name Fooocus/facexlib look for
DEMO_DIMS: Final = RetinaFaceDims(stem=8, widths=(4, 8, 8, 8), outs=(16, 32, 32, 32), blocks=(1, 1, 1, 1), fpn=16)
_SEED: Final = 20240525


def write_demo_face_detector(folder: Path) -> Path:
    """Write `folder / detection_Resnet50_Final.pth` unless it exists; the caller's RNG is untouched."""
    import torch

    from fooocus_es.engine.models.retinaface import RetinaFace

    path = Path(folder) / DEMO_FACE_DETECTOR
    if path.exists():
        return path
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_SEED)
        state = {f"module.{key}": value.detach().clone() for key, value in RetinaFace(DEMO_DIMS).state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(state, temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path
