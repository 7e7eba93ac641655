"""Fooocus's prompt rules: style files and names, applying styles, Random Style, V2, arrays, wildcards."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from fooocus_es.engine.planning import styles
from fooocus_es.engine.planning.plan import build_plan, finalize, merge_layers
from fooocus_es.engine.planning.prompts import V2_SKIPPED_NOTE, apply_arrays, build_prompts
from fooocus_es.engine.planning.styles import Style, StyleBook, load_styles, normalize_name, style_names
from fooocus_es.engine.planning.wildcards import MAX_DEPTH, WildcardDir, apply_wildcards, parse_options

PLANNING_DATA = resources.files("fooocus_es.engine.planning").joinpath("data")
STYLE_NAMES = json.loads(PLANNING_DATA.joinpath("style_names.json").read_text("utf-8"))
GROUP_SIZES = {"fooocus": 8, "sai": 17, "mre": 22, "twri": 89, "diva": 79, "marc_k3nt3l": 62}


def no_wildcards(_name: str) -> None:
    return None


def prompt_set(prompt: str, negative: str = "", selected: tuple[str, ...] = (), seeds=(1,), **kwargs):
    table = kwargs.pop("styles", None) or {
        "A": Style("A", "alpha {prompt} one", "neg a"),
        "B": Style("B", "beta, {prompt}", "neg b"),
        "Plain": Style("Plain", "plain words\nsecond line", ""),
        "Negative Only": Style("Negative Only", "", "bad, worse"),
    }
    return build_prompts(
        prompt,
        negative,
        list(selected),
        list(seeds),
        styles=table,
        wildcards=kwargs.pop("wildcards", no_wildcards),
        **kwargs,
    )


# -- names and files -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("sai-3d-model", "SAI 3D Model"),
        ("mre-sumi-e-symbolic", "MRE Sumi E Symbolic"),
        ("Fooocus Enhance", "Fooocus Enhance"),
        ("mk-ukiyo-e", "Mk Ukiyo E"),
        ("flat-2d-art", "Flat 2d Art"),
        ("adorable-3d-character", "Adorable 3D Character"),
        ("misc (something)", "Misc (Something)"),
        ("dmt-ART-style", "Dmt Art Style"),
    ],
)
def test_names_are_normalised_as_fooocus_does(raw: str, normalised: str) -> None:
    assert normalize_name(raw) == normalised


def test_bundled_files_hold_every_name_in_its_group_in_order() -> None:
    folder = resources.files("fooocus_es.engine.planning").joinpath("data/styles")
    assert sorted(entry.name for entry in folder.iterdir()) == sorted(f"{group}.json" for group in GROUP_SIZES)
    start = 0
    for group, size in GROUP_SIZES.items():
        entries = json.loads(folder.joinpath(f"{group}.json").read_text("utf-8"))
        assert [entry["name"] for entry in entries] == STYLE_NAMES[start : start + size], group
        start += size
        for entry in entries:
            assert entry.get("negative_prompt"), entry["name"]
            if entry["name"] != "Fooocus Negative":
                assert entry["prompt"].count("{prompt}") == 1, entry["name"]
    assert start == len(STYLE_NAMES) == 277
    negative_only = load_styles()["Fooocus Negative"]
    assert negative_only.prompt == "" and negative_only.negative_prompt


def test_style_names_are_the_two_special_ones_then_the_bundled_ones() -> None:
    assert style_names() == ("Fooocus V2", "Random Style", *STYLE_NAMES)
    assert style_names()[:2] == styles.SPECIAL_STYLES
    assert list(load_styles()) == STYLE_NAMES


def test_user_files_load_after_bundled_ones_and_group_files_last(tmp_path: Path) -> None:
    folder = tmp_path / "styles"
    folder.mkdir()
    # Fooocus's own file name for the sai group, with its un-normalised names.
    (folder / "sdxl_styles_sai.json").write_text(json.dumps([{"name": "sai-anime", "prompt": "theirs {prompt}"}]))
    # A non-group file loads before the group files, so its "SAI Anime" loses to the one above.
    (folder / "mine.json").write_text(
        json.dumps([{"name": "my-style", "prompt": "mine {prompt}", "negative_prompt": "no"}, {"name": "SAI Anime"}])
    )
    (folder / "broken.json").write_text("{not json")
    errors: list[str] = []
    loaded = load_styles(tmp_path, errors=errors)
    assert loaded["SAI Anime"] == Style("SAI Anime", "theirs {prompt}", "")
    assert loaded["My Style"] == Style("My Style", "mine {prompt}", "no")
    assert loaded["SAI Pixel Art"] == load_styles()["SAI Pixel Art"]  # untouched bundled template
    assert len(errors) == 1 and "broken.json" in errors[0]
    names = style_names(tmp_path)
    assert names[:2] == styles.SPECIAL_STYLES and names[-1] == "My Style" and len(names) == 2 + 277 + 1


def test_style_book_rereads_only_when_the_folder_changes(tmp_path: Path) -> None:
    book = StyleBook(tmp_path)
    first = book.styles()
    assert book.styles() is first and "Extra" not in first
    (tmp_path / "styles").mkdir()
    path = tmp_path / "styles" / "extra.json"
    path.write_text(json.dumps([{"name": "extra", "prompt": "x {prompt}"}]))
    assert book.names()[-1] == "Extra"
    path.write_text(json.dumps([{"name": "extra", "prompt": "changed {prompt} again"}]))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    assert book.styles()["Extra"].prompt == "changed {prompt} again"


# -- applying styles ---------------------------------------------------------------------------------
def test_style_with_placeholder_wraps_the_prompt_and_adds_its_negative() -> None:
    image = prompt_set("a cat", "blurry", ("A",)).images[0]
    assert image.prompt == "alpha a cat one"
    assert image.negative_prompt == "neg a, blurry"
    assert image.styles == ("A",)


def test_style_without_placeholder_adds_its_lines_after_the_prompt() -> None:
    image = prompt_set("a cat", selected=("Plain",)).images[0]
    assert image.positive_parts == ("a cat", "plain words", "second line")
    assert image.prompt == "a cat, plain words, second line"
    only_negative = prompt_set("a cat", "x", ("Negative Only",)).images[0]
    assert (only_negative.prompt, only_negative.negative_prompt) == ("a cat", "bad, worse, x")


def test_several_styles_apply_in_order_and_merge_negatives() -> None:
    image = prompt_set("a cat", "user neg", ("B", "A", "Plain")).images[0]
    # One template had {prompt}, so the bare prompt is not added again (Fooocus's rule).
    assert image.positive_parts == ("beta, a cat", "alpha a cat one", "plain words", "second line")
    assert image.negative_parts == ("neg b", "neg a", "user neg")
    assert image.styles == ("B", "A", "Plain")


def test_extra_prompt_lines_follow_the_styled_text() -> None:
    image = prompt_set("a cat  \n\n in a hat.\n(red:1.2) scarf", "neg one\nneg two", ("A",)).images[0]
    assert image.positive_parts == ("alpha a cat one", "in a hat", "(red:1.2) scarf")
    assert image.negative_parts == ("neg a", "neg one", "neg two")
    assert image.user_prompt == "a cat\nin a hat\n(red:1.2) scarf"
    assert prompt_set("", "", ()).images[0].prompt == ""


def test_random_style_is_drawn_from_the_image_seed() -> None:
    table = load_styles()
    seeds = [11, 12, 13, 14, 15, 16]
    first = prompt_set("a cat", selected=("Random Style",), seeds=seeds, styles=table)
    again = prompt_set("a cat", selected=("Random Style",), seeds=seeds, styles=table)
    picked = [image.styles[0] for image in first.images]
    assert picked == [image.styles[0] for image in again.images]
    assert len(set(picked)) > 1
    # Fooocus's draw: a fresh Random(seed), one choice over the styles in load order.
    assert picked == [random.Random(seed).choice(list(table)) for seed in seeds]
    assert first.images[0].prompt == table[picked[0]].prompt.replace("{prompt}", "a cat")


def test_fooocus_v2_is_skipped_with_a_note() -> None:
    result = prompt_set("a cat", selected=("Fooocus V2", "A"))
    assert result.notes == (V2_SKIPPED_NOTE,)
    assert result.images[0].styles == ("A",)
    assert prompt_set("", selected=("Fooocus V2",)).notes == ()  # Fooocus skips V2 for an empty prompt


def test_unknown_style_is_skipped_with_a_note() -> None:
    result = prompt_set("a cat", selected=("Gone",))
    assert result.images[0].prompt == "a cat"
    assert result.notes == ("style 'Gone' is not installed; skipped",)


# -- arrays ------------------------------------------------------------------------------------------
def test_arrays_take_the_next_combination_per_image_first_group_fastest() -> None:
    text = "a [[red,green]] [[cat, dog,bird]]"
    got = [apply_arrays(text, i) for i in range(7)]
    assert got == [
        "a red cat",
        "a green cat",
        "a red dog",
        "a green dog",
        "a red bird",
        "a green bird",
        "a red cat",  # cycles after all 6 combinations
    ]
    assert apply_arrays("no arrays (x:1.3)", 5) == "no arrays (x:1.3)"
    images = prompt_set("[[a,b,c]] thing", seeds=(5, 5, 5)).images
    assert [image.prompt for image in images] == ["a thing", "b thing", "c thing"]


# -- wildcards ---------------------------------------------------------------------------------------
def write_wildcards(data_dir: Path, files: dict[str, str]) -> None:
    folder = data_dir / "wildcards"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (folder / f"{name}.txt").write_text(text)


def test_wildcard_files_skip_blank_lines_and_comments() -> None:
    assert parse_options("# colours\nred\n\n  blue  \n#green\n") == ("red", "blue")


def test_wildcards_random_by_seed_are_reproducible(tmp_path: Path) -> None:
    write_wildcards(tmp_path, {"animal": "cat\ndog\nfox\nowl\nyak\nemu\n"})
    source = WildcardDir(tmp_path)

    def run(seed: int) -> str:
        return apply_wildcards("a __animal__ and a __animal__", source, random.Random(seed), 0)

    assert run(3) == run(3)
    assert len({run(seed) for seed in range(12)}) > 1
    rng = random.Random(3)
    first, second = rng.choice(source("animal")), rng.choice(source("animal"))
    assert run(3) == f"a {first} and a {second}"


def test_wildcards_in_order_follow_the_image_index(tmp_path: Path) -> None:
    write_wildcards(tmp_path, {"animal": "cat\ndog\nfox\n"})
    source = WildcardDir(tmp_path)
    got = [apply_wildcards("__animal__", source, random.Random(0), i, in_order=True) for i in range(4)]
    assert got == ["cat", "dog", "fox", "cat"]


def test_nested_unknown_and_too_deep_wildcards(tmp_path: Path) -> None:
    write_wildcards(tmp_path, {"scene": "a __animal__ in __place__\n", "animal": "cat\n", "loop": "__loop__ again\n"})
    notes: list[str] = []
    source = WildcardDir(tmp_path)
    text = apply_wildcards("__scene__", source, random.Random(0), 0, notes=notes)
    assert text == "a cat in __place__"
    assert notes == ["wildcard __place__: no wildcards/place.txt with options; left as written"]
    notes.clear()
    deep = apply_wildcards("__loop__", source, random.Random(0), 0, notes=notes)
    assert deep == "__loop__" + " again" * MAX_DEPTH
    assert notes == [f"wildcards nested deeper than {MAX_DEPTH} levels were left unexpanded"]


def test_data_dir_wildcards_override_bundled_ones(tmp_path: Path) -> None:
    bundled = WildcardDir(None)
    assert {"color", "lighting", "scene"} <= set(bundled.names())
    assert bundled("color") and bundled("../etc") is None
    write_wildcards(tmp_path, {"color": "plaid\n"})
    assert WildcardDir(tmp_path)("color") == ("plaid",)
    assert WildcardDir(tmp_path)("lighting") == bundled("lighting")


# -- build_plan ----------------------------------------------------------------------------------------
def plan_params(**sent) -> dict:
    return finalize(merge_layers(sent), rng=random.Random(7))


def test_build_plan_gives_every_image_its_own_prompt(tmp_path: Path) -> None:
    write_wildcards(tmp_path, {"animal": "cat\ndog\nfox\n"})
    params = plan_params(
        prompt="a [[small,big]] __animal__\nin the snow",
        negative_prompt="blurry",
        style_selections=["Fooocus V2", "SAI Anime", "Fooocus Negative"],
        read_wildcards_in_order=True,
        image_number=3,
        image_seed=40,
    )
    plan = build_plan("t1", params, data_dir=tmp_path)
    table = load_styles()
    anime = table["SAI Anime"].prompt
    subjects = ("a small cat", "a big dog", "a small fox")
    expected = [f"{anime.replace('{prompt}', text)}, in the snow" for text in subjects]
    assert list(plan.prompts) == expected
    assert plan.prompt == expected[0] and plan.prompt_for(2) == expected[2]
    negative = ", ".join([table["SAI Anime"].negative_prompt, table["Fooocus Negative"].negative_prompt, "blurry"])
    assert plan.negative_prompts == (negative,) * 3 and plan.negative_prompt == negative
    assert plan.resolved_prompts[1] == "a big dog\nin the snow"
    assert plan.styles == ("SAI Anime", "Fooocus Negative") and len(plan.image_styles) == 3
    assert plan.notes == (V2_SKIPPED_NOTE,)
    assert plan.seeds == (40, 41, 42) and len(plan.prompt_parts) == 3


def test_build_plan_uses_user_styles_and_the_inpaint_prompt_line(tmp_path: Path) -> None:
    (tmp_path / "styles").mkdir()
    (tmp_path / "styles" / "house.json").write_text(json.dumps([{"name": "house-style", "prompt": "house {prompt}"}]))
    params = plan_params(prompt="a door", style_selections=["House Style"])
    assert build_plan("t", params, data_dir=tmp_path).prompt == "house a door"
    inpaint = plan_params(
        prompt="a door", style_selections=[], inpaint_input_image="inputs/x.png", inpaint_additional_prompt="red paint"
    )
    assert inpaint["current_tab"] == "inpaint"
    assert build_plan("t", inpaint).prompts == ("red paint, a door",)


def test_prompt_rules_import_no_torch() -> None:
    modules = "fooocus_es.engine.planning.plan, fooocus_es.engine.planning.prompts"
    code = f"import sys, {modules}; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
