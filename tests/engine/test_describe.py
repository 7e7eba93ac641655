"""describe-image's engine: BLIP captions (HF folder and Fooocus's .pth), WD14 tags, the demo files, the errors."""

from __future__ import annotations

import shutil
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fooocus_es.engine.demo.describe_files import (
    DEMO_WD14_SIZE,
    DEMO_WD14_TAGS,
    demo_blip_model,
    demo_wd14_csv,
    tagger_graph,
    write_demo_blip,
    write_demo_wd14,
)
from fooocus_es.engine.models.store import ModelMissing, ModelUnsupported
from fooocus_es.engine.planning.describe_files import (
    BLIP_BUNDLE,
    BLIP_FILE,
    BLIP_FOLDER,
    DESCRIBE_DOWNLOADS,
    WD14_CSV,
    WD14_ONNX,
    describe_files,
)
from fooocus_es.engine.planning.tool_types import DescribeRequest
from fooocus_es.engine.tools.describe import Describer, rgb
from fooocus_es.engine.tools.describe.blip import (
    GENERATION,
    blip_config_from_state,
    hf_to_original,
    load_blip_pth,
    load_tokenizer,
    original_to_hf,
)
from fooocus_es.engine.tools.describe.wd14 import (
    TagTable,
    format_tags,
    open_session,
    read_tags,
    select_tags,
    wd14_input,
)
from fooocus_es.engine.tools.errors import ToolUnavailable

PHOTO = DescribeRequest(image_type="Photo")
ANIME = DescribeRequest(image_type="Anime")


def _describer(models_dir: Path) -> Describer:
    return Describer(models_dir, "cpu", torch.float32, construction=threading.RLock())


def _noise(seed: int = 1, size: tuple[int, int] = (90, 70)) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """One models dir for the module: the demo files are written once, on the first describe."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def demo(models_dir) -> Describer:
    return _describer(models_dir)


# -- model files -----------------------------------------------------------------------------------
def test_describe_files_and_urls():
    misc = "https://huggingface.co/lllyasviel/misc/resolve/main/"
    assert DESCRIBE_DOWNLOADS[BLIP_FILE] == ("clip_vision", misc + "model_base_caption_capfilt_large.pth")
    assert DESCRIBE_DOWNLOADS[WD14_ONNX] == ("clip_vision", misc + "wd-v1-4-moat-tagger-v2.onnx")
    assert DESCRIBE_DOWNLOADS[WD14_CSV] == ("clip_vision", misc + "wd-v1-4-moat-tagger-v2.csv")
    assert DESCRIBE_DOWNLOADS["blip-image-captioning-base/model.safetensors"] == (
        "clip_vision",
        "https://huggingface.co/Salesforce/blip-image-captioning-base/resolve/main/model.safetensors",
    )
    bundle = tuple(path for path, _url in BLIP_BUNDLE)
    assert describe_files("Photo") == bundle and len(bundle) == 7
    assert {"blip-image-captioning-base/vocab.txt", "blip-image-captioning-base/config.json"} <= set(bundle)
    assert describe_files("Anime") == (WD14_ONNX, WD14_CSV)
    assert all(key in DESCRIBE_DOWNLOADS for key in describe_files("Photo") + describe_files("Anime"))


# -- Photo (BLIP) ----------------------------------------------------------------------------------
def test_demo_photo_caption_is_seeded(demo):
    image = _noise()
    first = demo.describe(image, PHOTO, demo=True)
    assert isinstance(first, str) and first and first == first.strip()
    assert not first.startswith("a picture of")
    state = torch.random.get_rng_state()
    assert demo.describe(image, PHOTO, demo=True) == first
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left as it was
    assert demo.describe(image, DescribeRequest(seed=1), demo=True) != first
    assert demo.describe(image.convert("RGBA"), PHOTO, demo=True) == first  # opaque RGBA: the same pixels


def test_demo_writes_both_formats_under_real_names(demo, models_dir):
    demo.describe(_noise(), PHOTO, demo=True)
    base = models_dir / "clip_vision" / "demo"
    assert (base / BLIP_FILE).is_file()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer_config.json", "vocab.txt"):
        assert (base / BLIP_FOLDER / name).is_file(), name
    assert not [path.name for path in base.iterdir() if path.name.startswith(".")]  # no temp left behind


def test_original_rename_round_trip():
    state = demo_blip_model().state_dict()
    original = hf_to_original(state)
    for key in (  # Salesforce BLIP's names, as in model_base_caption_capfilt_large.pth
        "visual_encoder.cls_token",
        "visual_encoder.pos_embed",
        "visual_encoder.patch_embed.proj.weight",
        "visual_encoder.blocks.0.norm1.weight",
        "visual_encoder.blocks.1.attn.qkv.weight",
        "visual_encoder.blocks.1.attn.proj.bias",
        "visual_encoder.blocks.0.norm2.bias",
        "visual_encoder.blocks.1.mlp.fc2.weight",
        "visual_encoder.norm.weight",
        "text_decoder.bert.embeddings.word_embeddings.weight",
        "text_decoder.bert.encoder.layer.1.crossattention.self.key.weight",
        "text_decoder.cls.predictions.transform.LayerNorm.bias",
    ):
        assert key in original, key
    assert not any(key.startswith("vision_model") for key in original)
    assert len(original) == len(state)
    assert list(original_to_hf(original)) == list(state)
    assert hf_to_original(original_to_hf(original)).keys() == original.keys()


def test_pth_gives_the_folder_caption(demo, tmp_path):
    """Only the .pth and the folder's tokenizer files: the rename path, same weights, same caption."""
    demo.describe(_noise(), PHOTO, demo=True)
    source = demo.folder(demo=True)
    base = tmp_path / "clip_vision"
    (base / BLIP_FOLDER).mkdir(parents=True)
    shutil.copy(source / BLIP_FILE, base / BLIP_FILE)
    for name in ("tokenizer_config.json", "tokenizer.json", "vocab.txt"):
        shutil.copy(source / BLIP_FOLDER / name, base / BLIP_FOLDER / name)
    from_pth = _describer(tmp_path)
    assert from_pth.blip_source(demo=False) == (base / BLIP_FILE, base / BLIP_FOLDER)
    image = _noise(3)
    for seed in (0, 5):
        request = DescribeRequest(seed=seed)
        assert from_pth.describe(image, request, demo=False) == demo.describe(image, request, demo=True)
    model = from_pth._blip[1].model
    expected = demo_blip_model().state_dict()
    assert model.config.vision_config.image_size == 64 and model.config.text_config.num_attention_heads == 1
    for key, value in model.state_dict().items():
        assert torch.equal(value, expected[key]), key


