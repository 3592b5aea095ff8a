"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.errors import StorageUnavailable
from app.http.deps import ArchiveDep
from app.repository.database import ping

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database and the object store answer", responses={503: {}})
async def readyz(archive: ArchiveDep) -> JSONResponse:
    async def database() -> None:
        await ping(archive.pool)

    checks: dict[str, str] = {}
    for name, probe in (("database", database), ("object_store", archive.store.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except StorageUnavailable as exc:
            checks[name] = exc.message
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503
    )
