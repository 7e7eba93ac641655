"""RetinaFace-ResNet50 face detector (boxes, scores and 5 landmarks), for FaceSwap's face crop.

Loads facexlib's `detection_Resnet50_Final.pth` key layout (`body.*` a torchvision-style ResNet,
`fpn.*`, `ssh1-3.*`, `ClassHead/BboxHead/LandmarkHead.N.conv1x1.*`; a DataParallel `module.` prefix
is stripped). Every width and block count is read from the tensors' shapes, so a tiny file with the
same key names loads through the same code. Detection follows what Fooocus gets from facexlib: the
image at full size, BGR minus the mean (104, 117, 123), priors for strides 8/16/32, softmax scores,
threshold then greedy NMS. Pickled weights are read with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

STEPS: Final = (8, 16, 32)
MIN_SIZES: Final = ((16, 32), (64, 128), (256, 512))
VARIANCES: Final = (0.1, 0.2)
BGR_MEAN: Final = (104.0, 117.0, 123.0)
_LANDMARKS: Final = 5
# Enough to read the architecture from; the full key set is checked after the model is built.
_SHAPE_KEYS: Final = (
    "body.conv1.weight",
    *(f"body.layer{i}.0.{conv}.weight" for i in range(1, 5) for conv in ("conv1", "conv3")),
    "fpn.output1.0.weight",
    "ClassHead.0.conv1x1.weight",
)


@dataclass(frozen=True)
class Face:
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in image pixels
    landmarks: np.ndarray  # (5, 2) x, y in image pixels: eyes, nose, mouth corners


@dataclass(frozen=True)
class RetinaFaceDims:
    stem: int  # body.conv1 output channels
    widths: tuple[int, int, int, int]  # bottleneck inner width per ResNet stage
    outs: tuple[int, int, int, int]  # bottleneck output channels per stage
    blocks: tuple[int, int, int, int]
    fpn: int  # FPN / SSH channels
    anchors: int = 2  # priors per feature-map cell (len of each MIN_SIZES entry)


RESNET50_DIMS: Final = RetinaFaceDims(
    stem=64, widths=(64, 128, 256, 512), outs=(256, 512, 1024, 2048), blocks=(3, 4, 6, 3), fpn=256
)


def dims_from_state_dict(state: dict[str, torch.Tensor]) -> RetinaFaceDims:
    missing = [key for key in _SHAPE_KEYS if key not in state]
    if missing:
        raise ValueError(f"not a RetinaFace checkpoint: missing keys {missing}")

    def stage(i: int) -> tuple[int, int, int]:
        prefix = f"body.layer{i}."
        count = len({key[len(prefix) :].split(".", 1)[0] for key in state if key.startswith(prefix)})
        return state[f"{prefix}0.conv1.weight"].shape[0], state[f"{prefix}0.conv3.weight"].shape[0], count

    stages = [stage(i) for i in range(1, 5)]
    return RetinaFaceDims(
        stem=state["body.conv1.weight"].shape[0],
        widths=tuple(s[0] for s in stages),  # type: ignore[arg-type]
        outs=tuple(s[1] for s in stages),  # type: ignore[arg-type]
        blocks=tuple(s[2] for s in stages),  # type: ignore[arg-type]
        fpn=state["fpn.output1.0.weight"].shape[0],
        anchors=state["ClassHead.0.conv1x1.weight"].shape[0] // 2,
    )


def _conv_bn(cin: int, cout: int, kernel: int, slope: float | None) -> nn.Sequential:
    """Conv (no bias) + BN (keys .0/.1), then LeakyReLU(slope) unless slope is None."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, 1, kernel // 2, bias=False), nn.BatchNorm2d(cout)]
    if slope is not None:
        layers.append(nn.LeakyReLU(slope))
    return nn.Sequential(*layers)


