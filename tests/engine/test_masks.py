"""generate_mask's engine: rembg sessions on onnxruntime, GroundingDINO + SAM, the demo files, the errors."""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import msgspec
import numpy as np
import pytest
import torch
from PIL import Image

from fooocus_es.engine.demo.mask_files import conv_graph, demo_sam_config, write_demo_sam
from fooocus_es.engine.models.store import ModelMissing, ModelUnsupported
from fooocus_es.engine.planning.mask_files import (
    GROUNDING_DINO_BUNDLE,
    MASK_DOWNLOADS,
    REMBG_MODELS,
    SAM_FILES,
    mask_files,
)
from fooocus_es.engine.planning.tool_types import MASK_MODELS, MaskOptions
from fooocus_es.engine.tools.errors import ToolUnavailable
from fooocus_es.engine.tools.masks import MaskGenerator
from fooocus_es.engine.tools.masks.grounded_sam import (
    boxes_from_outputs,
    debug_boxes,
    dino_caption,
    fill_small_holes,
    grounded_sam_mask,
    grow_boxes,
    union_masks,
)
from fooocus_es.engine.tools.masks.rembg_onnx import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    REMBG_SPECS,
    RembgSessions,
    cloth_mask,
    preprocess,
)
from fooocus_es.engine.tools.masks.sam_weights import (
    SAM_VISION_PRESETS,
    hf_to_meta,
    load_sam,
    meta_to_hf,
    sam_config_from_state,
)


def _generator(models_dir: Path) -> MaskGenerator:
    return MaskGenerator(models_dir, "cpu", torch.float32, construction=threading.RLock())


def _halves(size: tuple[int, int] = (200, 120)) -> Image.Image:
    """Left half pure red, right half pure blue."""
    pixels = np.zeros((size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2, 0] = 255
    pixels[:, size[0] // 2 :, 2] = 255
    return Image.fromarray(pixels)


# -- model files -----------------------------------------------------------------------------------
def test_mask_files_cover_every_model_with_urls():
    assert set(REMBG_MODELS) | {"sam"} == set(MASK_MODELS)
    for model in REMBG_MODELS:
        folder, url = MASK_DOWNLOADS[mask_files(model)[0]]
        assert (
            folder == "rembg" and url == f"https://github.com/danielgatis/rembg/releases/download/v0.0.0/{model}.onnx"
        )
    dino = [path for path, _url in GROUNDING_DINO_BUNDLE]
    assert "grounding-dino-tiny/model.safetensors" in dino
    assert MASK_DOWNLOADS["grounding-dino-tiny/config.json"] == (
        "inpaint",
        "https://huggingface.co/IDEA-Research/grounding-dino-tiny/resolve/main/config.json",
    )
    assert mask_files("sam", sam_model="vit_h") == (*dino, "sam_vit_h_4b8939.pth")
    assert mask_files("sam", dino_debug=True) == tuple(dino)  # debug boxes never load SAM
    assert MASK_DOWNLOADS["sam_vit_b_01ec64.pth"] == (
        "sam",
        "https://huggingface.co/mashb1t/misc/resolve/main/sam_vit_b_01ec64.pth",
    )


# -- rembg -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", sorted(REMBG_SPECS))
def test_rembg_preprocess_size_scale_and_normalisation(model):
    spec = REMBG_SPECS[model]
    expected_size = {"isnet-general-use": 1024, "isnet-anime": 1024, "u2net_cloth_seg": 768}.get(model, 320)
    std = (1.0, 1.0, 1.0) if model.startswith("isnet") else IMAGENET_STD
    dark = Image.new("RGB", (37, 53), (100, 50, 25))  # max 100: rembg scales by the image's max, not 255
    tensor = preprocess(dark, spec)
    assert tensor.shape == (1, 3, expected_size, expected_size) and tensor.dtype == np.float32
    for channel, value in enumerate((1.0, 0.5, 0.25)):
        want = (value - IMAGENET_MEAN[channel]) / std[channel]
        np.testing.assert_allclose(tensor[0, channel], want, atol=2e-3)


@pytest.mark.parametrize("model", ["u2netp", "isnet-general-use"])
@pytest.mark.parametrize("channel", [0, 2])
def test_rembg_session_reads_rgb_and_returns_input_size(tmp_path, model, channel):
    size = REMBG_SPECS[model].size
    weight = np.zeros((1, 3))
    weight[0, channel] = 1.0  # the output is channel `channel` of the normalised input
    path = tmp_path / f"{model}.onnx"
    path.write_bytes(conv_graph(size, weight, np.zeros(1)))
    mask = RembgSessions().mask(path, model, _halves())
    assert mask.mode == "L" and mask.size == (200, 120)
    pixels = np.asarray(mask)
    red, blue = pixels[:, 20:80].mean(), pixels[:, 120:180].mean()
    assert (red, blue) == ((255, 0) if channel == 0 else (0, 255))  # min-max normalised to 0..255


def test_rembg_constant_output_is_black_not_nan(tmp_path):
    path = tmp_path / "u2net.onnx"
    path.write_bytes(conv_graph(320, np.zeros((1, 3)), np.array([3.0])))
    assert np.asarray(RembgSessions().mask(path, "u2net", _halves())).max() == 0


def test_cloth_mask_palette_keeps_one_class():
    labels = np.zeros((1, 4, 6, 6), dtype=np.float32)
    for index, klass in enumerate((0, 1, 2, 3, 1, 3)):
        labels[0, klass, index, :] = 5.0  # row i is class klass
    for category, rows in {"upper": [1, 4], "lower": [2], "full": [3, 5]}.items():
        mask = np.asarray(cloth_mask(labels, (6, 6), category))
        assert mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 255}
        assert np.flatnonzero(mask[:, 0] == 255).tolist() == rows, category


def test_demo_cloth_graph_end_to_end(tmp_path):
    image = np.zeros((90, 60, 3), dtype=np.uint8)
    image[:30, :, 0] = image[30:60, :, 1] = image[60:, :, 2] = 255  # red, green, blue bands
    generator = _generator(tmp_path)
    for category, band in (("upper", 0), ("lower", 1), ("full", 2)):
        options = MaskOptions(mask_model="u2net_cloth_seg", cloth_category=category)
        result = generator.generate(Image.fromarray(image), options, demo=True)
        assert result.mask.mode == "RGB" and result.mask.size == (60, 90)
        grey = np.asarray(result.mask)[..., 0]
        centres = [grey[15 + 30 * i, 30] for i in range(3)]
        assert centres == [255 if i == band else 0 for i in range(3)], category
    assert (tmp_path / "rembg" / "demo" / "u2net_cloth_seg.onnx").is_file()


def test_rembg_without_onnxruntime_is_tool_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ToolUnavailable, match=r"pip install 'fooocus-es\[tools\]'"):
        _generator(tmp_path).generate(_halves(), MaskOptions(), demo=True)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ToolUnavailable, match="fooocus-es"):
        conv_graph(320, np.ones((1, 3)), np.zeros(1))


