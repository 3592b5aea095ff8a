"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from app.http.deps import ArchiveDep
from app.services import health

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


class Readiness(BaseModel):
    """Each dependency's state: "ok", or why it is not."""

    status: str = Field(description="ok, or unavailable when a dependency is not ok")
    database: str = Field(description="Reachable and fully migrated")
    object_store: str
    spool: str = Field(description="Writable")


@router.get(
    "/readyz",
    summary="The database (fully migrated), the object store and the spool answer",
    responses={
        200: {"model": Readiness, "description": "Ready"},
        503: {"model": Readiness, "description": "Not ready: the dependencies not ok say why"},
    },
)
async def readyz(archive: ArchiveDep) -> JSONResponse:
    checks = await health.readiness(archive)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503
    )
