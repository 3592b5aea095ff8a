"""The audit trail of every access to patient data (who, what, when, from where, outcome).

A :class:`Trail` starts with each request, before authentication, so refused attempts are
recorded too (an HTTP request's in :mod:`app.http.trails`, from the request's facts); the
service fills in what was touched and commits it before answering, and the error handler
commits it for requests that fail. Writes of STOW-RS and DELETE record
their events inside the transaction that makes the change; other writes record theirs
before answering; reads hand theirs to the write-behind queue
(:mod:`app.services.audit_writer`), which writes them in batches.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from enum import Enum

from app.errors import FilmlessError
from app.observability import metrics
from app.repository import audit as repository
from app.repository.audit import AuditEvent
from app.repository.retrieve import Owner
from app.security.principal import Principal
from app.security.scope import Scope
from app.services.archive import Archive
from app.services.bodies import Body


class Transaction(Enum):
    STOW = "STOW-RS"
    QIDO = "QIDO-RS"
    WADO = "WADO-RS"
    METADATA = "METADATA"
    WADO_URI = "WADO-URI"
    DELETE = "DELETE"
    AUDIT_QUERY = "AUDIT-QUERY"
    ADMIN = "ADMIN"
    SHARE = "SHARE"  # staff creating, listing, revoking shares
    SHARE_ACCESS = "SHARE-ACCESS"  # a recipient opening a share: page, challenge, code
    SHARE_DOWNLOAD = "SHARE-DOWNLOAD"
    DOWNLOAD = "DOWNLOAD"  # a signed-in patient's ZIP of one of their own studies
    SIGN_IN = "SIGN-IN"  # a person signing in to the console or the portal (or refused)
    SIGN_OUT = "SIGN-OUT"
    ENROLMENT = "ENROLMENT"  # a portal enrolment request: received, reviewed, approved, declined
    IMPORT = "IMPORT"  # media (CD, ZIP, folder) imported: one event per import
    COERCE = "COERCE"  # an imported instance's patient attributes reconciled (IHE IRWF.b)
    JOB = "JOB"  # reading a background job's progress
    SEND = "SEND"  # a study sent to another archive (C-STORE or STOW-RS): one event per send
    # DIMSE services (PS3.7 §9, §10) of the DICOM listener; an association refused is
    # recorded as an ASSOCIATION event.
    ASSOCIATION = "DIMSE-ASSOCIATION"
    C_ECHO = "C-ECHO"
    C_STORE = "C-STORE"
    C_FIND = "C-FIND"
    C_MOVE = "C-MOVE"
    C_GET = "C-GET"
    STORAGE_COMMITMENT = "STORAGE-COMMITMENT"


class Trail:
    """The audit record of one request (an HTTP request, a DIMSE operation, an import),
    filled in as it is served."""

    def __init__(
        self,
        transaction: Transaction,
        *,
        method: str,
        path: str,
        query: str | None = None,
        client_address: str | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.event = AuditEvent(
            transaction=transaction.value,
            method=method,
            path=path,
            query=query,
            client_address=client_address,
            user_agent=user_agent,
        )
        self.recorded = False
        #: What the caller may see; set once they are authenticated.
        self.scope = Scope(hospital_pk=None)
        #: Who the caller is, once authenticated.
        self.principal: Principal | None = None

    def identify(self, principal: Principal) -> None:
        self.event.subject = principal.subject
        self.event.hospital = principal.hospital
        self.event.roles = sorted(r.value for r in principal.roles)
        self.event.share_id = principal.share_id
        self.scope = principal.scope
        self.principal = principal

    def note(
        self,
        *,
        studies: Iterable[str] = (),
        series: Iterable[str] = (),
        instances: Iterable[str] = (),
        patients: Iterable[str] = (),
        owners: Iterable[str] = (),
        count: int = 0,
        size: int = 0,
    ) -> None:
        """Note what the request accessed (merged with what is noted already)."""
        e = self.event
        e.study_uids = _merged(e.study_uids, studies)
        e.series_uids = _merged(e.series_uids, series)
        e.instance_uids = _merged(e.instance_uids, instances)
        e.patient_ids = _merged(e.patient_ids, patients)
        e.owner_hospitals = _merged(e.owner_hospitals, owners)
        e.instances += count
        e.bytes += size

    def note_instance(self, study: str, series: str, instance: str, owner: Owner) -> None:
        """One instance accessed (a frame, a bulk value, a rendering)."""
        self.note(studies=[study], series=[series], instances=[instance], patients=[owner.patient_id],
                   owners=[owner.hospital], count=1)  # fmt: skip

    def child(self, transaction: Transaction) -> AuditEvent:
        """A separate event of this request's caller (one per stored instance)."""
        e = self.event
        return AuditEvent(
            transaction=transaction.value,
            method=e.method,
            path=e.path,
            subject=e.subject,
            hospital=e.hospital,
            roles=list(e.roles),
            share_id=e.share_id,
            client_address=e.client_address,
            user_agent=e.user_agent,
        )