def test_missing_files_name_the_file(tmp_path):
    generator = _generator(tmp_path)
    with pytest.raises(ModelMissing) as missing:
        generator.generate(_halves(), MaskOptions(mask_model="silueta"), demo=False)
    assert missing.value.name == "silueta.onnx" and missing.value.path == tmp_path / "rembg" / "silueta.onnx"
    with pytest.raises(ModelMissing) as missing:
        generator.generate(_halves(), MaskOptions(mask_model="sam", dino_prompt_text="cat"), demo=False)
    assert missing.value.name == "grounding-dino-tiny/config.json"
    with pytest.raises(ModelMissing, match="sam_vit_l_0b3195.pth"):
        generator.path("sam", SAM_FILES["vit_l"], demo=False)


def test_junk_files_are_unsupported(tmp_path):
    (tmp_path / "rembg").mkdir()
    (tmp_path / "rembg" / "u2net.onnx").write_bytes(b"not onnx")
    (tmp_path / "sam").mkdir()
    (tmp_path / "sam" / "sam_vit_b_01ec64.pth").write_bytes(b"not a pickle")
    generator = _generator(tmp_path)
    with pytest.raises(ModelUnsupported, match="u2net.onnx"):
        generator.generate(_halves(), MaskOptions(mask_model="u2net"), demo=False)
    with pytest.raises(ModelUnsupported, match="sam_vit_b_01ec64.pth"):
        generator._segmenter("vit_b", demo=False)


