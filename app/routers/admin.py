"""Administration under ``/api``: member hospitals, known DICOM AEs and the audit trail."""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field

from app.dicom.query import MAX_OFFSET
from app.http.deps import Administrator, ArchiveDep, Auditor
from app.services import admin
from app.services.admin import ApplicationEntity, ApplicationEntityChange, AuditFilter, NewApplicationEntity

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
    found = await admin.hospitals_list(archive, caller.trail)
    return [HospitalOut(code=h.code, name=h.name, created_at=h.created_at) for h in found]


@router.post("/hospitals", status_code=201, summary="Add a member hospital", response_model=HospitalOut)
async def add_hospital(body: HospitalIn, archive: ArchiveDep, caller: Administrator) -> HospitalOut:
    added = await admin.add_hospital(archive, caller.trail, body.code, body.name)
    return HospitalOut(code=added.code, name=added.name, created_at=added.created_at)


class HospitalChange(BaseModel):
    name: str = Field(min_length=1, max_length=200)


@router.patch("/hospitals/{code}", summary="Rename a member hospital", response_model=HospitalOut)
async def rename_hospital(
    code: str, body: HospitalChange, archive: ArchiveDep, caller: Administrator
) -> HospitalOut:
    renamed = await admin.rename_hospital(archive, caller.trail, code, body.name)
    return HospitalOut(code=renamed.code, name=renamed.name, created_at=renamed.created_at)


@router.delete("/hospitals/{code}", status_code=204, summary="Remove a member hospital")
async def remove_hospital(code: str, archive: ArchiveDep, caller: Administrator) -> Response:
    """Its tokens are refused from now on, on every node; what it stored stays."""
    await admin.remove_hospital(archive, caller.trail, code)
    return Response(status_code=204)


class AeIn(BaseModel):
    # PS3.5 §6.2 AE: 1 to 16 characters, no backslash or control characters.
    ae_title: str = Field(pattern=r"^[ -\[\]-~]{1,16}$", description="The AE's title (its Calling AE Title)")
    host: str = Field(min_length=1, max_length=253, description="Where it listens (C-MOVE, reports)")
    port: int = Field(ge=1, le=65535)
    hospital: str = Field(description="Code of the member hospital it belongs to")
    may_echo: bool = True
    may_store: bool = False
    may_find: bool = False
    may_move: bool = False
    may_get: bool = False
    destination: bool = Field(default=False, description="The archive may send to it (C-MOVE destination)")
    description: str = Field(default="", max_length=200)


class AeOut(BaseModel):
    ae_title: str
    host: str
    port: int
    hospital: str
    may_echo: bool
    may_store: bool
    may_find: bool
    may_move: bool
    may_get: bool
    destination: bool
    description: str
    created_at: dt.datetime


def _ae_out(ae: ApplicationEntity) -> AeOut:
    return AeOut(**{name: getattr(ae, name) for name in AeOut.model_fields})


@router.get("/aes", summary="List known DICOM application entities", response_model=list[AeOut])
async def list_aes(archive: ArchiveDep, caller: Administrator) -> list[AeOut]:
    found = await admin.aes_list(archive, caller.trail)
    return [_ae_out(ae) for ae in found]


@router.post("/aes", status_code=201, summary="Add a known DICOM application entity", response_model=AeOut)
async def add_ae(body: AeIn, archive: ArchiveDep, caller: Administrator) -> AeOut:
    added = await admin.add_ae(archive, caller.trail, NewApplicationEntity(**body.model_dump()))
    return _ae_out(added)


class AeChangeIn(BaseModel):
    host: str = Field(min_length=1, max_length=253, description="Where it listens (C-MOVE, reports)")
    port: int = Field(ge=1, le=65535)
    may_echo: bool = True
    may_store: bool = False
    may_find: bool = False
    may_move: bool = False
    may_get: bool = False
    destination: bool = Field(default=False, description="The archive may send to it (C-MOVE destination)")
    description: str = Field(default="", max_length=200)


@router.put("/aes/{ae_title}", summary="Change a known DICOM application entity", response_model=AeOut)
async def change_ae(ae_title: str, body: AeChangeIn, archive: ArchiveDep, caller: Administrator) -> AeOut:
    """Its title and hospital stay; everything else is replaced."""
    changed = await admin.update_ae(
        archive, caller.trail, ae_title, ApplicationEntityChange(**body.model_dump())
    )
    return _ae_out(changed)


@router.delete("/aes/{ae_title}", status_code=204, summary="Remove a known DICOM application entity")
async def remove_ae(ae_title: str, archive: ArchiveDep, caller: Administrator) -> Response:
    await admin.remove_ae(archive, caller.trail, ae_title)
    return Response(status_code=204)


class AuditEntry(BaseModel):
    """One access to patient data, or an attempt (IHE ATNA's who, what, when, where, outcome)."""

    pk: int
    at: dt.datetime
    transaction: str = Field(description="The DICOMweb or API transaction, e.g. QIDO-RS")
    method: str
    path: str = Field(description="The request path, share secrets redacted")
    outcome: int = Field(description="The HTTP status answered")
    detail: str | None
    subject: str | None = Field(description="Token subject of the caller")
    hospital: str | None
    roles: list[str]
    share_id: str | None
    client_address: str | None
    user_agent: str | None
    query: str | None
    study_uids: list[str]
    series_uids: list[str]
    instance_uids: list[str]
    patient_ids: list[str]
    owner_hospitals: list[str] = Field(description="Hospitals whose data was touched")
    instances: int
    bytes: int


@router.get(
    "/audit",
    summary="Query the audit trail",
    responses={
        200: {
            "model": list[AuditEntry],
            "description": "Newest first; with format=csv, the same as a CSV export",
            "content": {"text/csv": {"schema": {"type": "string"}}},
        }
    },
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
    events = await admin.audit_events(archive, caller.trail, caller.principal.hospital, f, limit, offset)
    if format == "csv":
        headers = {"Content-Disposition": 'attachment; filename="audit.csv"'}
        return Response(admin.as_csv(events), media_type="text/csv", headers=headers)
    return JSONResponse([_jsonable(asdict(e)) for e in events])


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, dt.datetime) else v for k, v in row.items()}