def redact(path: str) -> str:
    """A path without the share secret it may carry (``/s/{secret}/…``), or a portal
    sign-in link's (``/portal/signin/{secret}``): secrets are never recorded.

    >>> redact("/s/abc123/download"), redact("/dicom-web/studies")
    ('/s/(secret)/download', '/dicom-web/studies')
    >>> redact("/portal/signin/abc123"), redact("/portal/signin")
    ('/portal/signin/(secret)', '/portal/signin')
    """
    if path.startswith("/portal/signin/"):
        return "/portal/signin/(secret)"
    if path.startswith(("/s/", "/share/")):
        head, _, rest = path[1:].partition("/")
        _, _, tail = rest.partition("/")
        return f"/{head}/(secret)" + (f"/{tail}" if tail else "")
    return path


def _merged(have: list[str], more: Iterable[str]) -> list[str]:
    return list(dict.fromkeys([*have, *(m for m in more if m)]))


async def commit(archive: Archive, trail: Trail, status: int, detail: str | None = None) -> None:
    """Record the request's event (once)."""
    if trail.recorded:
        return
    trail.recorded = True
    trail.event.outcome, trail.event.detail = status, detail
    if trail.event.transaction in _RECIPIENT_TRANSACTIONS:
        metrics.SHARE_ACCESSES.labels(str(status)).inc()
    if trail.event.transaction in _READS:
        # Written behind the request, in a batch with others, and exported with it.
        await archive.audit.put(trail.event)
        return
    await repository.record(archive.pool, trail.event)
    await export(archive, [trail.event])


@contextlib.asynccontextmanager
async def refusals(archive: Archive, trail: Trail, prefix: str = "") -> AsyncIterator[None]:
    """Record an archive error raised inside as the request's outcome (its status and
    reason, after ``prefix``), then let it go on: to the error handler of an API request,
    or to a page that shows it."""
    try:
        yield
    except FilmlessError as exc:
        await commit(archive, trail, exc.status, prefix + exc.message)
        raise


_RECIPIENT_TRANSACTIONS = frozenset({Transaction.SHARE_ACCESS.value, Transaction.SHARE_DOWNLOAD.value})
#: Transactions that change nothing: their events need no transaction of their own.
_READS = frozenset(
    t.value for t in (Transaction.QIDO, Transaction.WADO, Transaction.METADATA, Transaction.WADO_URI)
)


async def sending(archive: Archive, trail: Trail, body: Body) -> Body:
    """Record the access before the first byte of ``body`` leaves: a streamed response
    cannot change its status afterwards (206 for a byte range or a partial answer). A
    read's event is queued by then (a full queue holds the response back), and written
    behind it."""
    await commit(archive, trail, body.status)
    return body


def stored_in_transaction(trail: Trail) -> None:
    """The request's changes were audited where they were made; nothing more to record."""
    trail.recorded = True


async def export(archive: Archive, events: list[AuditEvent]) -> None:
    """Append DICOM audit messages for ``events`` to the configured sink (JSON lines)."""
    await archive.audit.sink.append(events)


async def visible(archive: Archive) -> None:
    """Before reading the trail: this process's read events queued so far are written."""
    await archive.audit.flush()
