"""File names as text, for every place a path is stored or shown.

On Linux a file name is bytes; Python hands a name that is not valid UTF-8 (b"caf\\xe9.jpg", common on old
NAS, SMB and FAT volumes) over as a str with lone surrogates (surrogateescape: 'caf\\udce9.jpg'), which no
UTF-8 encoder accepts. Two forms of such text come from here:

- machine forms, lossless: `json_dumps` writes valid JSON that is valid UTF-8, with the lone surrogates (and
  DEL, the C1 controls and the Unicode line and paragraph separators) as JSON ``\\uXXXX`` escapes, so
  `json.loads` gives back the same str and `os.fsencode` of it the original bytes; `csv_cell` / `csv_text`
  carry the same ``\\uXXXX`` form in a csv cell and read it back;
- a display form for people, `display`: one line, no control character, undecodable bytes as ``\\xe9``.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata

# Characters a machine form writes as \uXXXX: lone surrogates (undecodable bytes, or a broken str), DEL and
# the C1 controls (a terminal may read 0x9b as an escape sequence), and the two Unicode line separators.
_JSON_ESCAPED = re.compile("[\ud800-\udfff\x7f-\x9f\u2028\u2029]")
# The same set plus the C0 controls, for csv cells (a newline in a cell would split the row for line tools).
_CSV_ESCAPED = re.compile("[\x00-\x1f\ud800-\udfff\x7f-\x9f\u2028\u2029]")
# In a csv cell: a run of backslashes before "uXXXX" (lower-case hex). An odd run ends in an escape.
_CSV_SEQUENCE = re.compile(r"(\\+)u([0-9a-f]{4})")
_CSV_ORIGINAL = re.compile(r"(\\*)(u[0-9a-f]{4}|[\x00-\x1f\ud800-\udfff\x7f-\x9f\u2028\u2029])")

# Characters that change how the rest of a line reads on a terminal without being controls (Cc):
# bidirectional embeddings, overrides and isolates, and the implicit direction marks.
_BIDI = frozenset("\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u061c")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _u_escape(match: re.Match) -> str:
    return f"\\u{ord(match.group(0)):04x}"


def finite(value):
    """`value` with every float that is NaN or infinite replaced by None, in nested dicts, lists and tuples."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def json_dumps(value, indent: int | None = None) -> str:
    """JSON text of `value` that is always valid and always encodes to UTF-8: non-ASCII text is kept as it is,
    lone surrogates (a file name's undecodable bytes) become \\udcXX escapes, NaN and infinities become null."""
    text = json.dumps(finite(value), ensure_ascii=False, allow_nan=False, indent=indent)
    # Outside strings json.dumps writes only ASCII, so every such character is inside a string, where its
    # \u escape means the same character.
    return _JSON_ESCAPED.sub(_u_escape, text)


def csv_cell(text: str) -> str:
    """A csv cell for `text`, with the characters `json_dumps` escapes and the C0 controls as \\uXXXX; a run of
    backslashes that already stands before "uXXXX" is doubled, so `csv_text` reads any cell back exactly."""

    def one(match: re.Match) -> str:
        slashes, what = match.groups()
        if what.startswith("u") and len(what) == 5:
            return slashes * 2 + what
        return slashes * 2 + f"\\u{ord(what):04x}"

    return _CSV_ORIGINAL.sub(one, text)


def csv_text(cell: str) -> str:
    """The text a `csv_cell` stands for (a cell without escapes is returned as it is)."""

    def one(match: re.Match) -> str:
        slashes, code = match.groups()
        if len(slashes) % 2 == 0:
            return slashes[: len(slashes) // 2] + "u" + code
        return slashes[: len(slashes) // 2] + chr(int(code, 16))

    return _CSV_SEQUENCE.sub(one, cell)


def display(text: object) -> str:
    """`text` (a path or a message naming one) for a terminal: always one line, and nothing in it can move the
    cursor, change colours or reorder what follows. Undecodable bytes show as \\xe9, newline, carriage return
    and tab as \\n, \\r and \\t, other C0 controls and DEL as \\x1b, C1 controls, Unicode line separators and
    bidirectional controls as \\u0085. Everything else is shown as it is."""
    text = str(text)
    if text.isprintable():
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if 0xDC80 <= code <= 0xDCFF:  # a byte surrogateescape could not decode
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF or ch in _BIDI or unicodedata.category(ch) in ("Cc", "Zl", "Zp"):
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
