"""The background sweep: removes what crashed or abandoned writes left behind."""

from __future__ import annotations

import asyncio
import logging
import time

from app.observability import metrics
from app.repository import instances, shares
from app.repository.database import try_lock
from app.services.archive import Archive
from app.services.delete import collect_garbage, remove_objects
from app.storage.filesystem import remove_stale_files

log = logging.getLogger(__name__)

#: An arbitrary constant naming the "sweep" advisory lock.
SWEEP_LOCK_ID = 0x46494C53


async def sweep_once(archive: Archive) -> int:
    """One sweep; skipped (0) while another process sweeps the same database. Every worker
    of a server runs the sweep, and they start together: the pending-write sweep alone would
    be safe side by side (rows are taken with SKIP LOCKED), but garbage collection would
    delete the same objects twice, so one sweep at a time does the work."""
    async with try_lock(archive.pool, SWEEP_LOCK_ID) as held:
        if not held:
            log.debug("another process is sweeping")
            return 0
        abandoned = await instances.sweep(archive.pool, archive.settings.pending_timeout)
        await remove_objects(archive, abandoned)
        removed = len(abandoned)
        if removed:
            log.info("sweep removed %d abandoned pending writes", removed)
            metrics.SWEEP_REMOVED.labels("pending_write").inc(removed)
        await shares.tidy(archive.pool, archive.settings.share_failure_window)
        collected = await collect_garbage(archive)
        if collected:
            log.info("sweep removed %d objects of deleted instances", collected)
            metrics.SWEEP_REMOVED.labels("deleted_object").inc(collected)
        return removed


async def sweep_local(archive: Archive) -> int:
    """Remove this node's leftovers of killed processes: spool files of requests that never
    finished, and temporary objects of interrupted puts. Every node does its own (the
    spool is local), so this runs outside the sweep's lock; how many were removed."""
    age = archive.settings.leftover_age
    removed = await asyncio.to_thread(remove_stale_files, archive.settings.spool_path, time.time() - age)
    removed += await archive.store.remove_stale_uploads(age)
    if removed:
        log.info("sweep removed %d leftover temporary files", removed)
        metrics.SWEEP_REMOVED.labels("leftover_file").inc(removed)
    return removed


async def sweep_forever(archive: Archive) -> None:
    while True:
        try:
            await sweep_local(archive)
            await sweep_once(archive)
        except Exception:
            # A sweep that fails (database briefly away) is simply tried again later.
            log.exception("sweep failed")
        await asyncio.sleep(archive.settings.sweep_interval)
