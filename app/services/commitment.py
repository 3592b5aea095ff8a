"""Storage Commitment Push Model (PS3.4 Annex J): does the archive hold these instances,
safely, for the calling AE's hospital?

An instance is committed when it is stored (its index row committed after its object was
written, :mod:`app.services.stow`) and within the caller's scope; the answer is looked up
through the QIDO-RS engine, so what is committed is exactly what the caller could find.
"""

from __future__ import annotations

from dataclasses import dataclass

from app.dicom.levels import Level
from app.services import qido
from app.services.archive import Archive
from app.services.audit import Trail

#: PS3.4 J.3.2.1.1 Failure Reason (0008,1197) values.
NO_SUCH_OBJECT_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119

_BATCH = 100


@dataclass(frozen=True)
class Verdict:
    #: (SOP Class UID, SOP Instance UID) of the committed instances.
    committed: list[tuple[str, str]]
    #: (SOP Class UID, SOP Instance UID, Failure Reason) of the others.
    failed: list[tuple[str, str, int]]


async def verify(archive: Archive, trail: Trail, references: list[tuple[str, str]]) -> Verdict:
    """The commitment verdict for each referenced instance (PS3.4 J.3.2.1.1)."""
    stored: dict[str, str] = {}
    uids = [uid for _, uid in references]
    for start in range(0, len(uids), _BATCH):
        batch = uids[start : start + _BATCH]
        params = [("00080018", ",".join(batch)), ("limit", str(len(batch) + 1))]
        result = await qido.search(archive, trail.scope, Level.INSTANCE, params, root="")
        for match in result.matches:
            stored[match["00080018"]["Value"][0]] = match["00080016"]["Value"][0]
        trail.note(
            studies=(s for s, _, _ in result.owners),
            patients=(p for _, p, _ in result.owners),
            owners=(h for _, _, h in result.owners),
        )
    committed: list[tuple[str, str]] = []
    failed: list[tuple[str, str, int]] = []
    for sop_class, uid in references:
        if uid not in stored:
            failed.append((sop_class, uid, NO_SUCH_OBJECT_INSTANCE))
        elif stored[uid] != sop_class:
            failed.append((sop_class, uid, CLASS_INSTANCE_CONFLICT))
        else:
            committed.append((sop_class, uid))
    trail.note(instances=(uid for _, uid in committed), count=len(committed))
    return Verdict(committed, failed)
