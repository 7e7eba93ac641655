"""The older Fooocus-API wire mapped onto FooocusAPI fields (api/fooocus_api): pure rules, no server."""

from __future__ import annotations

import asyncio
import base64

import msgspec
import pytest
from litestar.datastructures import FormMultiDict, UploadFile

from fooocus_es.api.fooocus_api.kinds import derived_job_type, job_type_of, wire_of
from fooocus_es.api.fooocus_api.multipart import read_form
from fooocus_es.api.fooocus_api.responses import (
    JOB_NOT_FOUND,
    AsyncJobResponse,
    bare_base64,
    ended_job,
    image_results,
    result_seeds,
)
from fooocus_es.api.fooocus_api.translate import (
    Installed,
    rename_error,
    rename_field,
    to_request,
    translate,
)
from fooocus_es.api.structs import sent_fields
from fooocus_es.engine.planning.plan import ParamError

INSTALLED = Installed(
    checkpoints=frozenset({"model.safetensors", "other.safetensors"}),
    loras=frozenset({"detail.safetensors"}),
    vaes=frozenset({"vae.safetensors"}),
    styles=frozenset({"Fooocus V2", "Fooocus Sharp"}),
    default_model="model.safetensors",
)
IMAGE = "iVBORw0KGgo="  # translate never decodes images: admission does


def fields(kind, body):
    return translate(kind, body, INSTALLED).fields


# -- names ----------------------------------------------------------------------------------------
def test_advanced_params_move_to_the_top_level_and_renamed_fields_take_fooocusapi_names() -> None:
    body = {
        "prompt": "a cat",
        "advanced_params": {"overwrite_step": 3, "sampler_name": "euler", "adm_scaler_end": 0.2},
        "save_extension": "jpeg",
        "save_meta": False,
        "meta_scheme": "a111",
        "require_base64": True,
    }
    out = fields("text-to-image", body)
    assert out == {
        "prompt": "a cat",
        "overwrite_step": 3,
        "sampler_name": "euler",
        "adm_scaler_end": 0.2,
        "output_format": "jpeg",
        "save_metadata_to_images": False,
        "metadata_scheme": "a1111",  # Fooocus-API spells the A1111 scheme a111
        "require_base64": True,
    }


def test_input_image_goes_where_the_route_needs_it_and_text_to_image_ignores_it() -> None:
    assert fields("upscale-vary", {"input_image": IMAGE})["uov_input_image"] == IMAGE
    inpaint = fields("inpaint-outpaint", {"input_image": IMAGE, "input_mask": IMAGE})
    assert inpaint["inpaint_input_image"] == IMAGE and inpaint["inpaint_mask_image_upload"] == IMAGE
    assert fields("image-prompt", {"input_image": IMAGE})["inpaint_input_image"] == IMAGE
    text = translate("text-to-image", {"input_image": IMAGE, "uov_method": "Vary (Strong)"}, INSTALLED)
    assert text.fields == {} and text.ignored == ["input_image", "uov_method"]  # not CommonRequest fields


def test_null_and_placeholder_images_mean_no_image() -> None:
    out = fields("inpaint-outpaint", {"input_image": IMAGE, "input_mask": None})
    assert "inpaint_mask_image_upload" not in out
    assert "uov_input_image" not in fields("upscale-vary", {"input_image": "string"})


def test_upscale_vary_defaults_to_upscale_2x_and_upscale_value_is_the_multiple() -> None:
    assert fields("upscale-vary", {"input_image": IMAGE})["uov_method"] == "Upscale (2x)"
    custom = fields("upscale-vary", {"input_image": IMAGE, "uov_method": "Upscale (Custom)", "upscale_value": 3})
    assert custom["uov_method"] == "Upscale (Custom)" and custom["upscale_multiple"] == 3
    assert "upscale_multiple" not in fields("upscale-vary", {"input_image": IMAGE, "upscale_value": None})


