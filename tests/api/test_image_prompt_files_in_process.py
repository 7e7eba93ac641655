"""A request whose image prompt, enhance mask or tool needs a model file that is not installed
(downloads off): a 400 naming it."""

from __future__ import annotations

import base64
import io
import time

import numpy as np
from PIL import Image

from .api_helpers import FAST, GENERATE


def png_base64() -> str:
    buffer = io.BytesIO()
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_a_missing_image_prompt_file_is_a_400_naming_the_file_its_folder_and_url(make_client, tmp_path) -> None:
    client = make_client()
    checkpoints = tmp_path / "data0" / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "real-model.safetensors").write_bytes(b"")  # listed by name; the fake engine never loads it
    body = {
        **FAST, "async_process": True, "base_model_name": "real-model.safetensors",
        "controlnet_image": [{"cn_img": png_base64(), "cn_type": "PyraCanny", "cn_stop": 0.5, "cn_weight": 1.0}],
    }  # fmt: skip
    response = client.post(GENERATE, json=body)
    assert response.status_code == 400, response.text
    text = response.text
    assert "controlnet_image[0].cn_type" in text
    assert "control-lora-canny-rank128.safetensors in models/controlnet/" in text
    assert "https://huggingface.co/lllyasviel/misc/resolve/main/control-lora-canny-rank128.safetensors" in text
    # installed: admitted
    (tmp_path / "data0" / "models" / "controlnet").mkdir()
    (tmp_path / "data0" / "models" / "controlnet" / "control-lora-canny-rank128.safetensors").write_bytes(b"")
    time.sleep(1.1)  # the installed-names listing is cached for a second
    assert client.post(GENERATE, json=body).status_code == 200


def test_a_missing_enhance_mask_file_is_a_400_naming_the_control_and_the_file(make_client, tmp_path) -> None:
    client = make_client()
    checkpoints = tmp_path / "data0" / "models" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    (checkpoints / "real-model.safetensors").write_bytes(b"")
    body = {
        **FAST, "async_process": True, "base_model_name": "real-model.safetensors", "enhance_checkbox": True,
        "enhance_ctrls": [{"enhance_enabled": False, "enhance_mask_model": "u2net"},
                          {"enhance_enabled": True, "enhance_mask_model": "sam", "enhance_mask_dino_prompt": "face"}],
    }  # fmt: skip
    response = client.post(GENERATE, json=body)
    assert response.status_code == 400, response.text
    text = response.text
    assert "enhance_ctrls[1].enhance_mask_model" in text  # the disabled control needs nothing
    assert "config.json in models/inpaint/grounding-dino-tiny/" in text
    assert "sam_vit_b_01ec64.pth in models/sam/ (from https://huggingface.co/mashb1t/misc/resolve/main/" in text


def test_a_tool_whose_files_are_missing_is_a_400_before_anything_is_queued(make_client, tmp_path) -> None:
    client = make_client(preset="default")  # not the demo: the real file names are checked
    image = png_base64()
    response = client.post("/v1/tools/generate_mask", json={"image": image, "mask_model": "u2netp"})
    assert response.status_code == 400, response.text
    assert "mask_model" in response.text and "u2netp.onnx in models/rembg/" in response.text
    response = client.post("/v1/tools/describe-image", json={"image": image, "image_type": "Anime"})
    assert response.status_code == 400, response.text
    assert "image_type" in response.text and "wd-v1-4-moat-tagger-v2.onnx in models/clip_vision/" in response.text
    assert client.get("/tasks").json()["history"] == []
    rembg = tmp_path / "data0" / "models" / "rembg"
    rembg.mkdir(parents=True)
    (rembg / "u2netp.onnx").write_bytes(b"not onnx")  # installed: admitted, and the fake engine runs no tools
    time.sleep(1.1)
    assert client.post("/v1/tools/generate_mask", json={"image": image, "mask_model": "u2netp"}).status_code == 501
    models = client.get("/v1/engines/all-models").json()
    assert models["tool_filenames"] == ["u2netp.onnx"]
