"""DIMSE statuses: the store pipeline's outcomes as PS3.4 C-STORE statuses, in one table.

A status is a value, not an exception (PS3.7 §9.1.1.1.9, Annex C). C-STORE's own codes
are PS3.4 Table B.2-1; the general ones PS3.7 Annex C.4. The table maps each
:class:`~app.dicom.status.FailureReason` that STOW-RS reports to the code a modality
understands: the same outcome, told in each protocol's words. The README's conformance
statement lists it.
"""

from __future__ import annotations

from enum import IntEnum

from app.dicom.status import FailureReason


class Status(IntEnum):
    SUCCESS = 0x0000
    #: PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.5: a match or sub-operation follows.
    PENDING = 0xFF00
    #: PS3.7 C.4.2: the caller's AE may not use this service (its permissions).
    NOT_AUTHORIZED = 0x0124
    #: PS3.4 Table B.2-1 "Refused: Out of Resources": the database or object store failed,
    #: or the operation ran out of time. Nothing was stored; the modality may retry.
    OUT_OF_RESOURCES = 0xA700
    #: Refused, out of resources for now: another association is storing the same SOP
    #: Instance at this moment (an A7xx code, so modalities retry).
    BUSY = 0xA701
    #: PS3.4 Table B.2-1 "Error: Data Set does not match SOP Class"; also an instance that
    #: contradicts what is stored (its study belongs to another patient, its series to
    #: another study).
    DATA_SET_MISMATCH = 0xA900
    #: An A9xx error: another object is already stored under this SOP Instance UID; the
    #: stored one is kept (stored instances are immutable).
    CONFLICT = 0xA911
    #: PS3.4 Table B.2-1 "Error: Cannot understand": not a readable data set, or its
    #: Study, Series or SOP Instance UID is missing or invalid.
    CANNOT_UNDERSTAND = 0xC000
    #: PS3.4 C.4.1.1.4 "Identifier does not match SOP Class" (C-FIND, C-MOVE, C-GET).
    IDENTIFIER_MISMATCH = 0xA900  # the same code as DATA_SET_MISMATCH
    #: PS3.4 C.4.1.1.4 / C.4.2.1.5 / C.4.3.1.5 "Unable to process" (Cxxx).
    FIND_FAILED = 0xC001
    MOVE_FAILED = 0xC002
    GET_FAILED = 0xC003
    #: PS3.4 C.4.2.1.5 "Move Destination unknown".
    MOVE_DESTINATION_UNKNOWN = 0xA801
    #: PS3.4 C.4.2.1.5 / C.4.3.1.5: "Sub-operations complete - one or more failures".
    SUB_OPERATIONS_FAILED = 0xB000
    #: PS3.4 C.4.3.1.5 / C.4.2.1.5 "Refused: Out of resources - unable to perform
    #: sub-operations".
    SUB_OPERATIONS_REFUSED = 0xA702
    #: PS3.7 C.4: the N-ACTION names no SOP Instance the SCP knows, or its action type.
    NO_SUCH_ACTION = 0x0123
    #: PS3.7 C.4 "Invalid argument value" (a storage commitment request without UIDs).
    INVALID_ARGUMENT = 0x0115
    #: PS3.4 J.3.2.1.1 Failure Reason "No such object instance" (0008,1197).
    NO_SUCH_OBJECT = 0x0112


#: The one table: the store pipeline's failure -> (C-STORE status, Error Comment).
#: ``None`` (stored, or the same bytes stored already: an idempotent success) is 0x0000.
STORE_STATUSES: dict[FailureReason, tuple[Status, str]] = {
    FailureReason.CANNOT_UNDERSTAND: (Status.CANNOT_UNDERSTAND, "not a readable DICOM data set"),
    FailureReason.TRANSFER_SYNTAX_NOT_SUPPORTED: (Status.CANNOT_UNDERSTAND, "transfer syntax not supported"),
    FailureReason.DATA_SET_MISMATCH: (Status.DATA_SET_MISMATCH, "contradicts the stored study or patient"),
    FailureReason.DUPLICATE_SOP_INSTANCE: (Status.CONFLICT, "another object has this SOP Instance UID"),
    FailureReason.PROCESSING_FAILURE: (Status.BUSY, "being stored by another request; retry"),
    FailureReason.OUT_OF_RESOURCES: (Status.OUT_OF_RESOURCES, "out of resources; retry"),
}


def store_status(failure: FailureReason | None) -> tuple[Status, str | None]:
    """The C-STORE status of a store pipeline outcome.

    >>> store_status(None)
    (<Status.SUCCESS: 0>, None)
    >>> hex(store_status(FailureReason.CANNOT_UNDERSTAND)[0])
    '0xc000'
    """
    if failure is None:
        return Status.SUCCESS, None
    return STORE_STATUSES[failure]


def audit_outcome(status: int) -> int:
    """The audit trail's outcome (HTTP-like classes, as for DICOMweb) of a DIMSE status:
    200 success or warning, 403 refused by permission, 409 a failure of the request's
    content, 503 out of resources.

    >>> [audit_outcome(s) for s in (0x0000, 0xB000, 0x0124, 0xA900, 0xC000, 0xA700)]
    [200, 200, 403, 409, 409, 503]
    """
    if status == Status.SUCCESS or status & 0xF000 == 0xB000:
        return 200
    if status == Status.NOT_AUTHORIZED:
        return 403
    if status & 0xFF00 == 0xA700:
        return 503
    return 409
