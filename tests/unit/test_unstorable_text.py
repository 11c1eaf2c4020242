"""The one rule for text no field may hold (NUL, lone surrogates), on decoded text and on JSON source."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from referral_service.domain.text import unstorable, unstorable_json


def _holds_unstorable(data: Any) -> bool:
    """The reference: parse, then look at every string (keys too). Slow, obviously right."""
    if isinstance(data, str):
        return unstorable(data)
    if isinstance(data, dict):
        return any(_holds_unstorable(k) or _holds_unstorable(v) for k, v in data.items())
    if isinstance(data, list):
        return any(_holds_unstorable(v) for v in data)
    return False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Zarmeena Khattak", False),
        ("زرمینہ خٹک", False),
        ("\U0001f600", False),
        ("a\x00b", True),
        ("a\ud800b", True),
        ("\udfff", True),
        ("\ud83d\ude00", True),  # two code points in a str, not the pair's character: unencodable
        ("", False),
    ],
)
def test_decoded_text_with_nul_or_a_surrogate_is_unstorable(text: str, expected: bool) -> None:
    assert unstorable(text) is expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (r'{"a": "plain"}', False),
        (r'{"a": "\u0000"}', True),
        (r'{"a": "\ud800"}', True),
        (r'{"a": "\uDBFF"}', True),
        (r'{"a": "\udc00"}', True),
        (r'{"a": "\ud83d\ude00"}', False),
        (r'{"a": "\uD83D\uDE00"}', False),
        (r'{"a": "\ud83d\ud83d"}', True),
        (r'{"a": "\ude00\ud83d"}', True),
        (r'{"a": "\ud83d\ude00\ude00"}', True),
        (r'{"a": "\ud83d\\ude00"}', True),  # the high one, then an escaped backslash: lone
        (r'{"a": "\\u0000"}', False),  # a backslash, then the letters u0000
        (r'{"a": "\\\u0000"}', True),  # a backslash, then NUL
        (r'{"a": "\\\\u0000"}', False),
        (r'{"a": "\\ud800"}', False),
        (r'{"\u0000": 1}', True),
        (r'[[["\ud800"]]]', True),
        (r'"\u0041\u00e9\u4e2d"', False),
        ('{"a": "\ud800"}', True),  # raw, as surrogatepass decoding leaves it
    ],
)
def test_json_source_is_judged_as_its_parsed_strings_would_be(source: str, expected: bool) -> None:
    assert unstorable_json(source) is expected
    assert _holds_unstorable(json.loads(source)) is expected


# Any JSON value, its strings drawn from every code point (hypothesis leaves surrogates out unless told),
# with NUL, both halves of a pair, a backslash and a "u" often; written with escapes (ensure_ascii) and raw.
_CHARS = st.characters(exclude_categories=()) | st.sampled_from(["\x00", "\ud83d", "\ude00", "\\", "u", "0"])
_TEXT = st.text(_CHARS, max_size=8)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None)
@given(_VALUES, st.booleans())
def test_json_source_agrees_with_walking_the_parsed_value(value: Any, ascii_only: bool) -> None:
    source = json.dumps(value, ensure_ascii=ascii_only)
    assert unstorable_json(source) is _holds_unstorable(json.loads(source))


def test_the_generated_values_do_reach_both_answers() -> None:
    # Without this the agreement above could hold over values that never hold a surrogate.
    answers: set[bool] = set()

    @settings(max_examples=200, deadline=None)
    @given(_VALUES)
    def collect(value: Any) -> None:
        answers.add(unstorable_json(json.dumps(value)))

    collect()
    assert answers == {True, False}