def test_outpaint_distances_merge_left_top_right_bottom_and_minus_one_is_zero() -> None:
    body = {
        "input_image": IMAGE,
        "outpaint_selections": "left, Top",
        "outpaint_distance_left": 100,
        "outpaint_distance_top": -1,
        "outpaint_distance_right": "50",
        "outpaint_distance_bottom": None,
    }
    out = fields("inpaint-outpaint", body)
    assert out["outpaint_distance"] == [100, 0, 50, 0]
    assert out["outpaint_selections"] == ["Left", "Top"]
    assert out["inpaint_respective_field"] == 1.0  # Fooocus-API's default, not FooocusAPI's 0.618
    assert "outpaint_distance" not in fields("inpaint-outpaint", {"input_image": IMAGE})
    text = translate("text-to-image", {"outpaint_distance_left": 5}, INSTALLED)
    assert text.fields == {} and text.ignored == ["outpaint_distance_left"]  # not a CommonRequest field


def test_image_prompts_become_controlnet_image_with_each_types_defaults_for_zero_or_null() -> None:
    prompts = [
        {"cn_img": IMAGE, "cn_stop": 0, "cn_weight": None, "cn_type": "FaceSwap"},
        {"cn_img": None, "cn_stop": 0.6},  # an empty slot
        {"cn_img": IMAGE, "cn_stop": 0.4, "cn_weight": 0, "cn_type": "PyraCanny", "cn_extra": 1},
        {"cn_img": IMAGE},
    ]
    out = translate("text-to-image-with-ip", {"image_prompts": prompts}, INSTALLED)
    assert out.fields["controlnet_image"] == [
        {"cn_img": IMAGE, "cn_stop": 0.9, "cn_weight": 0.75, "cn_type": "FaceSwap"},
        {"cn_img": IMAGE, "cn_stop": 0.4, "cn_weight": 1.0, "cn_type": "PyraCanny"},
        {"cn_img": IMAGE, "cn_stop": 0.5, "cn_weight": 0.6, "cn_type": "ImagePrompt"},
    ]
    assert out.ignored == ["image_prompts[2].cn_extra"]
    assert translate("image-prompt", {"image_prompts": []}, INSTALLED).fields["controlnet_image"] == []


def test_image_prompts_next_to_an_input_image_switch_mixing_on_as_upstream() -> None:
    prompt = [{"cn_img": IMAGE, "cn_type": "ImagePrompt"}]
    uov = fields("upscale-vary", {"input_image": IMAGE, "image_prompts": prompt})
    assert uov["mixing_image_prompt_and_vary_upscale"] is True
    inpaint = fields("image-prompt", {"input_image": IMAGE, "image_prompts": prompt})
    assert inpaint["mixing_image_prompt_and_inpaint"] is True
    assert "mixing_image_prompt_and_inpaint" not in fields("image-prompt", {"image_prompts": prompt})


# -- values upstream tolerates --------------------------------------------------------------------
def test_missing_base_model_falls_back_to_the_servers_default_with_a_note() -> None:
    for name in ("juggernautXL_version6Rundiffusion.safetensors", ""):
        out = translate("text-to-image", {"base_model_name": name}, INSTALLED)
        assert out.fields["base_model_name"] == "model.safetensors"
        assert "not installed" in out.notes[0] and repr(name) in out.notes[0]
    assert fields("text-to-image", {"base_model_name": "other.safetensors"})["base_model_name"] == "other.safetensors"
    out = translate("text-to-image", {"refiner_model_name": "None"}, INSTALLED)
    assert out.fields["refiner_model_name"] == "None" and out.notes == []
    out = translate("text-to-image", {"refiner_model_name": "gone.safetensors"}, INSTALLED)
    assert out.fields["refiner_model_name"] == "None" and "gone.safetensors" in out.notes[0]


def test_loras_without_enabled_count_as_enabled_and_missing_files_are_left_out() -> None:
    body = {
        "loras": [
            {"model_name": "sd_xl_offset_example-lora_1.0.safetensors", "weight": 0.1},
            {"model_name": "detail.safetensors", "weight": 0.5, "strength": 2},
        ]
    }
    out = translate("text-to-image", body, INSTALLED)
    assert out.fields["loras"] == [{"model_name": "detail.safetensors", "weight": 0.5}]
    assert "sd_xl_offset_example" in out.notes[0] and out.ignored == ["loras[1].strength"]
    request = to_request(out)
    assert request.loras[0].enabled is True  # type: ignore[index]
    with pytest.raises(ParamError) as caught:  # errors name the index the client sent
        to_request(translate("text-to-image", {"loras": [*body["loras"][:1], {"model_name": "None", "weight": 9}]},
                             INSTALLED))  # fmt: skip
    assert caught.value.field == "loras[1].weight"


