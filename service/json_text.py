"""JSON text in Arrow, byte for byte as the records store writes it.

The records store (sql/refresh/4_build_records.sql) renders each record with DuckDB's
`to_json`. A contacts NDJSON export puts each contact's company record together in Arrow
instead of joining every window to the stored company records (README, Exports), so the
pieces here follow DuckDB's writer: `"` and `\\` escaped, the control characters as
`\\b \\f \\n \\r \\t` or `\\u00XX` in upper case, everything else (non-ASCII included) as it is;
timestamps as `iso_utc` renders them.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

CONTROL_CHARACTERS = r"[\x00-\x1f]"
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r",
            "\t": "\\t"}


def json_string(value: str | None) -> str:
    """One value as JSON text: a string, or null."""
    if value is None:
        return "null"
    return '"' + "".join(
        _ESCAPES.get(c) or (f"\\u{ord(c):04X}" if c < " " else c) for c in value) + '"'


def json_strings(values: pa.Array, escaping: str) -> pa.Array:
    """Each value as JSON text. `escaping` is what the column's values need (`escaping_of`,
    known for each column when the companies are loaded): "control" characters, which take the
    slow path, per value; "quotes" and backslashes; or "none"."""
    if escaping == "control":
        return pa.array([json_string(value) for value in values.to_pylist()], pa.string())
    if escaping == "quotes":
        values = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    return pc.fill_null(pc.binary_join_element_wise('"', values, '"', ""), "null")


def escaping_of(values: pa.Array) -> str:
    if pc.any(pc.match_substring_regex(values, CONTROL_CHARACTERS)).as_py():
        return "control"
    if pc.any(pc.match_substring_regex(values, r'["\\]')).as_py():
        return "quotes"
    return "none"


def iso_text(moments: pa.Array) -> pa.Array:
    """'2024-01-02T03:04:05Z', with '.ffffff' only when there are microseconds (as in JSON).
    Arrow's cast writes '2024-01-02 03:04:05.000000', ten times faster than its strftime."""
    if moments.type.tz is not None:  # the values are UTC instants either way
        moments = moments.cast(pa.timestamp(moments.type.unit))
    text = pc.replace_substring(pc.cast(moments, pa.string()), " ", "T", max_replacements=1)
    whole = pc.ends_with(text, ".000000")
    text = pc.if_else(whole, pc.utf8_slice_codeunits(text, 0, -7), text)
    return pc.binary_join_element_wise(text, "Z", "")
