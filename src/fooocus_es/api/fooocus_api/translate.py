"""Fooocus-API (the older wire) request -> FooocusAPI fields. Pure: no Litestar, no I/O.

The seed's mapping table: `advanced_params.*` move to the top level, `input_image` becomes
`uov_input_image` (upscale-vary) or `inpaint_input_image` (inpaint-outpaint, image-prompt),
`input_mask` -> `inpaint_mask_image_upload`, `image_prompts` -> `controlnet_image`,
`outpaint_distance_left/top/right/bottom` -> `outpaint_distance`, `upscale_value` ->
`upscale_multiple`, `save_extension` -> `output_format`, `save_meta` -> `save_metadata_to_images`,
`meta_scheme` -> `metadata_scheme`; `save_name` is dropped.

Which fields a route knows follows Fooocus-API's request classes (text-to-image ignores
`input_image`, as upstream's CommonRequest does). Values upstream tolerates are tolerated here
too, each with a note: a model, LoRA, VAE or style that is not installed falls back (upstream's
check_models_exist and legal-style filter), unknown sampler, scheduler, inpaint engine or refiner
swap method fall back to the default (upstream's req_to_params), the docs placeholder webhook_url
"string" is left out. Everything else keeps FooocusAPI's checks, with errors named by the old field
(any other webhook_url must be an http(s) URL, as on every route: an SSRF guard, not a tolerance).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

import msgspec

from fooocus_es.api.fooocus_api.kinds import JOB_TYPES, JobType, RouteKind, wire_of
from fooocus_es.api.json_body import MalformedJson, decode_json
from fooocus_es.api.structs import GenerateRequest
from fooocus_es.engine.planning.plan import DEFAULT_VAE_NAMES, NO_MODEL_NAMES, ParamError
from fooocus_es.engine.planning.sampler_names import SAMPLER_NAMES, SCHEDULER_NAMES
from fooocus_es.media.decode import is_no_image

# CommonRequest fields FooocusAPI spells the same.
COMMON: Final = frozenset(
    {"prompt", "negative_prompt", "style_selections", "performance_selection", "aspect_ratios_selection",
     "image_number", "image_seed", "sharpness", "guidance_scale", "base_model_name", "refiner_model_name",
     "refiner_switch", "loras", "read_wildcards_in_order", "require_base64", "async_process", "webhook_url"}
)  # fmt: skip
RENAMED: Final[Mapping[str, str]] = MappingProxyType(
    {"save_meta": "save_metadata_to_images", "meta_scheme": "metadata_scheme", "save_extension": "output_format"}
)
# AdvancedParams (fooocusapi/models/common/requests.py); FooocusAPI has them at the top level.
ADVANCED: Final = frozenset(
    {"disable_preview", "disable_intermediate_results", "disable_seed_increment", "adm_scaler_positive",
     "adm_scaler_negative", "adm_scaler_end", "adaptive_cfg", "clip_skip", "sampler_name", "scheduler_name",
     "overwrite_step", "overwrite_switch", "overwrite_width", "overwrite_height", "overwrite_vary_strength",
     "overwrite_upscale_strength", "mixing_image_prompt_and_vary_upscale", "mixing_image_prompt_and_inpaint",
     "debugging_cn_preprocessor", "skipping_cn_preprocessor", "canny_low_threshold", "canny_high_threshold",
     "refiner_swap_method", "controlnet_softness", "freeu_enabled", "freeu_b1", "freeu_b2", "freeu_s1", "freeu_s2",
     "debugging_inpaint_preprocessor", "inpaint_disable_initial_latent", "inpaint_engine", "inpaint_strength",
     "inpaint_respective_field", "inpaint_advanced_masking_checkbox", "invert_mask_checkbox",
     "inpaint_erode_or_dilate", "black_out_nsfw", "vae_name", "debugging_dino", "dino_erode_or_dilate",
     "debugging_enhance_masks_checkbox"}
)  # fmt: skip
# What Fooocus-API's Swagger page fills a str field with; clients copied from it send it as is.
SWAGGER_PLACEHOLDER: Final = "string"
OUTPAINT_SIDES: Final = ("left", "top", "right", "bottom")  # FooocusAPI's outpaint_distance order
_INPAINT_FIELDS: Final = frozenset(
    {"input_image", "input_mask", "inpaint_additional_prompt", "outpaint_selections", "image_prompts",
     *(f"outpaint_distance_{side}" for side in OUTPAINT_SIDES)}
)  # fmt: skip
ROUTE_FIELDS: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "text-to-image": frozenset(),
        "text-to-image-with-ip": frozenset({"image_prompts"}),
        "upscale-vary": frozenset({"input_image", "uov_method", "upscale_value", "image_prompts"}),
        "inpaint-outpaint": _INPAINT_FIELDS,
        "image-prompt": _INPAINT_FIELDS,
    }
)
IMAGE_PROMPT_KEYS: Final = frozenset({"cn_img", "cn_stop", "cn_weight", "cn_type"})
LORA_KEYS: Final = frozenset({"enabled", "model_name", "weight"})
# Fooocus's flags.default_parameters (stop at, weight): what a cn_stop / cn_weight of 0 or null means.
IMAGE_PROMPT_DEFAULTS: Final[Mapping[str, tuple[float, float]]] = MappingProxyType(
    {"ImagePrompt": (0.5, 0.6), "FaceSwap": (0.9, 0.75), "PyraCanny": (0.5, 1.0), "CPDS": (0.5, 1.0)}
)
# Names upstream replaces by its default when unknown, instead of failing the request.
LEGAL_NAMES: Final[Mapping[str, frozenset[str]]] = MappingProxyType(
    {
        "sampler_name": frozenset(SAMPLER_NAMES),
        "scheduler_name": frozenset(SCHEDULER_NAMES),
        "inpaint_engine": frozenset({"None", "v1", "v2.5", "v2.6"}),
        "refiner_swap_method": frozenset({"joint", "separate", "vae"}),
    }
)
DIRECTIONS: Final[Mapping[str, str]] = MappingProxyType(
    {name.lower(): name for name in ("Left", "Right", "Top", "Bottom")}
)
_PATH: Final = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_PATH_PART: Final = re.compile(r"[.\[]")


@dataclass(frozen=True)
class Installed:
    """The names a request may use, read from disk by the caller (downloadable ones included)."""

    checkpoints: frozenset[str]
    loras: frozenset[str]
    vaes: frozenset[str]
    styles: frozenset[str]
    default_model: str


@dataclass
class Translation:
    kind: RouteKind
    fields: dict[str, Any] = field(default_factory=dict)  # FooocusAPI names, values as sent
    ignored: list[str] = field(default_factory=list)  # old-wire names this server does not know
    notes: list[str] = field(default_factory=list)  # what was changed or left out, for the task's notes
    origin: dict[str, str] = field(default_factory=dict)  # FooocusAPI field (or path prefix) -> old name

    @property
    def job_type(self) -> JobType:
        return JOB_TYPES[self.kind]

    @property
    def wire(self) -> str:
        return wire_of(self.kind)


def known_fields(kind: RouteKind) -> frozenset[str]:
    return COMMON | RENAMED.keys() | {"save_name", "advanced_params"} | ROUTE_FIELDS[kind]


def translate(kind: RouteKind, body: Mapping[str, Any], installed: Installed) -> Translation:
    """The FooocusAPI fields for an old-wire body (JSON, or a form already shaped like JSON by multipart.py)."""
    return _Mapper(kind, installed).run(body)


def base_origin(kind: RouteKind) -> dict[str, str]:
    """Old names for FooocusAPI fields whether or not the client sent them (errors about a missing input_mask)."""
    origin = {new: old for old, new in RENAMED.items()}
    origin |= {name: f"advanced_params.{name}" for name in ADVANCED}
    origin |= {f"outpaint_distance[{index}]": f"outpaint_distance_{side}" for index, side in enumerate(OUTPAINT_SIDES)}
    origin |= {"controlnet_image": "image_prompts", "upscale_multiple": "upscale_value"}
    origin |= {"inpaint_mask_image_upload": "input_mask", "inpaint_input_image": "input_image"}
    if kind == "upscale-vary":
        origin["uov_input_image"] = "input_image"
    return origin


class _Mapper:
    def __init__(self, kind: RouteKind, installed: Installed) -> None:
        self.out = Translation(kind, origin=base_origin(kind))
        self.installed = installed

    # -- helpers ----------------------------------------------------------------------------------
    def put(self, name: str, value: Any, old: str | None = None) -> None:
        self.out.fields[name] = value
        if old is not None and old != name:
            self.out.origin[name] = old

    def note(self, text: str) -> None:
        self.out.notes.append(text)

    # -- the body ---------------------------------------------------------------------------------
    def run(self, body: Mapping[str, Any]) -> Translation:
        kind = self.out.kind
        known = known_fields(kind)
        for key, value in body.items():
            if key not in known:
                self.out.ignored.append(str(key))
            elif key in RENAMED:  # Fooocus-API spells the A1111 metadata scheme "a111"
                self.put(RENAMED[key], "a1111" if key == "meta_scheme" and value == "a111" else value, key)
            elif key == "advanced_params":
                self.advanced(value)
            else:
                self.field(key, value)
        distances = {side: body.get(f"outpaint_distance_{side}") for side in OUTPAINT_SIDES}
        if "outpaint_distance_left" in known and any(value is not None for value in distances.values()):
            self.outpaint_distance(distances)
        if kind == "upscale-vary" and "uov_method" not in body:
            self.put("uov_method", "Upscale (2x)")  # the v2 default; v1 requires the field
        if kind in ("inpaint-outpaint", "image-prompt") and "inpaint_respective_field" not in self.out.fields:
            self.put("inpaint_respective_field", 1.0)  # Fooocus-API's default (FooocusAPI's is 0.618)
        self.mixing()
        return self.out

    def field(self, key: str, value: Any) -> None:
        match key:
            case "input_image":
                if not is_no_image(value):
                    target = "uov_input_image" if self.out.kind == "upscale-vary" else "inpaint_input_image"
                    self.put(target, value, key)
            case "input_mask":
                if not is_no_image(value):
                    self.put("inpaint_mask_image_upload", value, key)
            case "upscale_value":
                if value is not None:
                    self.put("upscale_multiple", value, key)
            case "image_prompts":
                self.image_prompts(value)
            case "outpaint_selections":
                self.put(key, _directions(value))
            case "loras":
                self.loras(value)
            case "style_selections":
                self.styles(value)
            case "base_model_name":
                self.base_model(value)
            case "refiner_model_name":
                self.refiner(value)
            case "webhook_url":
                self.webhook(value)
            case "save_name":
                if value:
                    self.note(f"save_name {value!r} left out: output files get the server's names")
            case _ if key.startswith("outpaint_distance_"):
                pass  # merged into outpaint_distance by run()
            case _:
                self.put(key, value)

    # -- advanced_params --------------------------------------------------------------------------
    def advanced(self, value: Any) -> None:
        # v1 forms send a JSON string, and upstream reads an unreadable one as the defaults.
        lenient = isinstance(value, str)
        if lenient:
            value = _json_object(value)
            if value is None:
                self.note("advanced_params is not a JSON object: Fooocus-API's defaults are used, as upstream does")
                return
        if value is None:
            return
        if not isinstance(value, Mapping):
            raise ParamError("advanced_params", "expected an object of advanced parameters")
        before = set(self.out.fields)
        for key, item in value.items():
            if key in ADVANCED:
                self.advanced_field(key, item)
            else:
                self.out.ignored.append(f"advanced_params.{key}")
        if lenient:
            self.drop_if_invalid(set(self.out.fields) - before)

    def advanced_field(self, key: str, value: Any) -> None:
        old = f"advanced_params.{key}"
        legal = LEGAL_NAMES.get(key)
        if legal is not None and isinstance(value, str) and value not in legal:
            self.note(f"{old} {value!r} is unknown: the default is used, as Fooocus-API does")
            return
        vae_missing = isinstance(value, str) and value not in DEFAULT_VAE_NAMES and value not in self.installed.vaes
        if key == "vae_name" and vae_missing:
            self.note(f"{old} {value!r} is not installed: the model's own VAE is used")
            return
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if key == "overwrite_switch" and is_number and math.isfinite(value):  # not finite: the struct names it
            # Fooocus-API types it as a float in -1..1 but uses it as the refiner's switch step.
            value = -1 if value <= 0 else max(1, round(value))
        self.put(key, value, old)

    def drop_if_invalid(self, names: set[str]) -> None:
        """A form's advanced_params that do not validate become the defaults (upstream's advanced_params_parser)."""
        try:
            msgspec.convert({name: self.out.fields[name] for name in names}, GenerateRequest, strict=False)
        except msgspec.ValidationError as exc:
            for name in names:
                del self.out.fields[name]
            name, message = rename_error(str(exc), self.out.origin)
            self.note(
                f"advanced_params left out ({name}: {message}): Fooocus-API's defaults are used, as upstream does"
            )

    # -- lists ------------------------------------------------------------------------------------
    def image_prompts(self, value: Any) -> None:
        if not isinstance(value, list):
            self.put("controlnet_image", value, "image_prompts")
            return
        kept: list[Any] = []
        for index, item in enumerate(value):
            if not isinstance(item, Mapping):
                self.out.origin[f"controlnet_image[{len(kept)}]"] = f"image_prompts[{index}]"
                kept.append(item)
                continue
            self.out.ignored += [f"image_prompts[{index}].{key}" for key in item if key not in IMAGE_PROMPT_KEYS]
            if is_no_image(item.get("cn_img")):
                continue  # upstream pads the list with empty slots; they mean nothing
            cn_type = item.get("cn_type") or "ImagePrompt"
            # An unknown type keeps ImagePrompt's defaults here; the conversion then names cn_type.
            stop, weight = IMAGE_PROMPT_DEFAULTS.get(str(cn_type), IMAGE_PROMPT_DEFAULTS["ImagePrompt"])
            self.out.origin[f"controlnet_image[{len(kept)}]"] = f"image_prompts[{index}]"
            kept.append(
                {
                    "cn_img": item["cn_img"],
                    "cn_stop": stop if _zero_or_none(item.get("cn_stop")) else item["cn_stop"],
                    "cn_weight": weight if _zero_or_none(item.get("cn_weight")) else item["cn_weight"],
                    "cn_type": cn_type,
                }
            )
        self.put("controlnet_image", kept, "image_prompts")

    def loras(self, value: Any) -> None:
        if not isinstance(value, list):
            self.put("loras", value)
            return
        kept: list[Any] = []
        for index, item in enumerate(value):
            if isinstance(item, Mapping):
                self.out.ignored += [f"loras[{index}].{key}" for key in item if key not in LORA_KEYS]
                name = item.get("model_name")
                if isinstance(name, str) and name not in NO_MODEL_NAMES and name not in self.installed.loras:
                    self.note(f"loras[{index}]: LoRA {name!r} is not installed: left out, as Fooocus-API does")
                    continue
                # Fooocus-API before v0.4 had no `enabled`: such entries are enabled (Lora's default).
                item = {key: item[key] for key in LORA_KEYS if key in item}
            self.out.origin[f"loras[{len(kept)}]"] = f"loras[{index}]"
            kept.append(item)
        self.put("loras", kept)

    def styles(self, value: Any) -> None:
        if not isinstance(value, list):
            self.put("style_selections", value)
            return
        unknown = [name for name in value if isinstance(name, str) and name not in self.installed.styles]
        if unknown:
            self.note(f"style_selections: unknown styles left out, as Fooocus-API does: {', '.join(unknown)}")
        self.put("style_selections", [name for name in value if name not in unknown])

    def outpaint_distance(self, sides: Mapping[str, Any]) -> None:
        distance = []
        for side in OUTPAINT_SIDES:
            old = f"outpaint_distance_{side}"
            value = sides[side]
            try:
                pixels = 0 if value is None or value == "" else int(value)
            except (TypeError, ValueError):
                raise ParamError(old, f"expected a whole number of pixels, got {value!r}") from None
            distance.append(max(0, pixels))  # -1 (v2's default) and 0 both mean Fooocus's own distance
        self.put("outpaint_distance", distance)

    # -- names upstream replaces ------------------------------------------------------------------
    def base_model(self, value: Any) -> None:
        if isinstance(value, str) and value in self.installed.checkpoints:
            self.put("base_model_name", value)
        elif value is None or isinstance(value, str):
            default = self.installed.default_model
            self.note(
                f"base_model_name {value!r} is not installed: the server's default {default!r} is used, "
                "as Fooocus-API does"
            )
            self.put("base_model_name", default)
        else:
            self.put("base_model_name", value)  # a wrong type: the conversion names it

    def refiner(self, value: Any) -> None:
        if value is None or (isinstance(value, str) and value in NO_MODEL_NAMES):
            self.put("refiner_model_name", "None")
        elif isinstance(value, str) and value not in self.installed.checkpoints:
            self.note(f"refiner_model_name {value!r} is not installed: no refiner is used, as Fooocus-API does")
            self.put("refiner_model_name", "None")
        else:
            self.put("refiner_model_name", value)

    def webhook(self, value: Any) -> None:
        if value == SWAGGER_PLACEHOLDER:
            self.note(f"webhook_url {value!r} is Fooocus-API's docs placeholder, not a URL: no webhook is called")
        elif value:
            self.put("webhook_url", value)  # checked at admission, as on every route (api/admission.py)

    def mixing(self) -> None:
        """Image prompts next to an input image mix with it, as upstream's req_to_params switches on."""
        if not any(isinstance(item, Mapping) for item in self.out.fields.get("controlnet_image") or []):
            return
        if "uov_input_image" in self.out.fields:
            self.put("mixing_image_prompt_and_vary_upscale", True)
        elif "inpaint_input_image" in self.out.fields:
            self.put("mixing_image_prompt_and_inpaint", True)


