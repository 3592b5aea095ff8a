"""Administration under ``/api``: member hospitals and the audit trail."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.deps import Administrator, ArchiveDep, Auditor
from app.dicom.query import MAX_OFFSET
from app.repository.audit import AuditFilter
from app.services import admin, audit

router = APIRouter(prefix="/api", tags=["Administration"])


class HospitalIn(BaseModel):
    code: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="Code used in tokens")
    name: str = Field(min_length=1, max_length=200)


class HospitalOut(BaseModel):
    code: str
    name: str
    created_at: dt.datetime


@router.get("/hospitals", summary="List member hospitals", response_model=list[HospitalOut])
async def list_hospitals(archive: ArchiveDep, caller: Administrator) -> list[HospitalOut]:
    found = await admin.hospitals_list(archive)
    await audit.commit(archive, caller.trail, 200)
    return [HospitalOut(code=h.code, name=h.name, created_at=h.created_at) for h in found]


@router.post("/hospitals", status_code=201, summary="Add a member hospital", response_model=HospitalOut)
async def add_hospital(body: HospitalIn, archive: ArchiveDep, caller: Administrator) -> HospitalOut:
    added = await admin.add_hospital(archive, body.code, body.name)
    caller.trail.event.detail = f"added hospital {added.code}"
    await audit.commit(archive, caller.trail, 201, caller.trail.event.detail)
    return HospitalOut(code=added.code, name=added.name, created_at=added.created_at)


@router.get(
    "/audit",
    summary="Query the audit trail",
    responses={200: {"content": {"application/json": {}, "text/csv": {}}}},
)
async def query_audit(
    archive: ArchiveDep,
    caller: Auditor,
    patient: Annotated[str | None, Query(description="PatientID")] = None,
    study: Annotated[str | None, Query(description="Study Instance UID")] = None,
    subject: Annotated[str | None, Query(description="Token subject of the caller")] = None,
    share: Annotated[str | None, Query(description="Share id")] = None,
    since: Annotated[dt.datetime | None, Query(description="From this time (inclusive)")] = None,
    until: Annotated[dt.datetime | None, Query(description="Until this time (exclusive)")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
    format: Annotated[str, Query(pattern="^(json|csv)$", description="json, or csv for an export")] = "json",
) -> Response:
    f = AuditFilter(None, patient, study, subject, share, since, until)
    events = await admin.audit_events(archive, caller.principal.hospital, f, limit, offset)
    await audit.commit(archive, caller.trail, 200, f"{len(events)} events")
    if format == "csv":
        headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
        return Response(admin.as_csv(events), media_type="text/csv", headers=headers)
    return JSONResponse([_jsonable(asdict(e)) for e in events])


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}
