"""The background sweep: removes what crashed or abandoned writes left behind."""

from __future__ import annotations

import asyncio
import logging

from app.repository import instances, shares
from app.services.delete import collect_garbage
from app.state import Archive

log = logging.getLogger(__name__)


async def sweep_once(archive: Archive) -> int:
    removed = await instances.sweep(archive.pool, archive.settings.pending_timeout, archive.store.delete)
    if removed:
        log.info("sweep removed %d abandoned pending writes", removed)
    await shares.tidy(archive.pool, archive.settings.share_failure_window)
    collected = await collect_garbage(archive)
    if collected:
        log.info("sweep removed %d objects of deleted instances", collected)
    return removed


async def sweep_forever(archive: Archive) -> None:
    while True:
        try:
            await sweep_once(archive)
        except Exception:
            # A sweep that fails (database briefly away) is simply tried again later.
            log.exception("sweep failed")
        await asyncio.sleep(archive.settings.sweep_interval)