def test_real_blip_config_from_shapes():
    from transformers import BlipConfig, BlipForConditionalGeneration

    with torch.device("meta"):  # shapes only: no 900 MB of weights
        real = BlipForConditionalGeneration(BlipConfig(text_config={"num_attention_heads": 12}))
    state = original_to_hf(hf_to_original(real.state_dict()))
    config = blip_config_from_state(state, bos=30522, sep=102, pad=0)
    vision, text = config.vision_config, config.text_config
    assert (vision.image_size, vision.patch_size, vision.hidden_size, vision.num_hidden_layers) == (384, 16, 768, 12)
    assert (vision.num_attention_heads, vision.intermediate_size, vision.layer_norm_eps) == (12, 3072, 1e-6)
    assert (text.vocab_size, text.hidden_size, text.num_hidden_layers, text.num_attention_heads) == (30524, 768, 12, 12)
    assert (text.encoder_hidden_size, text.bos_token_id, text.sep_token_id, text.pad_token_id) == (768, 30522, 102, 0)


def test_plain_bert_tokenizer_gets_blip_tokens(tmp_path):
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "cat"]) + "\n")
    tokenizer = load_tokenizer(tmp_path)
    assert tokenizer.convert_tokens_to_ids("[DEC]") == 7 and tokenizer.convert_tokens_to_ids("[ENC]") == 8
    assert tokenizer.decode([7, 5, 6, 3], skip_special_tokens=True) == "a cat"


def test_generation_settings_are_fooocus():
    assert GENERATION == {"do_sample": True, "top_p": 0.9, "top_k": 50, "num_beams": 1, "max_length": 75,
                          "min_length": 10, "repetition_penalty": 1.1}  # fmt: skip


def test_pth_missing_tensor_is_unsupported(demo, tmp_path):
    demo.describe(_noise(), PHOTO, demo=True)
    source = demo.folder(demo=True)
    raw = torch.load(source / BLIP_FILE, weights_only=True)
    del raw["model"]["visual_encoder.norm.weight"]
    torch.save(raw, tmp_path / BLIP_FILE)
    with pytest.raises(ValueError, match="lacks 1 BLIP tensors"):
        load_blip_pth(tmp_path / BLIP_FILE, load_tokenizer(source / BLIP_FOLDER), "cpu", torch.float32)


# -- Anime (WD14) ----------------------------------------------------------------------------------
def test_demo_anime_tags_red_and_blue(demo):
    red = demo.describe(Image.new("RGB", (60, 60), (255, 0, 0)), ANIME, demo=True)
    blue = demo.describe(Image.new("RGB", (60, 60), (0, 0, 255)), ANIME, demo=True)
    assert red == r"fooocus-chan \(demo\), 1girl, red background, simple background, star \(symbol\)"
    assert blue == r"hatsune miku, 1girl, blue background, simple background, heart \(symbol\)"
    palette = Image.new("RGB", (60, 60), (0, 0, 255)).convert("P")
    assert demo.describe(palette, ANIME, demo=True) == blue
    assert demo._wd14[1].size == DEMO_WD14_SIZE


