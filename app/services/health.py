"""Readiness: what must hold before a node takes requests.

Each check answers "ok" or a reason. A node is ready only when its database answers on the
schema this code expects (every migration applied, none edited since), its object store
answers, and its spool takes a file: a STOW or C-STORE spools every part before storing it.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Awaitable
from pathlib import Path

from app.errors import StorageUnavailable
from app.repository.database import Pool, connection
from app.repository.migrations import unapplied
from app.services.archive import Archive


async def readiness(archive: Archive) -> dict[str, str]:
    return {
        "database": await _reason(_database(archive.pool)),
        "object_store": await _reason(archive.store.ping()),
        "spool": await _reason(asyncio.to_thread(_spool_writable, archive.settings.spool_path)),
    }


async def _reason(probe: Awaitable[None]) -> str:
    try:
        await probe
    except StorageUnavailable as exc:
        return exc.message
    return "ok"


async def _database(pool: Pool) -> None:
    async with connection(pool) as conn:
        problem = await unapplied(conn)
    if problem is not None:
        raise StorageUnavailable(problem)


def _spool_writable(spool: Path) -> None:
    # Write a byte, not just os.access: as root access() says yes on a read-only or full
    # filesystem. The file is anonymous and gone on close, so nothing is left behind.
    try:
        with tempfile.TemporaryFile(dir=spool) as probe:
            probe.write(b"\0")
            probe.flush()
    except OSError as exc:
        raise StorageUnavailable(
            f"the spool directory is not writable: {exc.strerror or type(exc).__name__}"
        ) from exc
