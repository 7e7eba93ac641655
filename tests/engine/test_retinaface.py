"""RetinaFace: the demo file in facexlib's key layout loads and detects; real-width keys and size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fooocus_es.engine.demo.face_detector import DEMO_DIMS, write_demo_face_detector
from fooocus_es.engine.models.retinaface import (
    RESNET50_DIMS,
    Face,
    RetinaFace,
    dims_from_state_dict,
    greedy_nms,
    load_face_detector,
    prior_boxes,
)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_demo_face_detector(tmp_path_factory.mktemp("faces") / "nested")


def test_demo_file_is_small_written_once_and_leaves_rng_alone(demo_file: Path, tmp_path: Path) -> None:
    assert demo_file.name == "detection_Resnet50_Final.pth"
    assert demo_file.stat().st_size < 5_000_000
    mtime = demo_file.stat().st_mtime_ns
    assert write_demo_face_detector(demo_file.parent) == demo_file
    assert demo_file.stat().st_mtime_ns == mtime
    state = torch.load(demo_file, weights_only=True)
    assert all(key.startswith("module.") for key in state)  # as the DataParallel-trained original

    before = torch.random.get_rng_state()
    again = write_demo_face_detector(tmp_path)
    assert torch.equal(torch.random.get_rng_state(), before)
    other = torch.load(again, weights_only=True)
    assert all(torch.equal(other[key], state[key]) for key in state)  # fixed seed
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_demo_detects_on_a_random_image(demo_file: Path) -> None:
    detector = load_face_detector(demo_file, "cpu", torch.float32)
    assert detector.model.dims == DEMO_DIMS  # read back from the shapes
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    faces = detector.detect(image, threshold=0.0)
    assert faces and all(isinstance(face, Face) for face in faces)
    scores = [face.score for face in faces]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    for face in faces:
        assert len(face.box) == 4 and np.isfinite(face.box).all()
        assert face.box[2] > face.box[0] and face.box[3] > face.box[1]
        assert face.landmarks.shape == (5, 2) and np.isfinite(face.landmarks).all()
    assert len(faces) < prior_boxes(96, 128).shape[0]  # NMS removed overlapping priors
    assert detector.detect(image, threshold=1.0) == []  # softmax scores never exceed 1
    assert [f.score for f in detector.detect(image, threshold=0.0)] == scores  # deterministic


def test_module_prefix_is_optional(demo_file: Path, tmp_path: Path) -> None:
    state = torch.load(demo_file, weights_only=True)
    plain = tmp_path / "plain.pth"
    torch.save({key.removeprefix("module."): value for key, value in state.items()}, plain)
    image = np.full((64, 80, 3), 128, dtype=np.uint8)
    a = load_face_detector(demo_file, "cpu", torch.float32).detect(image, threshold=0.0)
    b = load_face_detector(plain, "cpu", torch.float32).detect(image, threshold=0.0)
    assert [f.box for f in a] == [f.box for f in b]


@pytest.mark.parametrize(("height", "width"), [(96, 128), (97, 131), (33, 40)])
def test_priors_match_head_rows(demo_file: Path, height: int, width: int) -> None:
    model = load_face_detector(demo_file, "cpu", torch.float32).model
    with torch.inference_mode():
        loc, logits, landm = model(torch.zeros(1, 3, height, width))
    rows = prior_boxes(height, width).shape[0]
    assert loc.shape == (1, rows, 4) and logits.shape == (1, rows, 2) and landm.shape == (1, rows, 10)
    if (height, width) == (96, 128):
        assert rows == 2 * (12 * 16 + 6 * 8 + 3 * 4)


def test_first_priors() -> None:
    priors = prior_boxes(64, 32)
    # Cell (0, 0) at stride 8: centre (4/32, 4/64), sizes 16 and 32 relative to width and height.
    assert torch.allclose(priors[0], torch.tensor([4 / 32, 4 / 64, 16 / 32, 16 / 64]))
    assert torch.allclose(priors[1], torch.tensor([4 / 32, 4 / 64, 32 / 32, 32 / 64]))
    assert torch.allclose(priors[2], torch.tensor([12 / 32, 4 / 64, 16 / 32, 16 / 64]))  # next column


def test_real_width_model_has_facexlib_keys_and_size() -> None:
    with torch.device("meta"):
        model = RetinaFace(RESNET50_DIMS)
    keys = set(model.state_dict())
    facexlib_keys = {
        "body.conv1.weight",
        "body.bn1.running_var",
        "body.layer1.0.conv1.weight",
        "body.layer1.0.downsample.0.weight",
        "body.layer3.5.conv3.weight",
        "body.layer4.2.bn3.bias",
        "fpn.output1.0.weight",
        "fpn.merge2.1.weight",
        "ssh1.conv3X3.0.weight",
        "ssh3.conv7x7_3.1.running_mean",
        "ClassHead.0.conv1x1.weight",
        "BboxHead.2.conv1x1.bias",
        "LandmarkHead.0.conv1x1.weight",
    }
    assert facexlib_keys <= keys
    assert "body.layer3.6.conv1.weight" not in keys and "body.fc.weight" not in keys
    assert model.state_dict()["fpn.output3.0.weight"].shape == (256, 2048, 1, 1)
    assert model.state_dict()["LandmarkHead.1.conv1x1.weight"].shape == (20, 256, 1, 1)
    assert sum(p.numel() for p in model.parameters()) == 27_293_600  # RetinaFace-R50's 27.3 M
    assert dims_from_state_dict(model.state_dict()) == RESNET50_DIMS


def test_non_retinaface_file_raises_naming_a_key(tmp_path: Path) -> None:
    path = tmp_path / "other.pth"
    torch.save({"model.0.weight": torch.zeros(4, 3, 3, 3)}, path)
    with pytest.raises(ValueError, match="body.conv1.weight"):
        load_face_detector(path, "cpu", torch.float32)


def test_truncated_retinaface_file_raises_naming_the_missing_key(demo_file: Path, tmp_path: Path) -> None:
    state = torch.load(demo_file, weights_only=True)
    del state["module.ssh2.conv5X5_2.0.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(ValueError, match="ssh2.conv5X5_2.0.weight"):
        load_face_detector(path, "cpu", torch.float32)


def test_greedy_nms_drops_overlaps_only() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 4]], dtype=np.float32)
    scores = np.array([0.5, 0.9, 0.7, 0.8], dtype=np.float32)
    assert greedy_nms(boxes, scores, 0.4) == [1, 3, 2]  # box 0 overlaps box 1 by IoU ~0.7
    assert greedy_nms(boxes, scores, 1.0) == [1, 3, 2, 0]
