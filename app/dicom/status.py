"""STOW-RS outcome codes (PS3.18 §10.5.3, Table 10.5.3-3; the codes are PS3.4's storage
statuses, Annex B.2.3, and PS3.7 C.4)."""

from __future__ import annotations

from enum import IntEnum


class FailureReason(IntEnum):
    #: PS3.7 C.4.2 "Processing failure": a transient condition; the client may retry.
    PROCESSING_FAILURE = 0x0110
    #: PS3.7 C.4 "Duplicate SOP Instance": another object is stored under this SOP
    #: Instance UID. The archive never replaces a stored instance (see the README).
    DUPLICATE_SOP_INSTANCE = 0x0111
    #: PS3.4 B.2.3 "Refused: Out of Resources".
    OUT_OF_RESOURCES = 0xA700
    #: PS3.4 B.2.3 "Error: Data Set does not match SOP Class"; the archive also uses it
    #: when the instance contradicts what is stored (its study belongs to another patient,
    #: its series to another study) or the Study Instance UID of the request path.
    DATA_SET_MISMATCH = 0xA900
    #: PS3.4 B.2.3 "Error: Cannot understand": not a DICOM Part 10 object, or its
    #: required UIDs are missing.
    CANNOT_UNDERSTAND = 0xC000
    #: PS3.18 Table 10.5.3-3 "Referenced Transfer Syntax not supported".
    TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
