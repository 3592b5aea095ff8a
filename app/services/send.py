"""Sending a study out, as a background job: by C-STORE to a known application entity
(PS3.4 Annex B, PS3.7 §9.1.1) or by STOW-RS to another archive (PS3.18 §10.5).

The instances are those of the study the caller may retrieve, read from the archive's
object store as stored, never decoded or transcoded:

- **C-STORE**: one association, whose presentation contexts offer each SOP class in the
  transfer syntaxes it is stored in (PS3.8 §7.1.1.13); each instance streamed from a
  spooled copy of its object (pynetdicom's chunked sending), one C-STORE each.
- **STOW-RS**: a few instances per request, each request's body streamed from the
  store as it is sent; the outcomes read from the response's Referenced and Failed SOP
  sequences (PS3.18 §10.5.3).

What fails for a reason that may pass (the peer unreachable, an association aborted or
refused, a 5xx or 429, a C-STORE status of "out of resources") is retried, at most
``FILMLESS_SEND_ATTEMPTS`` times with a doubling delay; a refusal is final. Each
instance's outcome is recorded in the job, and the send is audited as one event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from pynetdicom import AE, _config
from pynetdicom.presentation import build_context

from app.dicom.multipart import multipart_boundary, related_content_type, stream_multipart
from app.dicom.store_status import Delivery, delivery
from app.errors import BadRequest, NotFound, ObjectNotFound
from app.repository import aes, retrieve
from app.repository import audit as audit_repository
from app.repository.jobs import NewJob, Progress
from app.repository.retrieve import StoredObject
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.bodies import drain
from app.services.jobs import Jobs, Reporter
from app.storage.base import BlobStore

log = logging.getLogger(__name__)
# pynetdicom narrates every association at INFO; its warnings and errors are enough.
logging.getLogger("pynetdicom").setLevel(logging.WARNING)

# Send instances from the spooled file in chunks rather than decoding them first: what is
# sent is the stored bytes, and no instance is held in memory whole.
_config.STORE_SEND_CHUNKED_DATASET = True
#: PS3.8 §9.3.2.2: at most 128 presentation contexts (odd IDs 1-255) in one association.
_MAX_CONTEXTS = 128
#: Instances per STOW-RS request.
_STOW_BATCH = 8


@dataclass(frozen=True)
class Destination:
    """Where to send: a known AE title, or a STOW-RS URL (with an optional bearer token,
    kept in memory only)."""

    ae_title: str | None = None
    dicomweb: str | None = None
    token: str | None = field(default=None, repr=False)


@dataclass
class _Item:
    obj: StoredObject
    attempts: int = 0
    status: str | None = None  # "sent" | "failed", once final
    reason: str | None = None
    dimse_status: int | None = None

    def outcome(self) -> dict[str, Any]:
        o = self.obj
        return {
            "sop_instance_uid": o.sop_instance_uid,
            "series_instance_uid": o.series_instance_uid,
            "study_instance_uid": o.study_instance_uid,
            "status": self.status,
            "reason": self.reason,
            "dimse_status": f"0x{self.dimse_status:04X}" if self.dimse_status is not None else None,
            "attempts": self.attempts,
        }


class _Transient(Exception):
    """A failure of the whole attempt that may pass (connection, association, 5xx)."""


async def submit(archive: Archive, jobs: Jobs, trail: Trail, study: str, destination: Destination) -> NewJob:
    """Queue the send of ``study`` (as the caller may retrieve it) to ``destination``."""
    target = await _resolve(archive, trail, destination)
    objects = await retrieve.objects(archive.pool, trail.scope, study)
    if not objects:
        raise NotFound(f"no study {study}")
    trail.note(
        studies=[study],
        patients=(o.patient_id for o in objects),
        owners=(o.hospital for o in objects),
        count=len(objects),
        size=sum(o.size for o in objects),
    )
    job = await jobs.create("send", trail, {"study": study, "destination": target.label})
    items = [_Item(o) for o in objects]

    async def work(reporter: Reporter) -> None:
        await _send(archive, trail, items, target, reporter)
        await _audit(archive, trail, study, items, target.label, job)

    jobs.launch(job, work)
    await audit.commit(archive, trail, 202, f"job {job.id}")
    return job


async def destinations(archive: Archive, hospital_pk: int | None) -> list[aes.ApplicationEntity]:
    """The known AEs of a hospital that the archive may send to, to choose from (their
    titles and addresses, no patient data: nothing to audit)."""
    if hospital_pk is None:
        return []
    return [ae for ae in await aes.every(archive.pool, hospital_pk) if ae.destination]


@dataclass(frozen=True)
class _Target:
    label: str
    ae: aes.ApplicationEntity | None = None
    url: str | None = None
    token: str | None = field(default=None, repr=False)


async def _resolve(archive: Archive, trail: Trail, destination: Destination) -> _Target:
    if (destination.ae_title is None) == (destination.dicomweb is None):
        raise BadRequest('name either a "destination" (an AE title) or a "dicomweb" URL')
    if destination.ae_title is not None:
        ae = await aes.by_title(archive.pool, destination.ae_title)
        # An AE of another hospital is as unknown as a missing one.
        if ae is None or ae.hospital_pk != trail.scope.hospital_pk:
            raise NotFound(f"no known application entity {destination.ae_title!r}")
        if not ae.destination:
            raise BadRequest(f"{ae.ae_title} is not a destination the archive may send to")
        return _Target(f"AE {ae.ae_title}", ae=ae)
    url = (destination.dicomweb or "").rstrip("/")
    allowed = archive.settings.send_dicomweb_urls
    # Only configured archives: a URL from a request is otherwise a way to make the
    # archive send patient data anywhere, or probe the network it sits in.
    if not any(url == a.rstrip("/") or url.startswith(a.rstrip("/") + "/") for a in allowed):
        raise BadRequest("that DICOMweb URL is not one of FILMLESS_SEND_DICOMWEB_URLS")
    return _Target(url, url=url, token=destination.token)


async def _send(
    archive: Archive, trail: Trail, items: list[_Item], target: _Target, reporter: Reporter
) -> None:
    settings = archive.settings
    delay = settings.send_retry_delay
    for attempt in range(1, settings.send_attempts + 1):
        pending = [i for i in items if i.status is None]
        if not pending:
            break
        for item in pending:
            item.attempts = attempt
        try:
            if target.ae is not None:
                await _c_store(archive, target.ae, pending, items, reporter)
            else:
                await _stow(archive, target, pending, items, reporter)
        except _Transient as exc:
            log.info("send attempt %d failed: %s", attempt, exc)
            for item in pending:
                if item.status is None:
                    item.reason = str(exc)
        if attempt < settings.send_attempts and any(i.status is None for i in items):
            await asyncio.sleep(delay)
            delay *= 2
    final = [i for i in items if i.status is None]
    for item in final:
        item.status = "failed"
        item.reason = item.reason or "not delivered"
    await _report(reporter, items, final)


async def _report(reporter: Reporter, items: list[_Item], finished: list[_Item]) -> None:
    done = [i for i in items if i.status is not None]
    counts = {s: sum(1 for i in done if i.status == s) for s in ("sent", "failed")}
    progress = Progress(
        len(items), len(done), sum(i.obj.size for i in items), sum(i.obj.size for i in done), counts
    )
    await reporter(progress, [i.outcome() for i in finished])


def _settle(item: _Item, status: int) -> None:
    """Record a C-STORE or STOW-RS status (PS3.4 B.2.3) as the item's outcome; a transient
    one leaves it to the next attempt."""
    item.dimse_status = status
    meaning = delivery(status)
    if meaning is Delivery.SENT:
        item.status, item.reason = "sent", None
    elif meaning is Delivery.REFUSED:
        item.status, item.reason = "failed", "refused by the destination"
    else:
        item.reason = "the destination was out of resources"


# --- C-STORE --------------------------------------------------------------------------


async def _c_store(
    archive: Archive, ae: aes.ApplicationEntity, pending: list[_Item], items: list[_Item], reporter: Reporter
) -> None:
    """One association for ``pending``. The association runs on a thread (pynetdicom
    blocks); each object is spooled to disk from the store on the event loop, just before
    it is sent, and each outcome recorded as it comes."""
    loop = asyncio.get_running_loop()
    stop = threading.Event()
    spool = archive.settings.spool_path
    await asyncio.to_thread(spool.mkdir, parents=True, exist_ok=True)
    scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="send-", dir=spool))

    def on_loop(coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result()

    def fetch(item: _Item) -> Path:
        path = scratch / "instance.dcm"
        on_loop(_spool_object(archive.store, item.obj, path))
        return path

    def settled(item: _Item) -> None:
        if item.status is not None:
            on_loop(_report(reporter, items, [item]))

    sender = loop.run_in_executor(
        None, _associate_and_send, archive.settings, ae, pending, fetch, settled, stop
    )
    try:
        await asyncio.shield(sender)
    except asyncio.CancelledError:
        # Let the thread end the association (an A-ABORT) before the job goes.
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.shield(sender)
        raise
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)


def _associate_and_send(
    settings: Any,
    ae: aes.ApplicationEntity,
    pending: list[_Item],
    fetch: Callable[[_Item], Path],
    settled: Callable[[_Item], None],
    stop: threading.Event,
) -> None:
    local = AE(ae_title=settings.send_ae_title)
    local.acse_timeout = local.dimse_timeout = local.network_timeout = settings.send_timeout
    contexts: dict[str, list[str]] = {}
    for item in pending:
        syntaxes = contexts.setdefault(item.obj.sop_class_uid, [])
        if item.obj.transfer_syntax_uid not in syntaxes:
            syntaxes.append(item.obj.transfer_syntax_uid)
    requested = [build_context(sop, syntaxes) for sop, syntaxes in contexts.items()][:_MAX_CONTEXTS]
    try:
        association = local.associate(ae.host, ae.port, requested, ae_title=ae.ae_title)
    except (OSError, RuntimeError) as exc:
        raise _Transient(f"cannot reach {ae.ae_title}: {type(exc).__name__}") from exc
    if not association.is_established:
        raise _Transient(f"{ae.ae_title} did not accept the association")
    try:
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in association.accepted_contexts}
        for item in pending:
            if stop.is_set():
                return
            key = (item.obj.sop_class_uid, item.obj.transfer_syntax_uid)
            if key not in accepted:
                # PS3.8 §7.1.1.13: the peer declined this SOP class in its stored syntax;
                # the archive sends instances as stored, so this one cannot go.
                item.status, item.reason = (
                    "failed",
                    "the destination accepts neither its SOP class nor its syntax",
                )
                settled(item)
                continue
            try:
                path = fetch(item)
            except ObjectNotFound:
                item.status, item.reason = "failed", "deleted from the archive meanwhile"
                settled(item)
                continue
            try:
                response = association.send_c_store(path)
            except (OSError, RuntimeError, ValueError, AttributeError) as exc:
                raise _Transient(f"C-STORE failed: {type(exc).__name__}") from exc
            if not association.is_established or "Status" not in response:
                raise _Transient("the association ended before the response")
            _settle(item, int(response.Status))
            settled(item)
    finally:
        if association.is_established:
            if stop.is_set():
                association.abort()
            else:
                association.release()


async def _spool_object(store: BlobStore, obj: StoredObject, path: Path) -> None:
    reader = await store.open(obj.object_key)
    with await asyncio.to_thread(path.open, "wb") as file:
        async for chunk in drain(reader):
            await asyncio.to_thread(file.write, chunk)


# --- STOW-RS --------------------------------------------------------------------------


async def _stow(
    archive: Archive, target: _Target, pending: list[_Item], items: list[_Item], reporter: Reporter
) -> None:
    assert target.url is not None
    headers = {"Accept": "application/dicom+json"}
    if target.token:
        headers["Authorization"] = f"Bearer {target.token}"
    timeout = httpx.Timeout(archive.settings.send_timeout)
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client:
        for start in range(0, len(pending), _STOW_BATCH):
            batch = pending[start : start + _STOW_BATCH]
            boundary = multipart_boundary()
            body = stream_multipart(_stow_parts(archive.store, batch), boundary)
            try:
                response = await client.post(
                    target.url + "/studies",
                    content=body,
                    headers={**headers, "Content-Type": related_content_type(boundary, "application/dicom")},
                )
            except httpx.HTTPError as exc:
                raise _Transient(f"cannot reach the archive: {type(exc).__name__}") from exc
            if response.status_code >= 500 or response.status_code == 429:
                raise _Transient(f"the archive answered {response.status_code}")
            _stow_outcomes(batch, response)
            await _report(reporter, items, [i for i in batch if i.status is not None])


async def _stow_parts(
    store: BlobStore, batch: list[_Item]
) -> AsyncIterator[tuple[Mapping[str, str], AsyncIterator[bytes]]]:
    for item in batch:
        reader = await store.open(item.obj.object_key)
        yield {"Content-Type": "application/dicom", "Content-Length": str(item.obj.size)}, drain(reader)


def _stow_outcomes(batch: list[_Item], response: httpx.Response) -> None:
    """Per PS3.18 §10.5.3: 200 all stored, 202 some (FailedSOPSequence lists the others),
    409 none; any other 4xx refuses the whole request."""
    if response.status_code not in (200, 202, 409):
        for item in batch:
            item.status, item.reason = "failed", f"the archive answered {response.status_code}"
        return
    try:
        body = response.json()
    except ValueError:
        body = {}
    failed = {
        str(f.get("00081155", {}).get("Value", [""])[0]): int(f.get("00081197", {}).get("Value", [0x0110])[0])
        for f in (body.get("00081198", {}).get("Value", []) if isinstance(body, dict) else [])
    }
    stored = {
        str(r.get("00081155", {}).get("Value", [""])[0])
        for r in (body.get("00081199", {}).get("Value", []) if isinstance(body, dict) else [])
    }
    for item in batch:
        uid = item.obj.sop_instance_uid
        if uid in failed:
            _settle(item, failed[uid])
        elif uid in stored or response.status_code == 200:
            _settle(item, 0x0000)
        else:
            item.reason = "not in the archive's response"


async def _audit(
    archive: Archive, trail: Trail, study: str, items: list[_Item], label: str, job: NewJob
) -> None:
    """The send's own event, when it ends: what went where, and what did not."""
    sent = [i for i in items if i.status == "sent"]
    event = trail.child(Transaction.SEND)
    event.outcome = 200 if len(sent) == len(items) else (202 if sent else 502)
    event.detail = f"job {job.id} to {label}: {len(sent)} of {len(items)} sent"
    event.study_uids = [study]
    event.series_uids = sorted({i.obj.series_instance_uid for i in sent})
    event.instance_uids = [i.obj.sop_instance_uid for i in sent]
    event.patient_ids = sorted({i.obj.patient_id for i in items})
    event.owner_hospitals = sorted({i.obj.hospital for i in items})
    event.instances, event.bytes = len(sent), sum(i.obj.size for i in sent)
    await audit_repository.record(archive.pool, event)
    await audit.export(archive, [event])