# -- SAM weights -----------------------------------------------------------------------------------
def test_sam_meta_rename_round_trip(tmp_path):
    torch.manual_seed(0)
    from transformers import SamModel

    state = SamModel(demo_sam_config()).state_dict()
    meta = hf_to_meta(state)
    for key in (  # Meta's own names, as in sam_vit_b_01ec64.pth
        "image_encoder.patch_embed.proj.weight",
        "image_encoder.blocks.0.norm1.weight",
        "image_encoder.blocks.1.attn.rel_pos_h",
        "image_encoder.neck.3.bias",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "prompt_encoder.point_embeddings.3.weight",
        "prompt_encoder.mask_downscaling.6.weight",
        "mask_decoder.transformer.layers.1.norm4.weight",
        "mask_decoder.transformer.norm_final_attn.weight",
        "mask_decoder.output_upscaling.3.weight",
        "mask_decoder.output_hypernetworks_mlps.2.layers.2.weight",
        "mask_decoder.iou_prediction_head.layers.1.weight",
        "pixel_mean",
    ):
        assert key in meta, key
    assert not any("layer_norm" in key or "vision_encoder" in key for key in meta)
    assert meta_to_hf(meta).keys() == state.keys()
    torch.save(meta, tmp_path / "sam_vit_b_01ec64.pth")
    model = load_sam(tmp_path / "sam_vit_b_01ec64.pth", "cpu", torch.float32)
    assert model.config.vision_config.image_size == 128 and model.config.vision_config.global_attn_indexes == [1]
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("name", sorted(SAM_VISION_PRESETS))
def test_sam_config_read_from_real_shapes(name):
    from transformers import SamConfig, SamModel

    with torch.device("meta"):  # shapes only: no 2.5 GB of weights
        state = SamModel(SamConfig(vision_config=SAM_VISION_PRESETS[name])).state_dict()
    config = sam_config_from_state(meta_to_hf(hf_to_meta(state)))
    for field, value in SAM_VISION_PRESETS[name].items():
        assert getattr(config.vision_config, field) == value, field
    assert config.vision_config.image_size == 1024 and config.vision_config.window_size == 14
    assert config.mask_decoder_config.hidden_size == 256 and config.prompt_encoder_config.mask_input_channels == 16


def test_demo_sam_files_load_under_every_name(tmp_path):
    write_demo_sam(tmp_path)
    first = load_sam(tmp_path / SAM_FILES["vit_b"], "cpu", torch.float32)
    assert first.config.vision_config.hidden_size == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(SAM_FILES.values())


# -- boxes and masks -------------------------------------------------------------------------------
def test_caption_is_lowercased_stripped_and_dotted():
    assert dino_caption("  A Red Shirt ") == "a red shirt."
    assert dino_caption("Face.") == "face."


def test_boxes_keep_queries_over_threshold_in_order_as_pixels():
    logits = np.full((4, 6), -9.0)
    logits[1, 2] = 0.0  # sigmoid 0.5
    logits[3, 5] = -0.5  # 0.378
    logits[0, 0] = -1.0  # 0.269: under 0.3
    pred = np.array([[0.5, 0.5, 0.2, 0.2], [0.5, 0.25, 0.5, 0.5], [0.1, 0.1, 0.1, 0.1], [0.25, 0.75, 0.1, 0.2]])
    boxes = boxes_from_outputs(logits, pred, (200, 100), 0.3)
    np.testing.assert_allclose(boxes, [[50, 0, 150, 50], [40, 65, 60, 85]])
    assert boxes_from_outputs(logits, pred, (200, 100), 0.6).shape == (0, 4)


def test_grow_boxes_and_debug_boxes():
    boxes = np.array([[10.0, 20.0, 30.0, 40.0]])
    np.testing.assert_allclose(grow_boxes(boxes, 5), [[5, 15, 35, 45]])
    np.testing.assert_allclose(grow_boxes(boxes, -5), [[15, 25, 25, 35]])
    picture = debug_boxes(np.vstack([boxes, [[50, 50, 40, 60]]]), (64, 48))  # the second is shrunk past nothing
    assert picture.shape == (48, 64) and picture.dtype == np.uint8
    assert picture.sum() == 255 * 21 * 21  # PIL rectangles include both corners
    assert picture[20, 10] == picture[40, 30] == 255 and picture[19, 10] == picture[40, 31] == 0


def test_fill_small_holes_fills_under_400_px_eight_connected():
    mask = np.ones((100, 100), dtype=bool)
    mask[10:20, 10:20] = False  # 100 px: filled
    mask[40:65, 40:65] = False  # 625 px: kept
    mask[5:22, 70:87] = False  # 289 px ...
    mask[22:39, 87:99] = False  # ... + 204 px touching it at a corner: one 8-connected hole of 493, kept
    filled = fill_small_holes(mask)
    assert filled[10:20, 10:20].all()
    assert not filled[40:65, 40:65].any() and not filled[5:22, 70:87].any() and not filled[22:39, 87:99].any()
    assert not fill_small_holes(np.zeros((30, 30), dtype=bool)).any()  # 900 px of background: kept
    assert fill_small_holes(np.zeros((10, 10), dtype=bool)).all()  # 100 px: one small "hole", as in SAM


