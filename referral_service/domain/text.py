"""Text that no field may hold, whichever way it comes in: one rule for JSON bodies, forms and sign-in.

Two kinds of character a client can send that the service cannot keep:

* U+0000 (NUL): PostgreSQL text cannot hold it, so a plaintext column fails in the driver (a 500) and a
  sealed one would keep it on SQLite only. No name, note or code needs one.
* a lone surrogate (U+D800-U+DFFF not forming a pair, e.g. JSON's "\\ud800"): half of a UTF-16 pair, not a
  character. It has no UTF-8 form, so sealing, exporting or showing it fails later, far from the request.

`unstorable(text)` answers for text already decoded (a form's values, a sign-in name). A JSON body is
checked as sent, by `unstorable_json(source)`: the same characters raw, or written as `\\u` escapes,
found in one scan of the source, so the parsed body need not be walked again.
"""

from __future__ import annotations

import re

MESSAGE = (
    "text in the body must not contain NUL (U+0000) or unpaired surrogates (U+D800-U+DFFF): "
    "they cannot be stored as UTF-8 text"
)

_CHARACTERS = "\x00\ud800-\udfff"  # in decoded text even a pair is two lone halves: Python joins none
_DECODED = re.compile(f"[{_CHARACTERS}]")
_HEX2 = "[0-9a-fA-F]{2}"
# In JSON source: the characters raw (a surrogate reaches the parser from bytes that are not UTF-8,
# which Python's JSON reader decodes with "surrogatepass"), or as an escape: \u0000, or a surrogate
# that is not a high one followed at once by a low one. An escape starts at an odd run of backslashes
# (an even run is escaped backslashes, and the "u" after it is a letter).
_SOURCE = re.compile(
    rf"""
    [{_CHARACTERS}]
    | (?<!\\)(?:\\\\)*\\u(?:
        (?P<pair>[dD][89abAB]{_HEX2}\\u[dD][c-fC-F]{_HEX2})
        | 0000
        | [dD][89a-fA-F]{_HEX2}
    )
    """,
    re.VERBOSE,
)


def unstorable(text: str) -> bool:
    """Whether `text` holds a NUL or a surrogate."""
    return _DECODED.search(text) is not None


# Control characters (C0, DEL, C1: line breaks, tabs, terminal escapes) and halves of surrogate pairs. No
# organisation's name holds one; a name that did could break the lines an operator reads (a forged
# "updated ..." line in an import's summary) or drive the terminal.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control(text: str) -> bool:
    """Whether `text` holds a control character or a surrogate (which `unstorable` also refuses)."""
    return _CONTROL.search(text) is not None


def shown(text: str) -> str:
    """`text` for one line of a terminal or a log: control characters and surrogates as escapes
    (\\n, \\x1b, \\ud800), everything else, Urdu as well, as it is."""
    return _CONTROL.sub(lambda m: ascii(m.group())[1:-1], text)


def unstorable_json(source: str) -> bool:
    """Whether the JSON text `source` (already parsed: every escape is inside a string) would give a
    string, key or value, that holds a NUL or a lone surrogate."""
    if "\\u" not in source:  # nearly every body: no escape at all, so only raw characters can count
        return _DECODED.search(source) is not None
    return any(match["pair"] is None for match in _SOURCE.finditer(source))
