"""C-FIND, C-MOVE and C-GET identifiers (PS3.4 C.4) in the QIDO-RS query model.

A DIMSE query is an identifier data set: its non-empty elements are matching keys, its
empty ones return keys (PS3.4 C.2.2.1). They translate into the parameters QIDO-RS takes
(PS3.18 §8.3.4), so both protocols match through one engine (:mod:`app.dicom.query`,
:mod:`app.services.qido`) and the same PS3.4 C.2.2.2 matching rules: the DICOM wildcard,
range and UID-list syntax is QIDO's too. Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from app.dicom.attributes import MATCHABLE
from app.dicom.levels import Level

_CHARSET, _LEVEL, _RETRIEVE_AE, _AVAILABILITY = 0x00080005, 0x00080052, 0x00080054, 0x00080056


class IdentifierError(ValueError):
    """The identifier does not fit the information model (PS3.4 C.4.1.1.4, status A900)."""


class QueryLevel(Enum):
    """Query/Retrieve Level (0008,0052), PS3.4 C.6."""

    PATIENT = "PATIENT"
    STUDY = "STUDY"
    SERIES = "SERIES"
    IMAGE = "IMAGE"

    @property
    def qido_level(self) -> Level:
        """The QIDO-RS level that answers it. The archive keeps patients with their
        studies (the Study Root model, PS3.4 C.6.2): a patient-level query is a
        study-level search whose matches are reduced to distinct patients."""
        return {"PATIENT": Level.STUDY, "STUDY": Level.STUDY, "SERIES": Level.SERIES}.get(
            self.value, Level.INSTANCE
        )


@dataclass(frozen=True)
class FindRequest:
    level: QueryLevel
    #: QIDO-RS query parameters (keyword or tag, value), ``includefield`` for return keys.
    params: list[tuple[str, str]]
    #: The identifier's keys, returned in every match: (tag, VR).
    keys: list[tuple[int, str]]


def query_level(identifier: Dataset, *, patient_root: bool) -> QueryLevel:
    value = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    try:
        level = QueryLevel(value)
    except ValueError:
        raise IdentifierError(
            f"Query/Retrieve Level {value!r} is not one of PATIENT, STUDY, SERIES, IMAGE"
        ) from None
    if level is QueryLevel.PATIENT and not patient_root:
        # PS3.4 C.6.2: the Study Root model has no patient level.
        raise IdentifierError("the Study Root model has no PATIENT level")
    return level


def find_request(identifier: Dataset, *, patient_root: bool) -> FindRequest:
    """The QIDO-RS search of a C-FIND identifier.

    >>> ds = Dataset()
    >>> ds.QueryRetrieveLevel, ds.PatientName, ds.StudyDate, ds.StudyDescription = "STUDY", "Doe*", "", ""
    >>> request = find_request(ds, patient_root=False)
    >>> request.level
    <QueryLevel.STUDY: 'STUDY'>
    >>> request.params
    [('includefield', '00080020'), ('includefield', '00081030'), ('00100010', 'Doe*')]
    """
    level = query_level(identifier, patient_root=patient_root)
    params: list[tuple[str, str]] = []
    keys: list[tuple[int, str]] = []
    for element in identifier:
        if element.tag in (_CHARSET, _LEVEL) or element.tag.group == 0x0002:
            continue
        keys.append((int(element.tag), element.VR))
        if element.tag.is_private or element.VR == "SQ":
            continue  # returned when present; never matched (PS3.4 C.2.2.2.6 is optional)
        tag = f"{int(element.tag):08X}"
        value = text_of(element)
        if value and tag in MATCHABLE:
            params.append((tag, value))
        else:
            # A return key, or a key the archive does not match on: PS3.4 C.2.2.1 lets an
            # SCP treat an optional key it cannot match as a return key.
            params.append(("includefield", tag))
    return FindRequest(level, params, keys)


def retrieve_params(identifier: Dataset, *, patient_root: bool) -> tuple[QueryLevel, list[tuple[str, str]]]:
    """The instance-level QIDO-RS search naming what a C-MOVE or C-GET retrieves: its
    unique keys down to its level (PS3.4 C.4.2.2.1, C.4.3.2.1).

    >>> ds = Dataset()
    >>> ds.QueryRetrieveLevel, ds.StudyInstanceUID = "STUDY", "1.2.3"
    >>> retrieve_params(ds, patient_root=False)
    (<QueryLevel.STUDY: 'STUDY'>, [('0020000D', '1.2.3')])
    """
    level = query_level(identifier, patient_root=patient_root)
    needed = {
        QueryLevel.PATIENT: ["PatientID"],
        QueryLevel.STUDY: ["StudyInstanceUID"],
        QueryLevel.SERIES: ["StudyInstanceUID", "SeriesInstanceUID"],
        QueryLevel.IMAGE: ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"],
    }[level]
    if patient_root and level is not QueryLevel.PATIENT and "PatientID" in identifier:
        needed = ["PatientID", *needed]
    params: list[tuple[str, str]] = []
    for keyword in needed:
        element = identifier.data_element(keyword)
        value = text_of(element) if element is not None else ""
        if element is None or not value:
            raise IdentifierError(f"a {level.value}-level retrieval needs {keyword}")
        if "*" in value or "?" in value:
            raise IdentifierError(f"{keyword} in a retrieval is a unique key, not a pattern")
        params.append((f"{int(element.tag):08X}", value))
    return level, params


def text_of(element: DataElement) -> str:
    """An element's value as QIDO-RS writes it (multiple values joined by backslash)."""
    value: Any = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return ""
    return str(value).strip()


def find_response(request: FindRequest, match: Dataset, retrieve_ae_title: str) -> Dataset:
    """A C-FIND match (PS3.4 C.4.1.1.3.2): the identifier's keys with their values from
    ``match`` (empty when the archive has none), the level, where to retrieve from."""
    out = Dataset()
    out.SpecificCharacterSet = "ISO_IR 192"  # values come from DICOM JSON, in Unicode
    out.QueryRetrieveLevel = request.level.value
    for tag, vr in request.keys:
        if tag in match:
            out[tag] = match[tag]
        elif tag == _RETRIEVE_AE:
            out.RetrieveAETitle = retrieve_ae_title
        elif tag == _AVAILABILITY:
            out.InstanceAvailability = "ONLINE"
        else:
            out.add_new(tag, vr, None if vr != "SQ" else [])
    return out


def patient_key(match: Dataset) -> tuple[str, str, str]:
    """What tells patients apart in a patient-level answer: the PatientID, its issuer, and
    the owning member hospital (the archive's private block, see :mod:`app.services.qido`)."""
    return (
        str(match.get("PatientID", "") or ""),
        str(match.get("IssuerOfPatientID", "") or ""),
        str(match.get((0x0009, 0x1010)).value if (0x0009, 0x1010) in match else ""),
    )
