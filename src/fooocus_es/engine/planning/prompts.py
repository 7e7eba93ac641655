"""Fooocus's prompt rules, per image: lines, wildcards, arrays, styles, Random Style, Fooocus V2.

Pure (no torch, no I/O): styles and wildcard options come in as a mapping and a lookup function.
Follows Fooocus 2.5's `process_prompt` (fooocus-facts §3.4, §3.9), image by image:

1. Prompt and negative are split into lines. Line 1 is the main prompt; the other lines are
   extra prompts that follow the styled text.
2. Each image gets `random.Random(seed)`. It draws, in this order, wildcards in the main prompt,
   then the negative, then the extra lines, then one style per "Random Style".
3. `[[a,b,c]]` arrays are resolved in the main prompt only, by image index.
4. Fooocus V2: with an expansion model installed (`expand=True`), each image's main prompt is
   kept as `expansion_source`; the engine expands it with the image's seed and appends the result
   as the last positive part (planning stays torch-free). Without one the style is skipped with a note.
5. Styles apply in the order given. A template's `{prompt}` is replaced by the main prompt. If no
   selected template has `{prompt}`, the main prompt goes first. Template negatives precede the
   user's negative.

Fooocus encodes each resulting part separately and concatenates the conditionings. Here the parts
are also joined with ", " into one text per image (`prompt`), and kept (`positive_parts`) for an
encoder that wants to do it Fooocus's way. Emphasis such as `(word:1.2)` is passed through untouched.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Final

import msgspec

from fooocus_es.engine.planning.styles import FOOOCUS_V2, RANDOM_STYLE, Style
from fooocus_es.engine.planning.wildcards import WildcardOptions, apply_wildcards

V2_SKIPPED_NOTE: Final = "Fooocus V2 prompt expansion skipped: no expansion model installed in models/prompt_expansion/"
ARRAY: Final = re.compile(r"\[\[(.*?)\]\]")


class ImagePrompts(msgspec.Struct, frozen=True, kw_only=True):
    """The prompt text of one image."""

    seed: int
    prompt: str  # what the text encoder gets: positive_parts joined with ", "
    negative_prompt: str
    positive_parts: tuple[str, ...]  # Fooocus's separately encoded pieces, in order
    negative_parts: tuple[str, ...]
    styles: tuple[str, ...]  # styles applied, in order, "Random Style" resolved
    # The user's text with wildcards and arrays resolved, lines kept, no styles (Fooocus logs these).
    user_prompt: str
    user_negative_prompt: str
    expansion_source: str = ""  # Fooocus V2's input (the main line, wildcards and arrays resolved); "" = none


class PromptSet(msgspec.Struct, frozen=True):
    images: tuple[ImagePrompts, ...]
    notes: tuple[str, ...] = ()


def clean_line(text: str) -> str:
    """Fooocus's `safe_str`: squeeze double spaces, trim spaces, commas and full stops at the ends."""
    while "  " in text:
        text = text.replace("  ", " ")
    return text.strip(",. \r\n")


def split_lines(text: str) -> list[str]:
    """Non-empty cleaned lines; at least one (possibly empty) so line 1 always exists."""
    return [line for line in (clean_line(raw) for raw in text.splitlines()) if line] or [""]


def apply_arrays(text: str, index: int) -> str:
    """`[[a,b,c]]` groups take combination `index`, the first group varying fastest (as Fooocus).

    With groups of sizes n1, n2, ... image i uses option (i mod n1) of the first group,
    ((i div n1) mod n2) of the second, and so on, cycling once every combination was used.
    Options are split on "," and trimmed.
    """
    groups = [match.split(",") for match in ARRAY.findall(text)]
    if not groups:
        return text
    total = 1
    for group in groups:
        total *= len(group)
    remaining = index % total
    chosen: list[str] = []
    for group in groups:
        chosen.append(group[remaining % len(group)].strip())
        remaining //= len(group)
    picks = iter(chosen)
    return ARRAY.sub(lambda _match: next(picks), text)


