"""The tools' file table: what each call needs, where a missing file is said to go, the catalogue
every feature file is listed in (URL, size, licence), and the CLI that prints it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fooocus_es.cli import main
from fooocus_es.engine.planning.file_catalogue import catalogue_files
from fooocus_es.engine.planning.tool_files import TOOL_DOWNLOADS, call_files, check_enhance_files, where
from fooocus_es.engine.planning.tool_types import DescribeCall, DescribeRequest, MaskCall, MaskOptions

IMAGE = "inputs/" + "0" * 64 + ".png"


def test_each_call_needs_its_own_files() -> None:
    anime = DescribeCall(image=IMAGE, request=DescribeRequest(image_type="Anime"))
    assert call_files(anime) == ("wd-v1-4-moat-tagger-v2.onnx", "wd-v1-4-moat-tagger-v2.csv")
    photo = call_files(DescribeCall(image=IMAGE))
    assert "blip-image-captioning-base/model.safetensors" in photo and len(photo) == 7
    assert call_files(MaskCall(image=IMAGE, options=MaskOptions(mask_model="silueta"))) == ("silueta.onnx",)
    sam = call_files(MaskCall(image=IMAGE, options=MaskOptions(mask_model="sam", sam_model="vit_h")))
    assert sam[-1] == "sam_vit_h_4b8939.pth" and "grounding-dino-tiny/config.json" in sam
    debug = call_files(MaskCall(image=IMAGE, options=MaskOptions(mask_model="sam", dino_debug=True)))
    assert not any(key.startswith("sam_") for key in debug)  # boxes only: no SAM file
    assert set(photo + sam + debug) <= set(TOOL_DOWNLOADS)


def test_where_names_the_folder_and_url_of_a_bundle_file() -> None:
    assert where("grounding-dino-tiny/vocab.txt") == (
        "vocab.txt in models/inpaint/grounding-dino-tiny/ "
        "(from https://huggingface.co/IDEA-Research/grounding-dino-tiny/resolve/main/vocab.txt)"
    )


def test_only_enabled_enhance_controls_of_an_applied_enhance_need_files() -> None:
    ctrl = {"enhance_enabled": True, "enhance_mask_model": "u2net"}
    params = {"enhance_checkbox": True, "enhance_uov_method": "Disabled", "enhance_ctrls": [ctrl]}
    refused = check_enhance_files(params, frozenset())
    assert refused is not None and refused[0] == "enhance_ctrls[0].enhance_mask_model" and "u2net.onnx" in refused[1]
    assert check_enhance_files(params, frozenset({"u2net.onnx"})) is None
    assert check_enhance_files({**params, "enhance_checkbox": False}, frozenset()) is None
    off = {**params, "enhance_ctrls": [{**ctrl, "enhance_enabled": False}]}
    assert check_enhance_files(off, frozenset()) is None


def test_the_catalogue_lists_every_feature_file_with_url_size_and_licence(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = catalogue_files()
    assert len({item.path for item in files}) == len(files)
    assert all(item.url.startswith("https://") and item.licence and item.use for item in files)
    large = [item for item in files if item.path.endswith((".onnx", ".pth", ".bin", ".safetensors"))]
    assert all(item.approx_bytes > 1_000_000 for item in large if "negative" not in item.path)
    assert not any("expansion" in item.path for item in files)  # CC BY-NC: never downloaded
    rembg = tmp_path / "models" / "rembg"
    rembg.mkdir(parents=True)
    (rembg / "u2netp.onnx").write_bytes(b"x")
    assert main(["models", "catalogue", "--json", "--data-dir", str(tmp_path)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["path"] for row in rows if row["on_disk"]] == ["rembg/u2netp.onnx"]
    assert len(rows) == len(files)
