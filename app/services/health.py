"""Readiness: whether the database and the object store answer."""

from __future__ import annotations

from app.errors import StorageUnavailable
from app.repository.database import ping
from app.services.archive import Archive


async def readiness(archive: Archive) -> dict[str, str]:
    """Each dependency's state: ``ok``, or why it is unavailable."""

    async def database() -> None:
        await ping(archive.pool)

    checks: dict[str, str] = {}
    for name, probe in (("database", database), ("object_store", archive.store.ping)):
        try:
            await probe()
            checks[name] = "ok"
        except StorageUnavailable as exc:
            checks[name] = exc.message
    return checks
