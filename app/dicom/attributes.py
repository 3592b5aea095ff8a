"""The attributes QIDO-RS can match on and returns by default (PS3.18 Tables 10.6.1-5
and 10.6.3-3), with the level each lives at. Patient attributes belong to the study level,
as in the Study Root information model (PS3.4 C.6.2)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword

from app.dicom.levels import Level
from app.errors import BadRequest


@dataclass(frozen=True)
class Attribute:
    keyword: str
    tag: str  # eight upper-case hex digits, as DICOM JSON names it
    vr: str
    level: Level

    @classmethod
    def of(cls, keyword: str, level: Level) -> Attribute:
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        return cls(keyword, f"{tag:08X}", dictionary_VR(tag), level)


_S, _SE, _I = Level.STUDY, Level.SERIES, Level.INSTANCE

#: Attributes the archive indexes: matchable, and returned by default at their level.
INDEXED: tuple[Attribute, ...] = tuple(
    Attribute.of(k, lvl)
    for k, lvl in [
        ("PatientName", _S),
        ("PatientID", _S),
        ("IssuerOfPatientID", _S),
        ("PatientBirthDate", _S),
        ("PatientSex", _S),
        ("StudyInstanceUID", _S),
        ("StudyDate", _S),
        ("StudyTime", _S),
        ("AccessionNumber", _S),
        ("ReferringPhysicianName", _S),
        ("StudyDescription", _S),
        ("StudyID", _S),
        ("ModalitiesInStudy", _S),
        ("SeriesInstanceUID", _SE),
        ("Modality", _SE),
        ("SeriesNumber", _SE),
        ("SeriesDescription", _SE),
        ("BodyPartExamined", _SE),
        ("PerformedProcedureStepStartDate", _SE),
        ("PerformedProcedureStepStartTime", _SE),
        ("SOPInstanceUID", _I),
        ("SOPClassUID", _I),
        ("InstanceNumber", _I),
    ]
)

#: Sequence-item attributes matchable at series level (PS3.18 Table 10.6.1-5), written
#: as ``RequestAttributesSequence.ScheduledProcedureStepID``.
NESTED: dict[str, Attribute] = {
    "00400275.00400009": Attribute("ScheduledProcedureStepID", "00400009", "SH", _SE),
    "00400275.00401001": Attribute("RequestedProcedureID", "00401001", "SH", _SE),
}

#: Computed attributes: returned by default, maintained by the archive, not matchable
#: (except ModalitiesInStudy above).
COMPUTED: tuple[Attribute, ...] = tuple(
    Attribute.of(k, lvl)
    for k, lvl in [
        ("NumberOfStudyRelatedSeries", _S),
        ("NumberOfStudyRelatedInstances", _S),
        ("NumberOfSeriesRelatedInstances", _SE),
        ("Rows", _I),
        ("Columns", _I),
        ("BitsAllocated", _I),
        ("NumberOfFrames", _I),
    ]
)

BY_TAG: dict[str, Attribute] = {a.tag: a for a in (*INDEXED, *COMPUTED)}
MATCHABLE: frozenset[str] = frozenset(a.tag for a in INDEXED)


@functools.cache
def vr_of(tag: str) -> str:
    """The dictionary VR of a tag (``"00100010"`` -> ``"PN"``); ``UN`` for private tags."""
    try:
        return str(dictionary_VR(int(tag, 16)))
    except KeyError:
        return "UN"


def resolve_tag(name: str) -> str:
    """The tag (``"0020000D"``) for a keyword or an eight-digit hex tag; 400 otherwise.

    >>> resolve_tag("StudyInstanceUID"), resolve_tag("0020000d")
    ('0020000D', '0020000D')
    """
    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return name.upper()
    tag = tag_for_keyword(name)
    if tag is None:
        raise BadRequest(f"unknown attribute {name!r}: not a DICOM keyword or tag")
    return f"{tag:08X}"


def resolve_path(name: str) -> str:
    """A possibly nested attribute path (``Seq.Attr``, PS3.18 §8.3.4.1) as dotted tags."""
    return ".".join(resolve_tag(part) for part in name.split("."))
