"""What the archive indexes from an instance's header: the patient, study, series and
instance attributes QIDO-RS matches on (PS3.18 Table 10.6.1-5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset

from app.dicom.names import fold
from app.dicom.query import time_key


@dataclass(frozen=True)
class PatientRecord:
    patient_id: str
    issuer_of_patient_id: str
    patient_name: str | None
    patient_name_fold: str | None
    patient_birth_date: str | None
    patient_sex: str | None


@dataclass(frozen=True)
class StudyRecord:
    study_instance_uid: str
    study_date: str | None
    study_time: str | None
    study_time_key: str | None
    accession_number: str | None
    referring_physician_name: str | None
    referring_physician_fold: str | None
    study_description: str | None
    study_id: str | None
    timezone_offset: str | None


@dataclass(frozen=True)
class SeriesRecord:
    series_instance_uid: str
    modality: str | None
    series_number: int | None
    series_description: str | None
    body_part_examined: str | None
    pps_start_date: str | None
    pps_start_time: str | None
    pps_start_time_key: str | None
    scheduled_step_ids: list[str]
    requested_procedure_ids: list[str]
    timezone_offset: str | None


@dataclass(frozen=True)
class InstanceRecord:
    sop_instance_uid: str
    sop_class_uid: str
    instance_number: int | None
    rows: int | None
    columns: int | None
    bits_allocated: int | None
    samples_per_pixel: int | None
    number_of_frames: int | None


@dataclass(frozen=True)
class IndexRecord:
    patient: PatientRecord
    study: StudyRecord
    series: SeriesRecord
    instance: InstanceRecord


def index_record(ds: Dataset, rendered: Mapping[int, dict[str, Any]] | None = None) -> IndexRecord:
    """Index attributes of ``ds``; values that are absent or malformed become ``None``.
    Top-level elements in ``rendered`` (their DICOM JSON, made from their bytes by
    :mod:`app.dicom.raw_json` and left unconverted in ``ds``) are read from there."""
    if rendered:
        ds = cast(Dataset, _Rendered(ds, rendered))
    tz = _text(ds, "TimezoneOffsetFromUTC")
    name = _text(ds, "PatientName")
    referring = _text(ds, "ReferringPhysicianName")
    requests = ds.get("RequestAttributesSequence") or []
    return IndexRecord(
        patient=PatientRecord(
            patient_id=_text(ds, "PatientID") or "",
            issuer_of_patient_id=_text(ds, "IssuerOfPatientID") or "",
            patient_name=name,
            patient_name_fold=fold(name) if name else None,
            patient_birth_date=_date(ds, "PatientBirthDate"),
            patient_sex=_text(ds, "PatientSex"),
        ),
        study=StudyRecord(
            study_instance_uid=str(ds.StudyInstanceUID),
            study_date=_date(ds, "StudyDate"),
            study_time=_text(ds, "StudyTime"),
            study_time_key=_time_key(ds, "StudyTime"),
            accession_number=_text(ds, "AccessionNumber"),
            referring_physician_name=referring,
            referring_physician_fold=fold(referring) if referring else None,
            study_description=_text(ds, "StudyDescription"),
            study_id=_text(ds, "StudyID"),
            timezone_offset=tz,
        ),
        series=SeriesRecord(
            series_instance_uid=str(ds.SeriesInstanceUID),
            modality=_text(ds, "Modality"),
            series_number=_int(ds, "SeriesNumber"),
            series_description=_text(ds, "SeriesDescription"),
            body_part_examined=_text(ds, "BodyPartExamined"),
            pps_start_date=_date(ds, "PerformedProcedureStepStartDate"),
            pps_start_time=_text(ds, "PerformedProcedureStepStartTime"),
            pps_start_time_key=_time_key(ds, "PerformedProcedureStepStartTime"),
            scheduled_step_ids=[v for item in requests if (v := _text(item, "ScheduledProcedureStepID"))],
            requested_procedure_ids=[v for item in requests if (v := _text(item, "RequestedProcedureID"))],
            timezone_offset=tz,
        ),
        instance=InstanceRecord(
            sop_instance_uid=str(ds.SOPInstanceUID),
            sop_class_uid=str(ds.SOPClassUID),
            instance_number=_int(ds, "InstanceNumber"),
            rows=_int(ds, "Rows"),
            columns=_int(ds, "Columns"),
            bits_allocated=_int(ds, "BitsAllocated"),
            samples_per_pixel=_int(ds, "SamplesPerPixel"),
            number_of_frames=_int(ds, "NumberOfFrames"),
        ),
    )


class _Rendered:
    """A data set read through its rendered elements first: for the value
    representations :mod:`app.dicom.raw_json` renders, the JSON value is what pydicom's
    value would print as (text as decoded, numbers as numbers, a person name's only
    group)."""

    def __init__(self, ds: Dataset, rendered: Mapping[int, dict[str, Any]]) -> None:
        self.ds, self.rendered = ds, rendered

    def value(self, keyword: str) -> Any:
        tag = tag_for_keyword(keyword)
        found = self.rendered.get(tag) if tag is not None else None
        if found is None:
            return _raw(self.ds, keyword)
        values = found.get("Value")
        if not values:
            return None
        if found["vr"] == "PN":
            values = [v["Alphabetic"] for v in values]
        return values[0] if len(values) == 1 else values

    def __getattr__(self, keyword: str) -> Any:
        return getattr(self.ds, keyword)

    def get(self, keyword: str, default: Any = None) -> Any:
        return self.ds.get(keyword, default)


def _raw(ds: Dataset, keyword: str) -> Any:
    if isinstance(ds, _Rendered):
        return ds.value(keyword)
    try:
        element = ds[keyword] if keyword in ds else None
        return None if element is None else element.value
    except Exception:  # a malformed value must not fail indexing: it is simply not indexed
        return None


def _text(ds: Dataset, keyword: str) -> str | None:
    value = _raw(ds, keyword)
    if value is None:
        return None
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    # NUL pads UI values (PS3.5 §6.2) and is allowed in no other text; modalities still
    # send it, and PostgreSQL text cannot hold it: it is never part of a value here.
    text = str(value).replace("\x00", "").strip(" ")
    return text or None


def _date(ds: Dataset, keyword: str) -> str | None:
    text = _text(ds, keyword)
    # Only a well-formed DA takes part in range matching; anything else is not indexed.
    return text if text and len(text) == 8 and text.isdigit() else None


def _time_key(ds: Dataset, keyword: str) -> str | None:
    text = _text(ds, keyword)
    if not text:
        return None
    try:
        return time_key(text)
    except ValueError:
        return None


#: PS3.5 Table 6.2-1: an IS value lies in -2^31 <= n <= 2^31 - 1 (and US, UL below it).
_INT_RANGE = range(-(2**31), 2**31)


def _int(ds: Dataset, keyword: str) -> int | None:
    """An integer to index, or None when absent, unreadable or out of its VR's range (the
    instance is stored as sent, like any value that bends the standard, but not indexed
    by a number no conforming sender could mean).

    >>> from pydicom.dataelem import RawDataElement
    >>> from pydicom.tag import Tag
    >>> def series_number(text: bytes) -> int | None:
    ...     raw = RawDataElement(Tag(0x00200011), "IS", len(text), text, 0, False, True)
    ...     return _int(Dataset({raw.tag: raw}), "SeriesNumber")
    >>> series_number(b"12"), series_number(b"2147483648"), series_number(b"9" * 40)
    (12, None, None)
    """
    value = _raw(ds, keyword)
    try:
        number = int(value) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None
    return number if number is None or number in _INT_RANGE else None
