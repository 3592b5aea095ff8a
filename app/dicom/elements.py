"""DICOM JSON (PS3.18 Annex F) elements built from plain values."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

_NUMBER_VRS = {"IS", "DS", "US", "SS", "UL", "SL", "UV", "SV", "FL", "FD"}
_INTEGER_STRING_VRS = {"IS"}

JsonDataset = dict[str, Any]


def element(vr: str, value: Any) -> dict[str, Any]:
    """One DICOM JSON attribute. ``None`` or an empty value gives an attribute with no
    Value (PS3.18 F.2.5: present but empty).

    >>> element("PN", "Doe^John")
    {'vr': 'PN', 'Value': [{'Alphabetic': 'Doe^John'}]}
    >>> element("CS", ["CT", "MR"]), element("IS", 3), element("DA", None)
    ({'vr': 'CS', 'Value': ['CT', 'MR']}, {'vr': 'IS', 'Value': [3]}, {'vr': 'DA'})
    """
    values = _values(value)
    if not values:
        return {"vr": vr}
    if vr == "PN":
        return {"vr": vr, "Value": [_person_name(str(v)) for v in values]}
    if vr in _NUMBER_VRS:
        return {"vr": vr, "Value": [_number(vr, v) for v in values]}
    return {"vr": vr, "Value": [str(v) for v in values]}


def sequence(items: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    return {"vr": "SQ", "Value": [dict(item) for item in items]}


def _values(value: Any) -> list[Any]:
    if value is None or value == "":
        return []
    if isinstance(value, list | tuple):
        return [v for v in value if v is not None and v != ""]
    if isinstance(value, str) and "\\" in value:
        return [v for v in value.split("\\") if v]
    return [value]


def _person_name(value: str) -> dict[str, str]:
    groups = value.split("=")
    names = ("Alphabetic", "Ideographic", "Phonetic")
    return {name: group for name, group in zip(names, groups, strict=False) if group}


def _number(vr: str, value: Any) -> int | float:
    if vr in _INTEGER_STRING_VRS or vr in {"US", "SS", "UL", "SL", "UV", "SV"}:
        return int(value)
    return float(value)
