"""DICOM audit messages (PS3.15 Annex A.5), in a JSON rendering of the XML schema's
elements, for a hospital's ATNA audit record repository."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence
from typing import Any, Protocol


class AuditedAccess(Protocol):
    """What a message is made of: one access to patient data, as the audit trail records it
    (:class:`app.repository.audit.AuditEvent`), declared here so this module stays pure."""

    @property
    def transaction(self) -> str: ...
    @property
    def outcome(self) -> int: ...
    @property
    def detail(self) -> str | None: ...
    @property
    def subject(self) -> str | None: ...
    @property
    def hospital(self) -> str | None: ...
    @property
    def roles(self) -> Sequence[str]: ...
    @property
    def share_id(self) -> str | None: ...
    @property
    def client_address(self) -> str | None: ...
    @property
    def query(self) -> str | None: ...
    @property
    def study_uids(self) -> Sequence[str]: ...
    @property
    def patient_ids(self) -> Sequence[str]: ...
    @property
    def at(self) -> dt.datetime | None: ...


# (EventID code, meaning, EventActionCode) per transaction: PS3.15 A.5.3 and its codes in
# PS3.16 (DCM coding scheme).
_EVENTS: dict[str, tuple[str, str, str]] = {
    "STOW-RS": ("110104", "DICOM Instances Transferred", "C"),
    "WADO-RS": ("110104", "DICOM Instances Transferred", "R"),
    "WADO-URI": ("110104", "DICOM Instances Transferred", "R"),
    "METADATA": ("110103", "DICOM Instances Accessed", "R"),
    "QIDO-RS": ("110112", "Query", "E"),
    "DELETE": ("110105", "DICOM Study Deleted", "D"),
    "AUDIT-QUERY": ("110101", "Audit Log Used", "R"),
    "SHARE": ("110106", "Export", "E"),
    "SHARE-ACCESS": ("110103", "DICOM Instances Accessed", "R"),
    "SHARE-DOWNLOAD": ("110106", "Export", "R"),
    "DOWNLOAD": ("110106", "Export", "R"),
    # PS3.15 A.5.3.9: a patient record linked to (or reviewed for) a portal account.
    "ENROLMENT": ("110110", "Patient Record", "U"),
    # PS3.15 A.5.3.13 User Authentication, with its EventTypeCode (Login, Logout) below.
    "SIGN-IN": ("110114", "User Authentication", "E"),
    "SIGN-OUT": ("110114", "User Authentication", "E"),
    "DIMSE-ASSOCIATION": ("110114", "User Authentication", "E"),
    "C-ECHO": ("110100", "Application Activity", "E"),
    "C-STORE": ("110104", "DICOM Instances Transferred", "C"),
    "C-FIND": ("110112", "Query", "E"),
    "C-MOVE": ("110104", "DICOM Instances Transferred", "R"),
    "C-GET": ("110104", "DICOM Instances Transferred", "R"),
    "STORAGE-COMMITMENT": ("110103", "DICOM Instances Accessed", "R"),
}


_EVENT_TYPES = {"SIGN-IN": ("110122", "Login"), "SIGN-OUT": ("110123", "Logout")}


def _code(code: str, meaning: str, scheme: str = "DCM") -> dict[str, str]:
    return {"csd-code": code, "codeSystemName": scheme, "originalText": meaning}


def _outcome(status: int) -> int:
    """EventOutcomeIndicator: 0 success, 4 minor failure (refused request), 8 serious."""
    return 0 if status < 400 else 4 if status < 500 else 8


def audit_message(event: AuditedAccess, source_id: str) -> dict[str, Any]:
    code, meaning, action = _EVENTS.get(event.transaction, ("110100", "Application Activity", "E"))
    requestor: dict[str, Any] = {
        "UserID": event.subject or "anonymous",
        "UserIsRequestor": True,
        "NetworkAccessPointID": event.client_address,
        "NetworkAccessPointTypeCode": "2",  # an IP address
        "RoleIDCode": [_code(role, role, "filmless-roles") for role in event.roles],
    }
    if event.hospital:
        requestor["AlternativeUserID"] = event.hospital
    if event.share_id:
        requestor["AlternativeUserID"] = f"share:{event.share_id}"
    objects: list[dict[str, Any]] = [
        {
            "ParticipantObjectTypeCode": "1",  # person
            "ParticipantObjectTypeCodeRole": "1",  # patient
            "ParticipantObjectIDTypeCode": _code("2", "Patient Number", "RFC-3881"),
            "ParticipantObjectID": patient,
        }
        for patient in event.patient_ids
    ]
    objects += [
        {
            "ParticipantObjectTypeCode": "2",  # system object
            "ParticipantObjectTypeCodeRole": "3",  # report
            "ParticipantObjectIDTypeCode": _code("110180", "Study Instance UID"),
            "ParticipantObjectID": study,
        }
        for study in event.study_uids
    ]
    if event.transaction == "QIDO-RS" and event.query:
        objects.append(
            {
                "ParticipantObjectTypeCode": "2",
                "ParticipantObjectTypeCodeRole": "3",
                "ParticipantObjectIDTypeCode": _code("110181", "SOP Class UID"),
                "ParticipantObjectID": "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Q/R FIND
                "ParticipantObjectQuery": base64.b64encode(event.query.encode()).decode(),
            }
        )
    identification: dict[str, Any] = {}
    if event.transaction in _EVENT_TYPES:
        identification["EventTypeCode"] = [_code(*_EVENT_TYPES[event.transaction])]
    return {
        "EventIdentification": {
            **identification,
            "EventID": _code(code, meaning),
            "EventActionCode": action,
            "EventDateTime": event.at.isoformat() if event.at else None,
            "EventOutcomeIndicator": _outcome(event.outcome),
            "EventOutcomeDescription": event.detail,
        },
        "ActiveParticipant": [
            requestor,
            {
                "UserID": source_id,
                "UserIsRequestor": False,
                "RoleIDCode": [_code("110153", "Source Role ID")],
            },
        ],
        "AuditSourceIdentification": {"AuditSourceID": source_id},
        "ParticipantObjectIdentification": objects,
    }