def test_tag_table_groups(tmp_path):
    (tmp_path / "tags.csv").write_text(demo_wd14_csv())
    table = read_tags(tmp_path / "tags.csv")
    assert table.names == tuple(name for name, *_rest in DEMO_WD14_TAGS)
    assert (table.general_start, table.character_start) == (4, 12)  # 4 ratings, 8 general, 3 characters


def test_thresholds_are_strict_and_per_group():
    table = TagTable(("rating", "a_(b)", "c", "d", "char_one", "char_two"), general_start=1, character_start=4)
    probs = np.array([0.99, 0.3501, 0.35, 0.9, 0.8501, 0.85], dtype=np.float32)
    assert select_tags(probs, table) == ["char_one", "a_(b)", "d"]  # ratings never, characters first, CSV order
    assert select_tags(probs, table, general=0.95, character=0.0) == ["char_one", "char_two"]
    assert format_tags(select_tags(probs, table)) == r"char one, a \(b\), d"
    with pytest.raises(ValueError, match="scores 5 tags, the CSV lists 6"):
        select_tags(probs[:5], table)


def test_wd14_preprocess_long_side_white_pad_bgr():
    pixels = np.zeros((2, 4, 3), dtype=np.uint8)
    pixels[..., 0], pixels[..., 1], pixels[..., 2] = 10, 20, 30  # R, G, B
    batch = wd14_input(Image.fromarray(pixels), 8)
    assert batch.shape == (1, 8, 8, 3) and batch.dtype == np.float32
    # 4x2 -> 8x4 (long side 8), pasted at y = 2: rows 0-1 and 6-7 are white
    np.testing.assert_array_equal(batch[0, 2:6], np.broadcast_to([30, 20, 10], (4, 8, 3)))
    np.testing.assert_array_equal(batch[0, :2], 255)
    np.testing.assert_array_equal(batch[0, 6:], 255)
    tall = wd14_input(Image.new("RGB", (3, 10), (0, 0, 0)), 5)  # 3x10 -> int(1.5)=1 x 5, at x = 2
    assert (tall[0, :, 2] == 0).all() and (tall[0, :, [0, 1, 3, 4]] == 255).all()


def test_tagger_reads_its_size_from_the_input(tmp_path):
    (tmp_path / "clip_vision").mkdir()
    weight = np.zeros((3, len(DEMO_WD14_TAGS)))
    weight[1, 5] = 8.0  # "solo" on green
    (tmp_path / "clip_vision" / WD14_ONNX).write_bytes(tagger_graph(64, weight, np.full(len(DEMO_WD14_TAGS), -4.0)))
    (tmp_path / "clip_vision" / WD14_CSV).write_text(demo_wd14_csv())
    describer = _describer(tmp_path)
    assert describer.describe(Image.new("RGB", (100, 100), (0, 255, 0)), ANIME, demo=False) == "solo"
    assert describer._wd14[1].size == 64
    assert open_session(tmp_path / "clip_vision" / WD14_ONNX).get_inputs()[0].shape == [1, 64, 64, 3]


# -- errors ----------------------------------------------------------------------------------------
def test_missing_files_name_the_file(tmp_path):
    describer = _describer(tmp_path)
    with pytest.raises(ModelMissing) as missing:
        describer.describe(_noise(), PHOTO, demo=False)
    hf = tmp_path / "clip_vision" / BLIP_FOLDER
    assert missing.value.name == f"{BLIP_FOLDER}/config.json" and missing.value.path == hf / "config.json"
    assert BLIP_FILE in str(missing.value)
    (tmp_path / "clip_vision").mkdir()
    (tmp_path / "clip_vision" / BLIP_FILE).write_bytes(b"")
    with pytest.raises(ModelMissing, match="tokenizer_config.json"):  # a .pth alone has no tokenizer
        describer.describe(_noise(), PHOTO, demo=False)
    with pytest.raises(ModelMissing) as missing:
        describer.describe(_noise(), ANIME, demo=False)
    assert missing.value.name == WD14_ONNX and missing.value.path == tmp_path / "clip_vision" / WD14_ONNX
    (tmp_path / "clip_vision" / WD14_ONNX).write_bytes(b"x")
    with pytest.raises(ModelMissing, match=WD14_CSV):
        describer.describe(_noise(), ANIME, demo=False)


