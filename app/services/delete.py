"""Deleting studies, series and instances (the DELETE transaction of PS3.18 §10.9 / the
"Study, Series and Instance Deletion" of many archives): index rows first, so readers see
404 at once, then the objects."""

from __future__ import annotations

import contextlib
import logging

from app.errors import NotFound, StorageUnavailable
from app.repository import deletion
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail

log = logging.getLogger(__name__)


async def delete(
    archive: Archive, trail: Trail, study: str, series: str | None = None, instance: str | None = None
) -> int:
    """Remove what is in scope (the caller's own hospital only); return the number of
    instances removed. The deletion is audited in its own transaction."""
    trail.note(studies=[study], series=[series] if series else [], owners=[trail.event.hospital or ""])
    trail.event.outcome = 204
    removed = await deletion.delete(archive.pool, trail.scope, study, series, instance, trail.event)
    if removed is None:
        what = f"instance {instance}" if instance else f"series {series}" if series else f"study {study}"
        raise NotFound(f"no stored {what}")
    audit.stored_in_transaction(trail)
    await audit.export(archive, [trail.event])
    count, keys = removed
    await remove_objects(archive, keys)
    return count


async def remove_objects(archive: Archive, keys: list[str]) -> None:
    """Delete objects queued as garbage, then forget them; what fails stays queued."""
    done = []
    for key in keys:
        with contextlib.suppress(StorageUnavailable):
            await archive.store.delete(key)
            done.append(key)
    if len(done) < len(keys):
        log.warning("%d objects could not be removed yet; the sweep retries", len(keys) - len(done))
    if done:
        await deletion.forget_garbage(archive.pool, done)


async def collect_garbage(archive: Archive, older_than: int = 0) -> int:
    """Remove objects a crash or an outage left queued (called by the sweep). No grace
    period is needed: keys are queued in the transaction that removes their rows, so once
    visible here nothing refers to them, and a delete racing the one of the request that
    queued them is harmless (deleting a missing object succeeds on both stores)."""
    keys = await deletion.old_garbage(archive.pool, older_than)
    await remove_objects(archive, keys)
    return len(keys)
