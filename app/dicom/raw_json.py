"""DICOM JSON (PS3.18 Annex F) of one element straight from its encoded bytes, for the
value representations whose encoding is plain.

Converting every value of a header to Python objects (pydicom's ``DataElement`` values)
and those to JSON is most of what parsing a small instance costs, and an archive parses
every instance it receives. For the plain cases — text in the default repertoire, Latin-1
or UTF-8, numbers as text or binary, tags, short binary values — the JSON is made here
from the raw bytes, as pydicom would make it; for anything else (sequences, UN, other
character sets, an empty value among several, a value pydicom would have to repair)
:func:`element_json` answers None and pydicom converts the element as before.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from typing import Any

#: Python codecs of the Specific Character Set (0008,0005) values handled here: the
#: default repertoire (PS3.5 §6.1.2.2, decoded as Latin-1, as pydicom does), Latin-1,
#: and UTF-8. Others (ISO 2022 code extensions, other single-byte sets) are pydicom's.
CODECS = {
    None: "latin_1",
    "": "latin_1",
    "ISO_IR 6": "latin_1",
    "ISO_IR 100": "latin_1",
    "ISO_IR 192": "utf_8",
}

#: Text decoded with the Specific Character Set (PS3.5 §6.1.2.3), split into values.
_SPECIFIC_MULTI = frozenset({"SH", "LO", "UC"})
#: Text decoded with it, one value (no backslash splitting, PS3.5 Table 6.2-1).
_SPECIFIC_SINGLE = frozenset({"ST", "LT", "UT"})
#: Text in the default repertoire, split into values, padding removed.
_DEFAULT_MULTI = frozenset({"AS", "CS", "DA", "DT", "TM", "UI"})
_BINARY_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
_INLINE_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
_HANDLED = (
    _SPECIFIC_MULTI
    | _SPECIFIC_SINGLE
    | _DEFAULT_MULTI
    | _INLINE_BINARY
    | set(_BINARY_NUMBERS)
    | {"AE", "PN", "DS", "IS", "AT"}
)
#: What a decimal or integer string of PS3.5 Table 6.2-1 may hold, once trimmed.
_DS = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_IS = re.compile(r"[+-]?\d+")


def element_json(vr: str, value: bytes, codec: str | None) -> dict[str, Any] | None:
    """The DICOM JSON of an element of ``vr`` whose encoded little-endian value is
    ``value``, its text decoded with ``codec`` (from :data:`CODECS`; None: a character
    set not handled here); None when pydicom must convert it."""
    if vr not in _HANDLED:
        return None
    if not value:
        return {"vr": vr}
    try:
        text = _text(vr, value, codec)
    except _Undecodable:
        return None
    if text is not None and "\x00" in text.rstrip("\x00 "):
        return None  # NUL is dropped from stored JSON: the general path does that
    if text is None:
        return _binary_json(vr, value)
    if vr in _DEFAULT_MULTI or vr in _SPECIFIC_MULTI:
        return _strings(vr, text, strip_leading=False)
    if vr == "AE":
        return _strings(vr, text, strip_leading=True)
    if vr in _SPECIFIC_SINGLE:
        return _one(vr, text.rstrip("\x00 "))
    if vr == "PN":
        return _person_names(text)
    return _numbers(vr, text)


def _binary_json(vr: str, value: bytes) -> dict[str, Any] | None:
    if vr in _BINARY_NUMBERS:
        return _binary(vr, value)
    if vr == "AT":
        if len(value) % 4:
            return None
        pairs = struct.unpack(f"<{len(value) // 2}H", value)
        return {"vr": vr, "Value": [f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2)]}
    if vr in _INLINE_BINARY:
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}
    return None


class _Undecodable(Exception):
    pass


def _text(vr: str, value: bytes, codec: str | None) -> str | None:
    """The value as text, None for a binary VR; _Undecodable when pydicom must decode."""
    if vr in _SPECIFIC_MULTI or vr in _SPECIFIC_SINGLE or vr == "PN":
        if codec is None:
            raise _Undecodable
        try:
            return value.decode(codec)
        except UnicodeDecodeError:
            raise _Undecodable from None
    if vr in _DEFAULT_MULTI or vr == "AE" or vr == "DS" or vr == "IS":
        return value.decode("latin_1")
    return None


def _one(vr: str, text: str) -> dict[str, Any]:
    return {"vr": vr, "Value": [text]} if text else {"vr": vr}


def _strings(vr: str, text: str, *, strip_leading: bool) -> dict[str, Any] | None:
    if vr in _SPECIFIC_MULTI:
        values = [v.rstrip("\x00 ") for v in text.split("\\")]
    elif strip_leading:
        values = [v.strip() for v in text.split("\\")]
    else:
        values = text.rstrip(" \x00").split("\\")
    if len(values) > 1 and not all(values):
        return None  # an empty value among several: pydicom's rendering decides
    return {"vr": vr, "Value": values} if values != [""] else {"vr": vr}


def _person_names(text: str) -> dict[str, Any] | None:
    values = text.rstrip("\x00 ").split("\\")
    if any("=" in v for v in values) or (len(values) > 1 and not all(values)):
        return None  # ideographic or phonetic groups: pydicom's PersonName
    if values == [""]:
        return {"vr": "PN"}
    return {"vr": "PN", "Value": [{"Alphabetic": v} for v in values]}


def _numbers(vr: str, text: str) -> dict[str, Any] | None:
    values = text.rstrip(" \x00").split("\\")
    pattern = _DS if vr == "DS" else _IS
    found: list[float | int] = []
    for v in values:
        v = v.strip(" ")
        if not pattern.fullmatch(v):
            return None
        number = float(v) if vr == "DS" else int(v)
        if vr == "DS" and not math.isfinite(number):
            return None
        found.append(number)
    return {"vr": vr, "Value": found}


def _binary(vr: str, value: bytes) -> dict[str, Any] | None:
    code = _BINARY_NUMBERS[vr]
    size = struct.calcsize("<" + code)
    if len(value) % size:
        return None
    numbers = list(struct.unpack(f"<{len(value) // size}{code}", value))
    if vr in ("FL", "FD") and not all(math.isfinite(n) for n in numbers):
        return None
    return {"vr": vr, "Value": numbers}
