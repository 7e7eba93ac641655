"""A request whose image prompt needs a model file that is not installed (downloads off): a 400 naming it."""

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
