"""QIDO-RS query parameters (PS3.18 §8.3.4) parsed into typed matching conditions.

Matching follows PS3.4 C.2.2.2: single value, UID list, wildcard (``*`` and ``?``),
range (DA, TM) and universal (an empty value: return the attribute, match everything).
Every invalid parameter is a 400 naming the parameter.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

from app.dicom.attributes import BY_TAG, INDEXED, MATCHABLE, NESTED, Attribute, resolve_path
from app.dicom.levels import Level
from app.dicom.uids import is_uid
from app.errors import BadRequest


class Match(Enum):
    SINGLE = "single"
    LIST = "list"
    WILDCARD = "wildcard"
    RANGE = "range"


@dataclass(frozen=True)
class Condition:
    attribute: Attribute
    match: Match
    #: SINGLE: (value,); LIST: values; WILDCARD: (pattern,); RANGE: (low, high), "" = open.
    values: tuple[str, ...]


@dataclass(frozen=True)
class QidoQuery:
    level: Level
    conditions: tuple[Condition, ...] = ()
    #: Tags asked for by ``includefield`` (or by a universal-matching parameter).
    include: frozenset[str] = frozenset()
    include_all: bool = False
    fuzzy: bool = False
    limit: int = 100
    offset: int = 0
    #: The client asked for more than the server's maximum (PS3.18 §8.3.4.4: warn).
    limit_clamped: bool = False
    #: UIDs fixed by the resource path (``/studies/{s}/series``): not matching keys.
    scope: dict[str, str] = field(default_factory=dict)


_DA = re.compile(r"^[0-9]{8}$")
_TM = re.compile(r"^([0-9]{2})([0-9]{2})?([0-9]{2})?(?:\.([0-9]{1,6}))?$")
_INT = re.compile(r"^[+-]?[0-9]{1,10}$")
# Attributes whose value may be a comma-separated list of alternatives (PS3.18 §8.3.4.1).
_LIST_VRS = {"UI"}
_LIST_TAGS = {"00080061", "00080060"}  # ModalitiesInStudy, Modality


def time_key(value: str, *, upper: bool = False) -> str:
    """A fixed-width, comparable form of a TM value (``HHMMSSffffff``).

    An upper range bound is padded with its largest value, so ``-10`` ends at 10:59:59.999999.

    >>> time_key("1030"), time_key("1030", upper=True), time_key("103000.5")
    ('103000000000', '103059999999', '103000500000')
    """
    match = _TM.match(value.strip())
    if not match:
        raise ValueError(value)
    hh, mm, ss, frac = match.groups()
    fill = "9" if upper else "0"
    mm = mm or ("59" if upper else "00")
    ss = ss or ("59" if upper else "00")
    frac = (frac or "").ljust(6, fill)
    return f"{hh}{mm}{ss}{frac}"


def parse_query(
    level: Level,
    params: Iterable[tuple[str, str]],
    *,
    default_limit: int,
    max_limit: int,
    scope: dict[str, str] | None = None,
) -> QidoQuery:
    """Parse the query string of a QIDO-RS request at ``level``."""
    conditions: dict[str, Condition] = {}
    include: set[str] = set()
    include_all = False
    fuzzy = False
    limit: int | None = None
    offset = 0
    for name, value in params:
        if "\x00" in value or "\x00" in name:
            # No stored value holds NUL (PS3.5 §6.2): such a query is malformed, not empty.
            raise BadRequest("a query parameter contains a NUL character")
        if name == "limit":
            limit = _non_negative(name, value)
        elif name == "offset":
            offset = _non_negative(name, value)
        elif name == "fuzzymatching":
            fuzzy = _boolean(name, value)
        elif name == "includefield":
            for item in filter(None, (v.strip() for v in value.split(","))):
                if item == "all":
                    include_all = True
                else:
                    include.add(_path_or_400(name, item).split(".")[0])
        else:
            path, attribute = _matchable(level, name)
            if value == "":
                include.add(attribute.tag)  # universal matching: return, don't filter
                continue
            condition = _condition(name, attribute, value)
            if path in conditions:
                condition = _merge(name, conditions[path], condition)
            conditions[path] = condition
    clamped = limit is not None and limit > max_limit
    effective = default_limit if limit is None or limit == 0 else min(limit, max_limit)
    return QidoQuery(
        level=level,
        conditions=tuple(conditions.values()),
        include=frozenset(include),
        include_all=include_all,
        fuzzy=fuzzy,
        limit=effective,
        offset=offset,
        limit_clamped=clamped,
        scope=dict(scope or {}),
    )


def is_patient_specific(query: QidoQuery) -> bool:
    """True when the query names one patient unambiguously across member hospitals: a
    PatientID together with its IssuerOfPatientID, or an exact PatientName together with
    a PatientBirthDate. Only such queries search other members' data for a regional
    caller; a PatientID alone could be another hospital's different patient.

    >>> q = lambda *p: parse_query(Level.STUDY, p, default_limit=10, max_limit=10)
    >>> is_patient_specific(q(("PatientID", "123"), ("IssuerOfPatientID", "H1")))
    True
    >>> is_patient_specific(q(("PatientName", "Doe^Jane"), ("PatientBirthDate", "19700101")))
    True
    >>> is_patient_specific(q(("PatientID", "123"))), is_patient_specific(q(("PatientName", "Doe*"),))
    (False, False)
    """
    single = {c.attribute.keyword for c in query.conditions if c.match is Match.SINGLE}
    return {"PatientID", "IssuerOfPatientID"} <= single or {"PatientName", "PatientBirthDate"} <= single


def _matchable(level: Level, name: str) -> tuple[str, Attribute]:
    path = _path_or_400(name, name)
    attribute = NESTED.get(path) if "." in path else BY_TAG.get(path)
    if attribute is None or (attribute.tag not in MATCHABLE and attribute not in NESTED.values()):
        raise BadRequest(f"query parameter {name!r}: matching on this attribute is not supported")
    if attribute.level > level:
        raise BadRequest(
            f"query parameter {name!r}: a {attribute.level.name.lower()}-level attribute "
            f"cannot be matched in a {level.name.lower()}-level query"
        )
    return path, attribute


def _condition(name: str, attribute: Attribute, value: str) -> Condition:
    vr = attribute.vr
    if vr == "UI" or attribute.tag in _LIST_TAGS:
        values = tuple(v.strip() for v in re.split(r"[,\\]", value) if v.strip())
        if vr == "UI":
            for uid in values:
                if not is_uid(uid):
                    raise BadRequest(f"query parameter {name!r}: {uid!r} is not a valid UID")
        if len(values) > 1:
            return Condition(attribute, Match.LIST, values)
        value = values[0] if values else value
    if vr in ("DA", "TM"):
        return _range_condition(name, attribute, value)
    if vr == "IS":
        # PS3.5 §6.2: an IS is within -2^31 .. 2^31-1, as the index's integer columns are.
        if not _INT.match(value) or not -(1 << 31) <= int(value) < 1 << 31:
            raise BadRequest(f"query parameter {name!r}: {value[:32]!r} is not an integer (IS)")
        return Condition(attribute, Match.SINGLE, (str(int(value)),))
    if vr != "UI" and ("*" in value or "?" in value):
        return Condition(attribute, Match.WILDCARD, (value,))
    return Condition(attribute, Match.SINGLE, (value,))


def _range_condition(name: str, attribute: Attribute, value: str) -> Condition:
    low, sep, high = value.partition("-")
    check = _check_date if attribute.vr == "DA" else _check_time
    if not sep:
        check(name, value)
        return Condition(attribute, Match.SINGLE, (value,))
    if not low and not high:
        raise BadRequest(f"query parameter {name!r}: a range needs at least one bound")
    for bound in filter(None, (low, high)):
        check(name, bound)
    if low and high and _range_key(attribute, low) > _range_key(attribute, high, upper=True):
        raise BadRequest(f"query parameter {name!r}: the range's start is after its end")
    return Condition(attribute, Match.RANGE, (low, high))


def _range_key(attribute: Attribute, value: str, *, upper: bool = False) -> str:
    return value if attribute.vr == "DA" else time_key(value, upper=upper)


def _check_date(name: str, value: str) -> None:
    if not _DA.match(value) or not (1 <= int(value[4:6]) <= 12 and 1 <= int(value[6:8]) <= 31):
        raise BadRequest(f"query parameter {name!r}: {value!r} is not a date (YYYYMMDD)")


def _check_time(name: str, value: str) -> None:
    match = _TM.match(value)
    if (
        not match
        or int(match.group(1)) > 23
        or int(match.group(2) or 0) > 59
        or int(match.group(3) or 0) > 60
    ):
        raise BadRequest(f"query parameter {name!r}: {value!r} is not a time (HHMMSS.FFFFFF)")


def _merge(name: str, old: Condition, new: Condition) -> Condition:
    # Repeating a UID parameter lists alternatives; anything else repeated is ambiguous.
    if old.attribute.vr == "UI" and old.match in (Match.SINGLE, Match.LIST):
        return Condition(old.attribute, Match.LIST, (*old.values, *new.values))
    raise BadRequest(f"query parameter {name!r} is given more than once")


def _path_or_400(param: str, name: str) -> str:
    try:
        return resolve_path(name)
    except BadRequest as exc:
        raise BadRequest(f"query parameter {param!r}: {exc.message}") from None


#: ``limit`` and ``offset`` beyond this are refused: PostgreSQL's bigint, with room.
MAX_OFFSET = (1 << 62) - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def _non_negative(name: str, value: str) -> int:
    """A ``limit`` or ``offset``: ASCII digits of a value the database can take.

    >>> _non_negative("offset", "20")
    20
    """
    if not _DIGITS.fullmatch(value) or int(value) > MAX_OFFSET:
        raise BadRequest(f"query parameter {name!r}: {value[:32]!r} is not an integer from 0 to {MAX_OFFSET}")
    return int(value)


def _boolean(name: str, value: str) -> bool:
    if value.lower() not in ("true", "false"):
        raise BadRequest(f"query parameter {name!r}: expected true or false, not {value!r}")
    return value.lower() == "true"


__all__ = ["INDEXED", "Condition", "Match", "QidoQuery", "parse_query", "time_key"]
