"""FaceSwap's face crop: the best face found, aligned by its 5 landmarks to the FFHQ 512 template.

The detector (models/retinaface.py) gives eye, nose and mouth-corner points; a similarity transform
(rotation, uniform scale, shift; LMEDS, robust to one bad point) maps them onto where FFHQ puts them
in a 512 x 512 face, and the image is warped there with Fooocus's grey border. No face: the whole
image, unchanged, as Fooocus does.
"""

from __future__ import annotations

from typing import Final, Protocol

import cv2
import numpy as np

FACE_SIZE: Final = 512
# Left eye, right eye, nose tip, left and right mouth corners in a 512 x 512 FFHQ-aligned face.
FFHQ_TEMPLATE_512: Final = np.array(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]], dtype=np.float32,
)  # fmt: skip
BORDER_RGB: Final = (132, 133, 135)  # Fooocus's (135, 133, 132), given in BGR


class _Landmarked(Protocol):
    landmarks: np.ndarray


class _Detector(Protocol):
    def detect(self, image_rgb: np.ndarray) -> list[_Landmarked]: ...


def align_face(image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """The face at `landmarks` (5 x 2, x and y in pixels) warped onto the template; None if they fit no transform."""
    points = np.asarray(landmarks, dtype=np.float32).reshape(5, 2)
    matrix, _inliers = cv2.estimateAffinePartial2D(points, FFHQ_TEMPLATE_512, method=cv2.LMEDS)
    if matrix is None or not np.isfinite(matrix).all():
        return None
    return cv2.warpAffine(
        np.ascontiguousarray(image_rgb), matrix, (FACE_SIZE, FACE_SIZE),
        borderMode=cv2.BORDER_CONSTANT, borderValue=BORDER_RGB,
    )  # fmt: skip


def crop_face(detector: _Detector, image_rgb: np.ndarray) -> np.ndarray:
    """The top-scoring face, aligned to 512 x 512; the whole image when none is found."""
    faces = detector.detect(image_rgb)
    if not faces:
        return image_rgb
    aligned = align_face(image_rgb, faces[0].landmarks)
    return image_rgb if aligned is None else aligned