def test_union_of_the_first_max_detections():
    masks = np.zeros((3, 4, 4), dtype=bool)
    masks[0, 0], masks[1, 1], masks[2, 2] = True, True, True
    union, applied = union_masks(masks, 2)
    assert applied == 2 and union[:2].all() and not union[2:].any()
    union, applied = union_masks(masks, 0)
    assert applied == 3 and union[:3].all() and not union[3].any()
    assert union_masks(masks, 9)[1] == 3


class _Boxes:
    def __init__(self, boxes):
        self.boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)

    def detect(self, image, prompt, box_threshold):
        return self.boxes


class _Squares:
    """SAM stand-in: each box's mask is the box itself; records how many boxes it was given."""

    calls: list[int]

    def __init__(self):
        self.calls = []

    def masks(self, image, boxes):
        self.calls.append(len(boxes))
        out = np.zeros((len(boxes), image.height, image.width), dtype=bool)
        for index, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            out[index, y0:y1, x0:x1] = True
        return out


def test_grounded_sam_union_counts_and_no_boxes():
    image = Image.new("RGB", (64, 64))
    sam = _Squares()
    kwargs = {"prompt": "x", "box_threshold": 0.3, "grow": 0, "debug": False}
    boxes = [[0, 0, 30, 30], [34, 34, 64, 64], [0, 34, 30, 64]]
    result = grounded_sam_mask(image, _Boxes(boxes), sam, max_detections=2, **kwargs)
    assert (result.boxes, result.masks_applied, int(result.mask.sum())) == (3, 2, 2 * 900)
    assert sam.calls == [2]  # masks past max_detections are never computed
    result = grounded_sam_mask(image, _Boxes(boxes), sam, max_detections=0, **kwargs)
    assert (result.boxes, result.masks_applied, int(result.mask.sum())) == (3, 3, 3 * 900)
    result = grounded_sam_mask(image, _Boxes([]), sam, max_detections=0, **kwargs)
    assert (result.boxes, result.masks_applied, result.mask.any()) == (0, 0, False)
    grown = grounded_sam_mask(image, _Boxes(boxes[:1]), None, max_detections=0, **{**kwargs, "grow": 2, "debug": True})
    assert (grown.boxes, grown.masks_applied, int(grown.mask.sum())) == (1, 0, 33 * 33)  # -2..32 clipped to the image


# -- the demo sam path through the real loaders ----------------------------------------------------
@pytest.fixture(scope="module")
def demo_generator(tmp_path_factory):
    return _generator(tmp_path_factory.mktemp("models"))


def test_demo_sam_end_to_end(demo_generator):
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (90, 120, 3), dtype=np.uint8))
    sam = MaskOptions(mask_model="sam", dino_prompt_text="a cat")
    result = demo_generator.generate(image, sam, demo=True)
    assert result.mask.mode == "RGB" and result.mask.size == (120, 90)
    pixels = np.asarray(result.mask)
    assert set(np.unique(pixels)) <= {0, 255} and (pixels[..., 0] == pixels[..., 2]).all()
    assert result.boxes > 0 and result.masks_applied == result.boxes  # random weights: most queries pass 0.3
    one = demo_generator.generate(image, msgspec.structs.replace(sam, sam_max_detections=1), demo=True)
    assert (one.boxes, one.masks_applied) == (result.boxes, 1)
    debug = demo_generator.generate(image, msgspec.structs.replace(sam, dino_debug=True), demo=True)
    assert (debug.boxes, debug.masks_applied) == (result.boxes, 0)
    none = demo_generator.generate(image, msgspec.structs.replace(sam, box_threshold=1.0), demo=True)
    assert (none.boxes, none.masks_applied, np.asarray(none.mask).max()) == (0, 0, 0)


def test_grounding_dino_sees_bgr(demo_generator):
    dino = demo_generator._grounding_dino(demo=True)
    seen = {}
    real = dino.processor

    def spy(*, images, text, **kwargs):
        seen["image"], seen["text"] = np.asarray(images), text
        return real(images=images, text=text, **kwargs)

    dino.processor = spy
    try:
        dino.detect(Image.new("RGB", (40, 30), (200, 100, 10)), " Red SHIRT", 0.3)
    finally:
        dino.processor = real
    assert seen["text"] == "red shirt." and tuple(seen["image"][0, 0]) == (10, 100, 200)
