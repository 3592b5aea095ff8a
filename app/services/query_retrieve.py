"""Query/Retrieve over DIMSE (PS3.4 Annex C): C-FIND through the QIDO-RS engine, and the
objects a C-MOVE or C-GET sends, located under the calling AE's scope.

Both searches are :func:`app.services.qido.search` — one matching engine for DICOMweb and
DIMSE — with the identifier translated by :mod:`app.dicom.identifiers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterable
from pathlib import Path

from pydicom.dataset import Dataset

from app.dicom.identifiers import FindRequest, IdentifierError, find_response
from app.dicom.levels import Level
from app.errors import BadRequest, ObjectNotFound
from app.repository import retrieve
from app.repository.retrieve import StoredObject
from app.services import qido
from app.services.archive import Archive
from app.services.audit import Trail


async def find_page(
    archive: Archive, trail: Trail, request: FindRequest, offset: int
) -> tuple[list[Dataset], bool]:
    """One page of C-FIND matches from ``offset``, and whether more follow. The matches'
    owners and studies are added to the trail (committed by the caller)."""
    limit = archive.settings.qido_max_limit
    params = [*request.params, ("limit", str(limit)), ("offset", str(offset))]
    result = await _search(archive, trail, request.level.qido_level, params)
    trail.note(
        studies=(s for s, _, _ in result.owners),
        patients=(p for _, p, _ in result.owners),
        owners=(h for _, _, h in result.owners),
        count=len(result.matches),
    )
    title = archive.settings.dicom_ae_title
    matches = [find_response(request, Dataset.from_json(m), title) for m in result.matches]
    return matches, len(result.matches) == limit


async def _search(
    archive: Archive, trail: Trail, level: Level, params: Iterable[tuple[str, str]]
) -> qido.SearchResult:
    try:
        return await qido.search(archive, trail.scope, level, params, root="")
    except BadRequest as exc:
        # PS3.4 C.4.1.1.4: a key the model cannot take "does not match the SOP class".
        raise IdentifierError(exc.message) from None


async def locate(archive: Archive, trail: Trail, params: list[tuple[str, str]]) -> list[StoredObject]:
    """The stored instances a retrieval's unique keys name, within the trail's scope, in
    study, series and instance order."""
    wanted: dict[str, set[str]] = {}
    offset, limit = 0, archive.settings.qido_max_limit
    while True:
        page = [*params, ("limit", str(limit)), ("offset", str(offset))]
        result = await _search(archive, trail, Level.INSTANCE, page)
        for match in result.matches:
            study = match["0020000D"]["Value"][0]
            wanted.setdefault(study, set()).add(match["00080018"]["Value"][0])
        if len(result.matches) < limit:
            break
        offset += limit
    found: list[StoredObject] = []
    for study, instances in wanted.items():
        stored = await retrieve.objects(archive.pool, trail.scope, study)
        found.extend(o for o in stored if o.sop_instance_uid in instances)
    return found


async def fetch(archive: Archive, trail: Trail, obj: StoredObject) -> Path | None:
    """The stored Part 10 file of ``obj``, copied from the object store into the spool (to
    send it without holding it in memory); None if it was deleted meanwhile. The caller
    removes the file."""
    try:
        reader = await archive.store.open(obj.object_key)
    except ObjectNotFound:
        return None
    spool = archive.settings.spool_path
    path = spool / f"retrieve-{os.urandom(12).hex()}.dcm"
    try:
        with await asyncio.to_thread(path.open, "wb") as file:
            async for chunk in reader:
                await asyncio.to_thread(file.write, chunk)
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    finally:
        await reader.aclose()
    trail.note_instance(obj.study_instance_uid, obj.series_instance_uid, obj.sop_instance_uid, obj)
    trail.note(size=obj.size)
    return path
