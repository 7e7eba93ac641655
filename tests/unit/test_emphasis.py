"""ComfyUI's emphasis syntax: each case's expected segments follow ComfyUI's sd1_clip.token_weights."""

from __future__ import annotations

import pytest

from fooocus_es.engine.planning.emphasis import has_emphasis, parse_emphasis

CASES: list[tuple[str, list[tuple[str, float]]]] = [
    # plain text
    ("", []),
    ("a photo of a cat", [("a photo of a cat", 1.0)]),
    # bare brackets multiply by 1.1, nesting multiplies again
    ("(cat)", [("cat", 1.1)]),
    ("((cat))", [("cat", 1.1 * 1.1)]),
    ("(((cat)))", [("cat", 1.1 * 1.1 * 1.1)]),
    ("a (cat) sat", [("a ", 1.0), ("cat", 1.1), (" sat", 1.0)]),
    ("(a (b) c)", [("a ", 1.1), ("b", 1.1 * 1.1), (" c", 1.1)]),
    # explicit weights
    ("(cat:1.5)", [("cat", 1.5)]),
    ("a (cat:0.5) b", [("a ", 1.0), ("cat", 0.5), (" b", 1.0)]),
    ("(cat:1.0)", [("cat", 1.0)]),
    ("(cat:0)", [("cat", 0.0)]),
    ("(cat:-1)", [("cat", -1.0)]),
    ("(cat:1e1)", [("cat", 10.0)]),
    ("(cat: 1.2 )", [("cat", 1.2)]),
    ("(cat:.5)", [("cat", 0.5)]),
    # an explicit weight replaces the enclosing weight (ComfyUI), brackets inside it multiply it
    ("((cat:1.5))", [("cat", 1.5)]),
    ("((cat:1.5) dog)", [("cat", 1.5), (" dog", 1.1)]),
    ("((cat):1.5)", [("cat", 1.5 * 1.1)]),
    ("(a (b) c:2)", [("a ", 2.0), ("b", 2.2), (" c", 2.0)]),
    # the last colon separates the weight; what does not parse stays text
    ("(a:1:2)", [("a:1", 2.0)]),
    ("(cat:big)", [("cat:big", 1.1)]),
    ("(cat:)", [("cat:", 1.1)]),
    ("(:1.5)", [(":1.5", 1.1)]),
    ("a:1.5", [("a:1.5", 1.0)]),
    # escapes are literal parentheses
    ("\\(cat\\)", [("(cat)", 1.0)]),
    ("(a \\) b)", [("a ) b", 1.1)]),
    ("\\((cat)\\)", [("(", 1.0), ("cat", 1.1), (")", 1.0)]),
    ("(cat\\:1.5)", [("cat\\", 1.5)]),  # a backslash before ":" escapes nothing
    # unbalanced parentheses are literal text
    ("(cat", [("(cat", 1.0)]),
    ("cat)", [("cat)", 1.0)]),
    ("(a))b", [("a", 1.1), (")b", 1.0)]),
    ("((a)", [("(a", 1.1)]),
    ("a) (b)", [("a) (b)", 1.0)]),  # after a stray ")" ComfyUI counts from -1: nothing opens
    # empty groups vanish; adjacent groups stay separate segments (merging would change words)
    ("()", []),
    ("a () b", [("a ", 1.0), (" b", 1.0)]),
    ("(x)(y)", [("x", 1.1), ("y", 1.1)]),
    # other brackets are not special
    ("[cat]", [("[cat]", 1.0)]),
    ("{cat} <lora:x:1>", [("{cat} <lora:x:1>", 1.0)]),
    ("[(cat:1.3)]", [("[", 1.0), ("cat", 1.3), ("]", 1.0)]),
    # newlines are kept (the tokenizer turns them into spaces)
    ("a\n(b)", [("a\n", 1.0), ("b", 1.1)]),
]


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(text) for text, _ in CASES])
def test_parse_emphasis(text: str, expected: list[tuple[str, float]]) -> None:
    segments = parse_emphasis(text)
    assert [s for s, _ in segments] == [s for s, _ in expected]
    assert [w for _, w in segments] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_starting_weight_scales_bare_brackets_only() -> None:
    assert parse_emphasis("a (b) (c:2)", weight=2.0) == [
        ("a ", 2.0),
        ("b", pytest.approx(2.2)),
        (" ", 2.0),
        ("c", 2.0),
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a cat", False), ("(cat:1.0)", False), ("\\(cat\\)", False), ("(cat)", True), ("(cat:0.9)", True)],
)
def test_has_emphasis(text: str, expected: bool) -> None:
    assert has_emphasis(parse_emphasis(text)) is expected
