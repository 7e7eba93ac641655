"""Settings from flags and environment; signed URLs."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from fooocus_es.api.urls import UrlSigner
from fooocus_es.settings import settings_from_env


def test_environment_then_flags() -> None:
    env = {
        "FOOOCUS_ES_PORT": "9001",
        "FOOOCUS_ES_DATA_DIR": "/srv/img",
        "FOOOCUS_ES_DOWNLOAD_MODELS": "false",
        "FOOOCUS_ES_API_KEY": "env",
    }
    settings = settings_from_env(env, api_key="flag", queue_size=None)
    assert (settings.port, settings.data_dir, settings.download_models) == (9001, Path("/srv/img"), False)
    assert settings.api_key == "flag" and settings.queue_size == 100
    assert settings.db_path == Path("/srv/img/outputs/db.sqlite3")


def test_base_url_rule_follows_fooocusapi() -> None:
    assert settings_from_env({}, port=7866).public_base_url == "http://127.0.0.1:7866"
    assert settings_from_env({}, host="0.0.0.0").public_base_url == "http://127.0.0.1:7866"
    assert settings_from_env({}, base_url="10.0.0.5").public_base_url == "http://10.0.0.5:7866"
    assert settings_from_env({}, base_url="https://img.example.org/").public_base_url == "https://img.example.org"


def test_signed_urls_only_with_a_key() -> None:
    plain = UrlSigner("http://h:1", "")
    assert plain.url("outputs/d/a.png") == "http://h:1/outputs/d/a.png" and not plain.verify("outputs/d/a.png", "")
    signer = UrlSigner("http://h:1/", "k")
    url = signer.url("outputs/d/a.png")
    signature = url.split("?sig=")[1]
    assert signer.verify("outputs/d/a.png", signature)
    assert not signer.verify("outputs/d/b.png", signature)
    assert not UrlSigner("http://h:1", "other").verify("outputs/d/a.png", signature)
    record = {
        "req_params": {"uov_input_image": "inputs/x.png", "controlnet_image": [{"cn_img": ""}]},
        "result": ["outputs/d/a.png"],
    }
    rendered = plain.render_record(record)
    assert rendered["req_params"]["uov_input_image"] == "http://h:1/inputs/x.png" and rendered["result"] == [
        "http://h:1/outputs/d/a.png"
    ]
    assert rendered["req_params"]["controlnet_image"] == [{"cn_img": ""}]


def test_replicas_from_the_flag_of_serve_and_runner_and_the_environment() -> None:
    from fooocus_es.cli import _parser, _settings

    for command in ("serve", "runner"):
        args = _parser().parse_args([command, "--log", "nats://a:4222,nats://b:4222", "--replicas", "3"])
        assert _settings(args).replicas == 3
    assert settings_from_env({"FOOOCUS_ES_REPLICAS": "5"}).replicas == 5
    assert settings_from_env({}).replicas == 1
    for bad in ("0", "6"):
        with pytest.raises(msgspec.ValidationError, match="replicas"):
            settings_from_env({"FOOOCUS_ES_REPLICAS": bad})
