"""The CORS policy by settings, and the tolerant-body helpers (ignored names, empty image prompts)."""

from __future__ import annotations

import pytest

from fooocus_es.api.cors import cors_config
from fooocus_es.api.structs import GenerateRequest
from fooocus_es.api.tolerance import drop_empty_image_prompts, ignored_fields
from fooocus_es.settings import Settings

LOCAL = ["null", "http://localhost:3000", "http://127.0.0.1:8080", "https://localhost", "http://[::1]:7866"]
FOREIGN = ["https://evil.example", "http://localhost.evil.example", "http://127.0.0.1.nip.io", "file://"]


@pytest.mark.parametrize("origin", LOCAL)
def test_local_origins_are_allowed_without_a_key(origin: str) -> None:
    assert cors_config(Settings()).is_origin_allowed(origin)


@pytest.mark.parametrize("origin", FOREIGN)
def test_foreign_origins_are_refused_without_a_key(origin: str) -> None:
    assert not cors_config(Settings()).is_origin_allowed(origin)


def test_the_servers_own_base_url_is_allowed() -> None:
    config = cors_config(Settings(base_url="https://images.example.org"))
    assert config.is_origin_allowed("https://images.example.org")
    assert not config.is_origin_allowed("https://other.example.org")


def test_an_api_key_opens_every_origin() -> None:
    config = cors_config(Settings(api_key="k"))
    assert config.is_allow_all_origins and config.is_origin_allowed("https://evil.example")


def test_configured_origins_override_both_defaults() -> None:
    config = cors_config(Settings(cors_origins="https://app.example, https://b.example/", api_key="k"))
    assert config.is_origin_allowed("https://app.example") and config.is_origin_allowed("https://b.example")
    assert not config.is_origin_allowed("http://localhost:3000") and not config.is_allow_all_origins
    assert cors_config(Settings(cors_origins="*")).is_allow_all_origins


def test_ignored_fields_lists_top_level_and_nested_unknown_names() -> None:
    raw = {
        "prompt": "x",
        "api_name": "txt2img",
        "loras": [{"model_name": "a", "weight": 1, "strength": 2}, {"enabled": True}],
        "controlnet_image": [{"cn_img": "None", "cn_mode": 1}],
        "enhance_ctrls": [{"enhance_enabled": True, "bogus": 0}],
    }
    assert ignored_fields(raw, GenerateRequest) == [
        "api_name",
        "loras[0].strength",
        "controlnet_image[0].cn_mode",
        "enhance_ctrls[0].bogus",
    ]
    assert ignored_fields({"prompt": "x"}, GenerateRequest) == []
    assert ignored_fields(["not", "an", "object"], GenerateRequest) == []


def test_ignored_fields_are_capped() -> None:
    assert len(ignored_fields({f"junk{i}": i for i in range(500)}, GenerateRequest)) == 50


def test_image_prompts_without_an_image_are_dropped() -> None:
    sent = {"controlnet_image": [{"cn_stop": 0.5}, {"cn_img": "None"}, {"cn_img": ""}, {"cn_img": "abc"}]}
    assert drop_empty_image_prompts(sent) == {"controlnet_image": [{"cn_img": "abc"}]}
    untouched = {"prompt": "x"}
    assert drop_empty_image_prompts(untouched) is untouched