def _zero_or_none(value: Any) -> bool:
    if value is None or value == "":
        return True
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False  # not a number: the conversion names the field


def _directions(value: Any) -> Any:
    """Outpaint directions from a list or a comma-joined string, in any letter case."""
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, list):
        return value
    names = [part.strip() if isinstance(part, str) else part for part in value]
    return [DIRECTIONS.get(name.lower(), name) if isinstance(name, str) else name for name in names if name != ""]


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = decode_json(text.encode("utf-8", "surrogatepass")) if text.strip() else {}
    except MalformedJson:
        return None
    return value if isinstance(value, dict) else None


# -- errors named by the old field ------------------------------------------------------------------
def rename_field(name: str, origin: Mapping[str, str]) -> str:
    """`controlnet_image[1].cn_weight` -> `image_prompts[2].cn_weight`: the longest mapped prefix wins."""
    cuts = [match.start() for match in _PATH_PART.finditer(name)]
    for cut in (len(name), *reversed(cuts)):
        old = origin.get(name[:cut])
        if old is not None:
            return old + name[cut:]
    return name


def rename_error(message: str, origin: Mapping[str, str]) -> tuple[str, str]:
    """(old field, message) for a msgspec validation message; the field is `body` when it has no path."""
    found = _PATH.search(message)
    if found is None or not found["path"]:
        return "body", message
    name = rename_field(found["path"], origin)
    return name, message[: found.start()]


def to_request(translation: Translation) -> GenerateRequest:
    """FooocusAPI's request struct; raises ParamError naming the old field of the first wrong value."""
    try:
        return msgspec.convert(translation.fields, GenerateRequest, strict=False)
    except msgspec.ValidationError as exc:
        name, message = rename_error(str(exc), translation.origin)
        raise ParamError(name, message) from None