class _Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3), torchvision's attribute names."""

    def __init__(self, cin: int, width: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _ResNetBody(nn.Module):
    """Stem and four stages; returns the stride 8, 16 and 32 features (layer2-4)."""

    def __init__(self, dims: RetinaFaceDims) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, dims.stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(dims.stem)
        cin = dims.stem
        for index in range(4):
            blocks = []
            for block in range(dims.blocks[index]):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(_Bottleneck(cin, dims.widths[index], dims.outs[index], stride))
                cin = dims.outs[index]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 3, 2, 1)
        c2 = self.layer2(self.layer1(x))
        c3 = self.layer3(c2)
        return c2, c3, self.layer4(c3)


def _slope(channels: int) -> float:
    return 0.1 if channels <= 64 else 0.0  # the original nets use a leaky slope only when narrow


class _FPN(nn.Module):
    def __init__(self, ins: tuple[int, int, int], out: int) -> None:
        super().__init__()
        slope = _slope(out)
        self.output1, self.output2, self.output3 = (_conv_bn(cin, out, 1, slope) for cin in ins)
        self.merge1 = _conv_bn(out, out, 3, slope)
        self.merge2 = _conv_bn(out, out, 3, slope)

    def forward(self, feats: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        p1, p2, p3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return p1, p2, p3


class _SSH(nn.Module):
    """Context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3, sharing the first) branches, concatenated."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels % 4:
            raise ValueError(f"RetinaFace FPN width {channels} is not a multiple of 4")
        slope, quarter = _slope(channels), channels // 4
        self.conv3X3 = _conv_bn(channels, channels // 2, 3, None)
        self.conv5X5_1 = _conv_bn(channels, quarter, 3, slope)
        self.conv5X5_2 = _conv_bn(quarter, quarter, 3, None)
        self.conv7X7_2 = _conv_bn(quarter, quarter, 3, slope)
        self.conv7x7_3 = _conv_bn(quarter, quarter, 3, None)  # lower-case x as in the checkpoint

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.conv5X5_1(x)
        branches = (self.conv3X3(x), self.conv5X5_2(first), self.conv7x7_3(self.conv7X7_2(first)))
        return F.relu(torch.cat(branches, dim=1))


class _Head(nn.Module):
    """1x1 conv to anchors*values, reshaped to (N, H*W*anchors, values) in the priors' order."""

    def __init__(self, channels: int, anchors: int, values: int) -> None:
        super().__init__()
        self.values = values
        self.conv1x1 = nn.Conv2d(channels, anchors * values, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1x1(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, self.values)


class RetinaFace(nn.Module):
    def __init__(self, dims: RetinaFaceDims) -> None:
        super().__init__()
        if dims.anchors != len(MIN_SIZES[0]):
            raise ValueError(f"RetinaFace heads have {dims.anchors} anchors per cell, priors need {len(MIN_SIZES[0])}")
        self.dims = dims
        self.body = _ResNetBody(dims)
        self.fpn = _FPN(dims.outs[1:], dims.fpn)  # type: ignore[arg-type]
        self.ssh1, self.ssh2, self.ssh3 = (_SSH(dims.fpn) for _ in STEPS)
        self.ClassHead = nn.ModuleList(_Head(dims.fpn, dims.anchors, 2) for _ in STEPS)
        self.BboxHead = nn.ModuleList(_Head(dims.fpn, dims.anchors, 4) for _ in STEPS)
        self.LandmarkHead = nn.ModuleList(_Head(dims.fpn, dims.anchors, 2 * _LANDMARKS) for _ in STEPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(box deltas (N, P, 4), class logits (N, P, 2), landmark deltas (N, P, 10))."""
        p1, p2, p3 = self.fpn(self.body(x))
        feats = (self.ssh1(p1), self.ssh2(p2), self.ssh3(p3))

        def run(heads: nn.ModuleList) -> torch.Tensor:
            return torch.cat([head(feat) for head, feat in zip(heads, feats, strict=True)], dim=1)

        return run(self.BboxHead), run(self.ClassHead), run(self.LandmarkHead)


def prior_boxes(height: int, width: int) -> torch.Tensor:
    """(P, 4) priors (cx, cy, w, h), relative to the image, row-major per level then per anchor size."""
    levels = []
    for step, sizes in zip(STEPS, MIN_SIZES, strict=True):
        rows, cols = math.ceil(height / step), math.ceil(width / step)
        cy, cx = torch.meshgrid(
            (torch.arange(rows, dtype=torch.float32) + 0.5) * step / height,
            (torch.arange(cols, dtype=torch.float32) + 0.5) * step / width,
            indexing="ij",
        )
        per_size = [
            torch.stack([cx, cy, torch.full_like(cx, size / width), torch.full_like(cy, size / height)], dim=-1)
            for size in sizes
        ]
        levels.append(torch.stack(per_size, dim=2).reshape(-1, 4))
    return torch.cat(levels)


def greedy_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """Greedy NMS, highest score first; a box goes when its IoU with a kept one exceeds threshold.

    Areas count pixels inclusively (+1), as the reference detector's NMS does.
    """
    x1, y1, x2, y2 = boxes.T
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        w = np.maximum(0.0, np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]) + 1)
        h = np.maximum(0.0, np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]) + 1)
        inter = w * h
        iou = inter / (areas[best] + areas[rest] - inter)
        order = rest[iou <= threshold]
    return keep


class FaceDetector:
    def __init__(self, model: RetinaFace, device: str, dtype: torch.dtype) -> None:
        self.model = model.to(device=device, dtype=dtype).eval()
        self.device, self.dtype = torch.device(device), dtype

    def detect(self, image_rgb: np.ndarray, *, threshold: float = 0.97, nms: float = 0.4) -> list[Face]:
        """Faces in an (H, W, 3) RGB image, best score first; boxes and landmarks in its pixels."""
        if image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image_rgb.shape}")
        height, width = image_rgb.shape[:2]
        bgr = image_rgb[..., ::-1].astype(np.float32) - np.asarray(BGR_MEAN, dtype=np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(bgr.transpose(2, 0, 1)))[None]
            loc, logits, landm = self.model(x.to(self.device, self.dtype))
            loc, logits, landm = loc[0].float(), logits[0].float(), landm[0].float()
            priors = prior_boxes(height, width).to(self.device)
            centre, size = priors[:, :2], priors[:, 2:]
            xy = centre + loc[:, :2] * VARIANCES[0] * size
            wh = size * torch.exp(loc[:, 2:] * VARIANCES[1])
            scale = torch.tensor([width, height], dtype=torch.float32, device=self.device)
            boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1) * scale.repeat(2)
            points = (centre[:, None] + landm.view(-1, _LANDMARKS, 2) * VARIANCES[0] * size[:, None]) * scale
            scores = torch.softmax(logits, dim=-1)[:, 1]
        scores_np, boxes_np, points_np = scores.cpu().numpy(), boxes.cpu().numpy(), points.cpu().numpy()
        chosen = np.flatnonzero(scores_np > threshold)
        keep = chosen[greedy_nms(boxes_np[chosen], scores_np[chosen], nms)]
        return [
            Face(
                score=float(scores_np[i]),
                box=tuple(float(v) for v in boxes_np[i]),  # type: ignore[arg-type]
                landmarks=points_np[i].copy(),
            )
            for i in keep
        ]


def load_face_detector(path: Path, device: str, dtype: torch.dtype) -> FaceDetector:
    """A RetinaFace detector from a facexlib-layout state dict; ValueError naming keys if the file isn't one."""
    raw = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: not a state dict (got {type(raw).__name__}); missing keys {list(_SHAPE_KEYS)}")
    state = {key.removeprefix("module."): value for key, value in raw.items()}
    try:
        dims = dims_from_state_dict(state)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    model = RetinaFace(dims)
    expected = {key for key in model.state_dict() if not key.endswith("num_batches_tracked")}
    present = {key for key in state if not key.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        detail = f"missing keys {missing[:8]}, unexpected keys {unexpected[:8]}"
        raise ValueError(f"{path}: not a RetinaFace checkpoint: {detail}")
    try:
        model.load_state_dict(state, strict=False)  # num_batches_tracked may be absent in older files
    except RuntimeError as error:  # a shape that contradicts the widths read above
        raise ValueError(f"{path}: not a RetinaFace checkpoint: {error}") from None
    return FaceDetector(model, device, dtype)