def test_unknown_names_fall_back_with_notes() -> None:
    body = {
        "style_selections": ["Fooocus V2", "Nope Style"],
        "webhook_url": "string",
        "save_name": "mine",
        "advanced_params": {"sampler_name": "fancy", "inpaint_engine": "v9", "refiner_swap_method": "x",
                            "vae_name": "missing.safetensors", "scheduler_name": "karras"},
    }  # fmt: skip
    out = translate("inpaint-outpaint", body, INSTALLED)
    assert out.fields["style_selections"] == ["Fooocus V2"]
    assert out.fields["scheduler_name"] == "karras"
    for name in ("sampler_name", "inpaint_engine", "refiner_swap_method", "vae_name", "webhook_url"):
        assert name not in out.fields
    notes = " | ".join(out.notes)
    for needle in ("Nope Style", "'string'", "save_name", "'fancy'", "'v9'", "'x'", "missing.safetensors"):
        assert needle in notes
    assert fields("text-to-image", {"webhook_url": "https://example.org/h"})["webhook_url"] == "https://example.org/h"


def test_unknown_keys_are_listed_with_their_paths() -> None:
    body = {"prompt": "x", "api_name": "txt2img", "advanced_params": {"inpaint_mask_upload_checkbox": True},
            "stream_output": True}  # fmt: skip
    out = translate("text-to-image", body, INSTALLED)
    assert out.ignored == ["api_name", "advanced_params.inpaint_mask_upload_checkbox", "stream_output"]
    assert out.fields == {"prompt": "x"}


def test_overwrite_switch_a_float_upstream_becomes_a_step() -> None:
    assert fields("text-to-image", {"advanced_params": {"overwrite_switch": 0.5}})["overwrite_switch"] == 1
    assert fields("text-to-image", {"advanced_params": {"overwrite_switch": -1}})["overwrite_switch"] == -1
    assert fields("text-to-image", {"advanced_params": {"overwrite_switch": 12}})["overwrite_switch"] == 12


def test_advanced_params_as_a_string_that_does_not_read_means_the_defaults() -> None:
    out = translate("upscale-vary", {"advanced_params": "{not json"}, INSTALLED)
    assert "defaults" in out.notes[0] and not any(key in out.fields for key in ("overwrite_step",))
    out = translate("upscale-vary", {"advanced_params": '{"overwrite_step": "many", "adm_scaler_end": 0.1}'}, INSTALLED)
    assert "overwrite_step" not in out.fields and "adm_scaler_end" not in out.fields
    assert "overwrite_step" in out.notes[0]
    good = translate("upscale-vary", {"advanced_params": '{"overwrite_width": 256}'}, INSTALLED)
    assert good.fields["overwrite_width"] == 256 and good.notes == []
    with pytest.raises(ParamError) as caught:  # a JSON body's object is checked like any other field
        to_request(translate("text-to-image", {"advanced_params": {"overwrite_step": "many"}}, INSTALLED))
    assert caught.value.field == "advanced_params.overwrite_step"


# -- errors named by the old field ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "body", "field"),
    [
        ("text-to-image", {"image_number": "two"}, "image_number"),
        ("text-to-image", {"save_extension": "gif"}, "save_extension"),
        ("upscale-vary", {"input_image": IMAGE, "upscale_value": 9}, "upscale_value"),
        ("inpaint-outpaint", {"input_image": IMAGE, "outpaint_distance_bottom": 5000}, "outpaint_distance_bottom"),
        ("image-prompt", {"image_prompts": [{"cn_img": None}, {"cn_img": IMAGE, "cn_weight": "x"}]},
         "image_prompts[1].cn_weight"),
        ("image-prompt", {"image_prompts": [{"cn_img": IMAGE, "cn_type": "Magic"}]}, "image_prompts[0].cn_type"),
        ("image-prompt", {"image_prompts": [{"cn_img": IMAGE, "cn_type": ["x"]}]}, "image_prompts[0].cn_type"),
        ("text-to-image", {"refiner_model_name": {"a": 1}}, "refiner_model_name"),
        ("text-to-image", {"base_model_name": 5}, "base_model_name"),
        ("text-to-image", {"loras": [{"model_name": ["x"]}]}, "loras[0].model_name"),
        ("text-to-image", {"style_selections": [{"a": 1}]}, "style_selections[0]"),
    ],
)  # fmt: skip
def test_a_wrong_value_is_named_by_its_fooocus_api_field(kind, body, field) -> None:
    with pytest.raises(ParamError) as caught:
        to_request(translate(kind, body, INSTALLED))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_outpaint_distance_that_is_no_number_is_named() -> None:
    with pytest.raises(ParamError) as caught:
        translate("inpaint-outpaint", {"outpaint_distance_left": "far"}, INSTALLED)
    assert caught.value.field == "outpaint_distance_left"