def test_corrupt_files_are_unsupported(demo, tmp_path):
    demo.describe(_noise(), PHOTO, demo=True)
    base = tmp_path / "clip_vision"
    (base / BLIP_FOLDER).mkdir(parents=True)
    shutil.copy(demo.folder(demo=True) / BLIP_FOLDER / "tokenizer_config.json", base / BLIP_FOLDER)
    shutil.copy(demo.folder(demo=True) / BLIP_FOLDER / "tokenizer.json", base / BLIP_FOLDER)
    (base / BLIP_FILE).write_bytes(b"not a pickle")
    (base / WD14_ONNX).write_bytes(b"not onnx")
    (base / WD14_CSV).write_text(demo_wd14_csv())
    describer = _describer(tmp_path)
    with pytest.raises(ModelUnsupported, match=BLIP_FILE):
        describer.describe(_noise(), PHOTO, demo=False)
    (base / BLIP_FOLDER / "config.json").write_text("{not json")
    (base / BLIP_FOLDER / "model.safetensors").write_bytes(b"junk")
    with pytest.raises(ModelUnsupported, match="model.safetensors"):
        describer.describe(_noise(), PHOTO, demo=False)
    with pytest.raises(ModelUnsupported, match=WD14_ONNX):
        describer.describe(_noise(), ANIME, demo=False)
    write_demo_wd14(tmp_path / "good")
    shutil.copy(tmp_path / "good" / WD14_ONNX, base / WD14_ONNX)
    (base / WD14_CSV).write_text("just a header\n")
    with pytest.raises(ModelUnsupported, match=WD14_CSV):
        describer.describe(_noise(), ANIME, demo=False)


def test_anime_without_onnxruntime_is_tool_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime -> ImportError
    with pytest.raises(ToolUnavailable, match=r"pip install 'fooocus-es\[tools\]'"):
        _describer(tmp_path).describe(_noise(), ANIME, demo=True)
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ToolUnavailable, match="fooocus-es"):
        write_demo_wd14(tmp_path / "demo")


def test_rgb_composites_transparency_on_white():
    clear = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert rgb(clear).getpixel((0, 0)) == (255, 255, 255)
    assert rgb(Image.new("L", (2, 2), 7)).getpixel((1, 1)) == (7, 7, 7)


def test_demo_writers_are_idempotent(tmp_path):
    write_demo_blip(tmp_path)
    before = (tmp_path / BLIP_FILE).stat().st_mtime_ns
    write_demo_blip(tmp_path)
    assert (tmp_path / BLIP_FILE).stat().st_mtime_ns == before


def test_blip_input_is_bicubic_clip_normalised_at_the_model_size(demo):
    from fooocus_es.engine.tools.describe.blip import CLIP_MEAN, CLIP_STD, PROMPT

    captioner = demo._captioner(demo=True)
    assert int(captioner.processor.image_processor.resample) == int(Image.Resampling.BICUBIC)
    inputs = captioner.inputs(Image.new("RGB", (50, 30), (255, 128, 0)))
    assert inputs["pixel_values"].shape == (1, 3, 64, 64)
    for channel, value in enumerate((255, 128, 0)):
        want = (value / 255 - CLIP_MEAN[channel]) / CLIP_STD[channel]
        torch.testing.assert_close(inputs["pixel_values"][0, channel], torch.full((64, 64), want), atol=1e-3, rtol=0)
    ids = captioner.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    assert ids == ["[CLS]", *PROMPT.split(), "[SEP]"]  # generate swaps [CLS] for [DEC] and drops [SEP]


def test_toolbox_runs_describe_calls(models_dir):
    from fooocus_es.engine.planning.tool_types import DescribeCall
    from fooocus_es.engine.tools.toolbox import ToolBox

    box = ToolBox(models_dir, "cpu", torch.float32, construction=threading.RLock())
    call = DescribeCall(image="inputs/x.png", demo=True, request=ANIME)
    assert box.run(call, Image.new("RGB", (32, 32), (0, 0, 255))).text.startswith("hatsune miku, 1girl")
    assert isinstance(box.describer(), Describer)


def test_the_stores_free_drops_the_tools_models(models_dir):
    """clean_vram frees the store's cache and the models engines hold outside it, the tools' too."""
    from fooocus_es.engine.models.store import ModelStore
    from fooocus_es.engine.planning.tool_types import DescribeCall
    from fooocus_es.engine.tools.toolbox import ToolBox

    store = ModelStore(models_dir, "cpu")
    box = ToolBox(models_dir, "cpu", torch.float32, construction=store.construction)
    store.hold_outside("tools", box.free)
    call = DescribeCall(image="inputs/x.png", demo=True, request=ANIME)
    tags = box.run(call, Image.new("RGB", (32, 32), (0, 0, 255))).text
    assert box.describer()._wd14 is not None
    store.free()
    assert box.describer()._wd14 is None
    assert box.run(call, Image.new("RGB", (32, 32), (0, 0, 255))).text == tags  # loads again on next use