def apply_style(style: Style, prompt: str) -> tuple[list[str], list[str], bool]:
    """(positive lines, negative lines, whether the template had `{prompt}`), as Fooocus's apply_style."""
    return (
        style.prompt.replace("{prompt}", prompt).splitlines(),
        style.negative_prompt.splitlines(),
        "{prompt}" in style.prompt,
    )


def _apply_styles(
    selected: Sequence[str], styles: Mapping[str, Style], pool: Sequence[str], rng: random.Random, prompt: str
) -> tuple[list[str], list[str], list[str]]:
    """(positive lines, negative lines, style names applied) for one image."""
    positive: list[str] = []
    negative: list[str] = []
    applied: list[str] = []
    placeholder_used = False
    for name in selected:
        if name == RANDOM_STYLE:
            if not pool:
                continue
            name = rng.choice(pool)
        style = styles.get(name)
        if style is None:
            continue
        style_positive, style_negative, has_placeholder = apply_style(style, prompt)
        positive += style_positive
        negative += style_negative
        placeholder_used |= has_placeholder
        applied.append(name)
    if not placeholder_used:  # no template carried the prompt, so it leads on its own
        positive.insert(0, prompt)
    return positive, negative, applied


def build_prompts(
    prompt: str,
    negative_prompt: str,
    style_selections: Sequence[str],
    seeds: Sequence[int],
    *,
    styles: Mapping[str, Style],
    wildcards: WildcardOptions,
    read_wildcards_in_order: bool = False,
    expand: bool = False,
) -> PromptSet:
    """Every image's prompt text; `seeds` has one entry per image.

    `expand`: a Fooocus V2 expansion model is installed, so a selected "Fooocus V2" is applied.
    """
    notes: list[str] = []
    lines, negative_lines = split_lines(prompt), split_lines(negative_prompt)
    main, extras = lines[0], lines[1:]
    negative_main, negative_extras = negative_lines[0], negative_lines[1:]
    selected = [name for name in style_selections if name != FOOOCUS_V2]
    use_expansion = FOOOCUS_V2 in style_selections and bool(main)  # Fooocus skips it for an empty prompt
    if use_expansion and not expand:
        notes.append(V2_SKIPPED_NOTE)
    use_expansion = use_expansion and expand
    for name in selected:
        if name != RANDOM_STYLE and name not in styles:
            notes.append(f"style {name!r} is not installed; skipped")
    style_pool = list(styles)

    images = []
    for index, seed in enumerate(seeds):
        rng = random.Random(seed)
        expand = partial(
            apply_wildcards, options=wildcards, rng=rng, index=index, in_order=read_wildcards_in_order, notes=notes
        )
        task_prompt = apply_arrays(expand(main), index)
        task_negative = expand(negative_main)
        task_extras = [expand(line) for line in extras]
        task_negative_extras = [expand(line) for line in negative_extras]

        positive, negative, applied = _apply_styles(selected, styles, style_pool, rng, task_prompt)
        negative.append(task_negative)
        positive_parts = tuple(part for part in (clean_line(p) for p in positive + task_extras) if part)
        negative_parts = tuple(part for part in (clean_line(n) for n in negative + task_negative_extras) if part)
        images.append(
            ImagePrompts(
                seed=seed,
                prompt=", ".join(positive_parts),
                negative_prompt=", ".join(negative_parts),
                positive_parts=positive_parts,
                negative_parts=negative_parts,
                styles=(FOOOCUS_V2, *applied) if use_expansion else tuple(applied),  # as Fooocus logs them
                user_prompt="\n".join(part for part in [task_prompt, *task_extras] if part),
                user_negative_prompt="\n".join(part for part in [task_negative, *task_negative_extras] if part),
                expansion_source=task_prompt if use_expansion else "",
            )
        )
    if not style_pool and RANDOM_STYLE in selected:
        notes.append("Random Style skipped: no styles are installed")
    return PromptSet(images=tuple(images), notes=tuple(dict.fromkeys(notes)))