def test_rename_field_uses_the_longest_mapped_prefix() -> None:
    origin = {"controlnet_image[0]": "image_prompts[2]", "controlnet_image": "image_prompts",
              "uov_input_image": "input_image"}  # fmt: skip
    assert rename_field("controlnet_image[0].cn_stop", origin) == "image_prompts[2].cn_stop"
    assert rename_field("uov_input_image", origin) == "input_image"
    assert rename_field("prompt", origin) == "prompt"
    assert rename_error("Expected `int`, got `str` - at `$.uov_input_image`", origin) == (
        "input_image",
        "Expected `int`, got `str`",
    )
    assert rename_error("Expected `object`, got `array`", origin) == ("body", "Expected `object`, got `array`")


def test_the_translation_converts_to_the_native_request() -> None:
    body = {"prompt": "a cat", "image_seed": "12", "async_process": "True", "advanced_params": {"overwrite_step": 2}}
    sent = sent_fields(to_request(translate("text-to-image", body, INSTALLED)))
    assert sent == {"prompt": "a cat", "image_seed": 12, "async_process": True, "overwrite_step": 2}


# -- v1 multipart forms ------------------------------------------------------------------------------
def _upload(name: str, data: bytes) -> UploadFile:
    return UploadFile(content_type="text/plain", filename=name, file_data=data)


def test_a_requests_built_form_reads_as_the_v2_body() -> None:
    form = FormMultiDict(
        [
            ("input_image", _upload("input_image", b"PNGDATA")),
            ("outpaint_selections", "Left"),
            ("outpaint_selections", "Right,Top"),
            ("style_selections", "Fooocus V2, Fooocus Sharp"),
            ("loras", '[{"model_name": "detail.safetensors", "weight": 0.5}]'),
            ("advanced_params", '{"overwrite_step": 1}'),
            ("async_process", "True"),
            ("upscale_value", ""),
            ("negative_prompt", ""),
            ("image_prompts", "{'cn_stop': 0.6, 'cn_weight': 0.6, 'cn_type': 'ImagePrompt'}"),
            ("cn_img2", _upload("cn_img2", b"CN")),
            ("cn_stop2", "0.7"),
            ("cn_type2", "CPDS"),
            ("cn_stop3", "0.1"),  # no cn_img3: an empty slot
            ("client_tag", "x"),
        ]
    )
    read = asyncio.run(read_form(form))
    assert read.body == {
        "input_image": base64.b64encode(b"PNGDATA").decode(),
        "outpaint_selections": ["Left", "Right", "Top"],
        "style_selections": ["Fooocus V2", "Fooocus Sharp"],
        "loras": [{"model_name": "detail.safetensors", "weight": 0.5}],
        "advanced_params": '{"overwrite_step": 1}',
        "async_process": "True",
        "negative_prompt": "",
        "client_tag": "x",
        "image_prompts": [
            {"cn_img": base64.b64encode(b"CN").decode(), "cn_stop": "0.7", "cn_weight": None, "cn_type": "CPDS"}
        ],
    }
    assert read.ignored == ["image_prompts"]
    out = translate("image-prompt", read.body, INSTALLED)
    assert out.ignored == ["client_tag"]
    assert out.fields["controlnet_image"][0]["cn_weight"] == 1.0  # CPDS's default
    assert out.fields["overwrite_step"] == 1
    with pytest.raises(ParamError) as caught:
        to_request(translate("image-prompt", {**read.body, "image_prompts": [{"cn_img": "x", "cn_stop": "high"}]},
                             INSTALLED))  # fmt: skip
    assert rename_field(caught.value.field, read.origin) == "cn_stop2"


