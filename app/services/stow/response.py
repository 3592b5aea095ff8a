"""The STOW-RS answer (PS3.18 §10.5.3): each instance's result, and the response body and
status they make."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.dicom.elements import JsonDataset, element, sequence
from app.dicom.status import FailureReason


@dataclass(frozen=True)
class InstanceResult:
    sop_class_uid: str | None
    sop_instance_uid: str | None
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    failure: FailureReason | None = None
    #: Stored before, byte for byte (an idempotent success that wrote nothing).
    already_stored: bool = False


@dataclass(frozen=True)
class StowResponse:
    status: int
    body: JsonDataset
    results: list[InstanceResult] = field(default_factory=list)


def response(results: list[InstanceResult], root: str, study: str | None) -> StowResponse:
    """The response of PS3.18 §10.5.3: 200 when all were stored, 202 when some, 409 when
    none (400 when none was even a DICOM instance)."""
    stored = [r for r in results if r.failure is None]
    failed = [r for r in results if r.failure is not None]
    body: JsonDataset = {}
    studies = {r.study_instance_uid for r in stored}
    if study is not None or len(studies) == 1:
        body["00081190"] = element("UR", f"{root}/studies/{study or next(iter(studies))}")
    if stored:
        body["00081199"] = sequence(
            {
                "00081150": element("UI", r.sop_class_uid),
                "00081155": element("UI", r.sop_instance_uid),
                "00081190": element(
                    "UR",
                    f"{root}/studies/{r.study_instance_uid}/series/{r.series_instance_uid}"
                    f"/instances/{r.sop_instance_uid}",
                ),
            }
            for r in stored
        )
    if failed:
        body["00081198"] = sequence(
            {
                "00081150": element("UI", r.sop_class_uid),
                "00081155": element("UI", r.sop_instance_uid),
                "00081197": element("US", int(r.failure or 0)),
            }
            for r in failed
        )
    if not failed:
        status = 200
    elif stored:
        status = 202
    elif all(r.failure is FailureReason.CANNOT_UNDERSTAND for r in failed):
        status = 400
    else:
        status = 409
    return StowResponse(status, body, results)
