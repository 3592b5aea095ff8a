"""QIDO-RS parameter parsing (PS3.18 §8.3.4): pure, no database."""

from __future__ import annotations

import pytest

from app.dicom.levels import Level
from app.dicom.query import Match, parse_query, time_key
from app.errors import BadRequest


def _parse(level: Level, *params: tuple[str, str], **limits: int):
    return parse_query(
        level, params, default_limit=limits.get("default", 100), max_limit=limits.get("max", 1000)
    )


def test_matching_kinds():
    query = _parse(
        Level.SERIES,
        ("PatientName", "Do?^J*"),
        ("00100020", "P1"),
        ("StudyDate", "20240101-"),
        ("SeriesInstanceUID", "1.2,1.3"),
        ("Modality", "CT"),
        ("RequestAttributesSequence.ScheduledProcedureStepID", "SPS1"),
    )
    kinds = {c.attribute.keyword: (c.match, c.values) for c in query.conditions}
    assert kinds == {
        "PatientName": (Match.WILDCARD, ("Do?^J*",)),
        "PatientID": (Match.SINGLE, ("P1",)),
        "StudyDate": (Match.RANGE, ("20240101", "")),
        "SeriesInstanceUID": (Match.LIST, ("1.2", "1.3")),
        "Modality": (Match.SINGLE, ("CT",)),
        "ScheduledProcedureStepID": (Match.SINGLE, ("SPS1",)),
    }


def test_includefield_and_universal_matching():
    query = _parse(
        Level.STUDY,
        ("includefield", "00081030, PatientAge"),
        ("includefield", "all"),
        ("PatientSex", ""),
    )
    assert query.include == {"00081030", "00101010", "00100040"}
    assert query.include_all
    assert query.conditions == ()


def test_limits():
    assert _parse(Level.STUDY).limit == 100
    assert _parse(Level.STUDY, ("limit", "0")).limit == 100
    clamped = _parse(Level.STUDY, ("limit", "5000"), ("offset", "7"))
    assert (clamped.limit, clamped.offset, clamped.limit_clamped) == (1000, 7, True)
    assert not _parse(Level.STUDY, ("limit", "10")).limit_clamped


@pytest.mark.parametrize(
    ("value", "upper", "key"),
    [("10", False, "100000000000"), ("10", True, "105959999999"), ("235959.123", False, "235959123000")],
)
def test_time_keys(value, upper, key):
    assert time_key(value, upper=upper) == key


@pytest.mark.parametrize(
    ("level", "param"),
    [
        (Level.STUDY, ("Modality", "CT")),  # a series attribute in a study query
        (Level.STUDY, ("PatientAge", "040Y")),  # not matchable
        (Level.STUDY, ("Nonsense", "1")),
        (Level.STUDY, ("StudyDate", "20240230x")),
        (Level.STUDY, ("StudyDate", "-")),
        (Level.STUDY, ("StudyTime", "25")),
        (Level.SERIES, ("SeriesNumber", "one")),
        (Level.INSTANCE, ("SOPInstanceUID", "1..2")),
        (Level.STUDY, ("StudyInstanceUID", "1." + "2" * 70)),
        (Level.STUDY, ("fuzzymatching", "yes")),
    ],
)
def test_invalid_parameters_name_themselves(level, param):
    with pytest.raises(BadRequest) as caught:
        _parse(level, param)
    assert repr(param[0]) in caught.value.message