def test_an_unreadable_loras_string_is_named() -> None:
    with pytest.raises(ParamError) as caught:
        asyncio.run(read_form(FormMultiDict([("loras", "[{oops")])))
    assert caught.value.field == "loras"


# -- job types and answers ------------------------------------------------------------------------------
def test_job_type_comes_from_the_route_else_from_the_parameters() -> None:
    ip_params = {"current_tab": "ip", "controlnet_image": [{"cn_img": "inputs/a.png"}]}
    assert job_type_of(ip_params, wire_of("text-to-image-with-ip")) == "Text to Image"
    assert job_type_of(ip_params, "") == "Image Prompt" and job_type_of(ip_params, "openai") == "Image Prompt"
    assert derived_job_type(
        {"current_tab": "uov", "uov_input_image": "inputs/a.png", "uov_method": "Vary (Subtle)"}
    ) == ("Image Upscale or Variation")
    assert derived_job_type({"current_tab": "inpaint", "inpaint_input_image": "inputs/a.png"}) == (
        "Image Inpaint or Outpaint"
    )
    assert derived_job_type({"current_tab": "uov", "uov_method": "Disabled"}) == "Text to Image"


def test_result_seeds_follow_the_engine_order_without_skipped_images() -> None:
    params = {"image_seed": 10, "image_number": 4, "disable_seed_increment": False}
    assert result_seeds(params, 4, set()) == [10, 11, 12, 13]
    assert result_seeds(params, 2, {1}) == [10, 12]  # image 2 skipped, stopped after two saved
    assert result_seeds({**params, "disable_seed_increment": True}, 3, set()) == [10, 10, 10]
    results = image_results(["http://h/outputs/a.png"], [10], None)
    assert msgspec.json.decode(msgspec.json.encode(results)) == [
        {"base64": None, "url": "http://h/outputs/a.png", "seed": "10", "finish_reason": "SUCCESS"}
    ]


def test_answers_have_upstreams_shapes() -> None:
    assert msgspec.json.decode(msgspec.json.encode(JOB_NOT_FOUND)) == {
        "job_id": "", "job_type": "Not Found", "job_stage": "ERROR", "job_progress": 0,
        "job_status": "Job not found", "job_step_preview": None, "job_result": None,
    }  # fmt: skip
    assert list(AsyncJobResponse.__struct_fields__) == [
        "job_id", "job_type", "job_stage", "job_progress", "job_status", "job_step_preview", "job_result",
    ]  # fmt: skip
    stopped = ended_job("t", "Text to Image", {"task_status": "stop", "error": None}, [])
    assert (stopped.job_stage, stopped.job_status, stopped.job_progress, stopped.job_result) == (
        "SUCCESS", "Finished", 100, []
    )  # fmt: skip
    failed = ended_job("t", "Text to Image", {"task_status": "failed", "error": {"message": "boom"}}, None)
    assert (failed.job_stage, failed.job_status, failed.job_result) == ("ERROR", "boom", None)
    assert bare_base64("data:image/jpeg;base64,/9j/4AA") == "/9j/4AA" and bare_base64(None) is None


def test_a_full_queue_answers_as_upstreams_call_worker() -> None:
    from fooocus_es.api.fooocus_api.admit import _queue_full

    full = {"base64": None, "url": None, "seed": "", "finish_reason": "QUEUE_IS_FULL"}
    sync = _queue_full("Text to Image", async_process=False, png=False)
    assert msgspec.json.decode(msgspec.json.encode(sync.content)) == [full]
    queued = _queue_full("Image Prompt", async_process=True, png=False)
    assert msgspec.json.decode(msgspec.json.encode(queued.content)) == {
        "job_id": "", "job_type": "Image Prompt", "job_stage": "ERROR", "job_progress": 0, "job_status": None,
        "job_step_preview": None, "job_result": [full],
    }  # fmt: skip
    png = _queue_full("Text to Image", async_process=False, png=True)
    assert (png.status_code, png.content) == (409, "QUEUE_IS_FULL")
