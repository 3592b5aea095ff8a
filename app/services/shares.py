"""Share links that replace the CD (see the README's walkthrough).

A share grants access to some studies until it expires, is revoked (with every share
minted from it) or has been used up. Its link carries a 192-bit token; its printed page an
access code; either opens a *session* (its own secret) once the optional challenge — the
patient's birth date or a PIN — is answered. Each gate passed (a session opened) and each
download counts as one use. Every secret is stored as a keyed hash only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from app.dicom.deidentification import Pseudonyms
from app.errors import BadRequest, Forbidden, NotFound, TooManyRequests, Unauthorized
from app.repository import audit as audit_repository
from app.repository import retrieve
from app.repository import shares as repository
from app.repository.audit import AuditEvent, AuditFilter
from app.repository.shares import NewShare
from app.repository.shares import ShareFilter as ShareFilter
from app.repository.shares import ShareRow as ShareRow
from app.security.principal import Principal, Right
from app.security.share_secrets import (
    Hasher,
    new_access_code,
    new_share_id,
    new_token,
    normalize_answer,
    normalize_code,
)
from app.services import audit
from app.services.archive import Archive
from app.services.audit import Trail
from app.services.mail import valid_address
from app.services.share_notices import Notices

PERMISSIONS = ("view", "download", "reshare")
#: Replacement UIDs of de-identifying shares kept in memory, at most (about 200 bytes each).
_PSEUDONYMS_HELD = 500_000
_RIGHTS = {"view": {Right.READ}, "download": {Right.READ, Right.DOWNLOAD}, "reshare": set()}
#: Seconds an opened secret is remembered (see :meth:`Shares.recall`), and how many at most.
#: A revocation or the last use reaches every process at once through
#: :mod:`app.repository.invalidation`; the TTL only bounds memory of secrets no longer used.
_RECALL_TTL = 60.0
_RECALL_MAX = 10_000


@dataclass(frozen=True)
class ShareRequest:
    studies: list[str]
    expires_at: dt.datetime
    permissions: list[str]
    max_uses: int | None = None
    recipient: str | None = None
    challenge: str | None = None  # "birthdate" or "pin"
    pin: str | None = None
    #: Serve de-identified copies (PS3.15 Annex E) on every path of the share.
    deidentify: bool = False
    #: Told when the share is first opened and when it is locked out.
    notify_email: str | None = None


@dataclass(frozen=True)
class CreatedShare:
    share: ShareRow
    token: str
    access_code: str


@dataclass(frozen=True)
class Access:
    """A share reached through a secret: the link's token, or a session's."""

    share: ShareRow
    via_session: bool

    @property
    def needs_challenge(self) -> bool:
        return self.share.challenge is not None and not self.via_session


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class _Recalled:
    access: Access
    #: When the secret stops opening the share: the share's expiry, or its session's.
    until: dt.datetime
    #: When to look it up again (time.monotonic()).
    fresh_until: float


class Shares:
    def __init__(self, archive: Archive, hasher: Hasher) -> None:
        self.archive, self.hasher = archive, hasher
        self._pseudonyms: OrderedDict[str, Pseudonyms] = OrderedDict()
        self.notices = Notices(archive)
        #: Secrets opened lately, by their hash as a link token.
        self._recalled: dict[bytes, _Recalled] = {}
        archive.invalidations.subscribe(self._invalidate)

    # --- staff ---------------------------------------------------------------------------

    async def create(
        self, creator: Principal, request: ShareRequest, parent: ShareRow | None = None
    ) -> CreatedShare:
        """A new share of ``request.studies``, which must all be visible to ``creator``
        (or, for a child share, be among ``parent``'s)."""
        settings = self.archive.settings
        studies = sorted(set(request.studies))
        if not 1 <= len(studies) <= 100:
            raise BadRequest("a share holds 1 to 100 studies")
        permissions = _permissions(request.permissions)
        if request.expires_at.tzinfo is None:
            raise BadRequest("expires_at needs a time zone (e.g. 2026-12-31T23:59:00Z)")
        latest = now() + dt.timedelta(days=settings.share_max_days)
        if not now() < request.expires_at <= latest:
            raise BadRequest(
                f"expires_at must be in the future and at most {settings.share_max_days} days away"
            )
        if request.max_uses is not None and request.max_uses < 1:
            raise BadRequest("max_uses must be at least 1")
        if request.deidentify and "reshare" in permissions:
            # A child share would be made from the recipient's pseudonymous UIDs, and
            # its own copies would need the same key: not offered.
            raise BadRequest("a de-identified share cannot allow sharing further")
        if parent is None:
            hospital, only = creator.scope.filters(cross_hospital=True)
            found = await repository.shareable(self.archive.pool, studies, hospital, only)
            missing = sorted(set(studies) - {f["study_instance_uid"] for f in found})
            if missing:
                raise NotFound(f"no study {missing[0]}")  # as if absent: existence does not leak
            hospital_pk = creator.hospital_pk
        else:
            found = await repository.shareable(self.archive.pool, studies, None, parent.studies)
            if len(found) != len(studies):
                raise Forbidden("a child share can only hold studies of its parent share")
            hospital_pk = parent.hospital_pk
        if hospital_pk is None:
            raise Forbidden("only a member hospital's staff may share")
        notify = valid_address(request.notify_email) if request.notify_email else None
        token, code, share_id = new_token(), new_access_code(), new_share_id()
        challenge_hash = self._challenge_hash(share_id, request, found)
        await repository.insert(
            self.archive.pool,
            NewShare(
                id=share_id, token_hash=self.hasher.digest("token", token),
                code_hash=self.hasher.digest("code", code),
                hospital_pk=hospital_pk, created_by=creator.subject, expires_at=request.expires_at,
                max_uses=request.max_uses, permissions=permissions, recipient=request.recipient,
                challenge=request.challenge, challenge_hash=challenge_hash,
                parent_id=parent.id if parent else None, studies=studies,
                deidentify=request.deidentify, notify_email=notify,
            ),
        )  # fmt: skip
        row = await repository.by_id(self.archive.pool, share_id)
        assert row is not None
        return CreatedShare(row, token, code)

    def _challenge_hash(
        self, share_id: str, request: ShareRequest, found: list[dict[str, object]]
    ) -> bytes | None:
        if request.challenge is None:
            return None
        if request.challenge == "pin":
            pin = normalize_answer("pin", request.pin or "")
            if not pin.isdigit() or not 4 <= len(pin) <= 12:
                raise BadRequest("a PIN is 4 to 12 digits")
            answer = pin
        elif request.challenge == "birthdate":
            dates = {f["patient_birth_date"] for f in found}
            if len(dates) != 1 or not next(iter(dates)):
                raise BadRequest("the birth date challenge needs one known birth date for all shared studies")
            answer = str(next(iter(dates)))
        else:
            raise BadRequest("challenge must be 'birthdate' or 'pin'")
        return self.hasher.digest(f"challenge:{share_id}", answer)

    async def share(self, by: Principal, trail: Trail, request: ShareRequest) -> CreatedShare:
        """A staff member's new share (:meth:`create`), recorded, refused or not."""
        async with audit.refusals(self.archive, trail):
            created = await self.create(by, request)
        share = created.share
        trail.event.share_id = share.id
        trail.note(studies=share.studies, owners=[share.hospital], count=len(share.studies))
        await audit.commit(self.archive, trail, 201, f"created share {share.id}")
        return created

    async def search(self, trail: Trail, f: ShareFilter, limit: int, offset: int) -> list[ShareRow]:
        found = await repository.search(self.archive.pool, f, limit, offset)
        await audit.commit(self.archive, trail, 200, f"{len(found)} shares")
        return found

    async def inspect(self, by: Principal, trail: Trail, share_id: str) -> tuple[ShareRow, list[AuditEvent]]:
        """A share of the caller's hospital and its access history."""
        share = await self.visible(by, share_id)
        history = await self.history(share.id)
        trail.event.share_id = share.id
        await audit.commit(self.archive, trail, 200)
        return share, history

    async def revoke(self, by: Principal, trail: Trail, share_id: str) -> list[str]:
        share = await self.visible(by, share_id)
        revoked = await repository.revoke(self.archive.pool, share.id, by.subject)
        for share_id in revoked:
            self.archive.invalidations.changed_here("share", share_id)
        trail.event.share_id = share_id
        await audit.commit(
            self.archive, trail, 200, f"revoked {', '.join(revoked) or 'nothing (already revoked)'}"
        )
        return revoked

    async def reprint(
        self, by: Principal, trail: Trail, share_id: str, token: str, code: str, detail: str = "printed"
    ) -> ShareRow:
        """The share whose secrets ``token`` and ``code`` are, for printing its page again
        (or its PDF: ``detail`` says which). Secrets are stored only as hashes: only
        whoever holds them can print it."""
        share = await self.held(by, share_id, token, code)
        trail.event.share_id = share.id
        await audit.commit(self.archive, trail, 200, detail)
        return share

    async def held(self, by: Principal, share_id: str, token: str, code: str) -> ShareRow:
        """``share_id``, visible to ``by``, if ``token`` and ``code`` are its secrets: what
        staff must hold to print, download or email its Access Page again (the secrets are
        stored only as hashes, so only whoever kept the creation answer can)."""
        share = await self.visible(by, share_id)
        access = await self.resolve(token)
        opened = await self.peek_code(code)
        if access is None or access.share.id != share.id or opened is None or opened.id != share.id:
            raise NotFound("these secrets do not belong to this share")
        return share

    async def summaries(self, uids: list[str]) -> list[dict[str, Any]]:
        """What the pages show of the shared studies (those still stored)."""
        return await repository.summaries(self.archive.pool, uids)

    async def instance_uids(self, share: ShareRow, study: str) -> list[tuple[str, str]]:
        """(Series, SOP Instance UID) of each instance of a shared study, as the share sees it."""
        return await retrieve.instance_uids(self.archive.pool, principal_for(share).scope, study, None)

    async def visible(self, by: Principal, share_id: str) -> ShareRow:
        """A share of the caller's hospital (another hospital's is 404)."""
        share = await repository.by_id(self.archive.pool, share_id)
        if share is None or share.hospital_pk != by.hospital_pk:
            raise NotFound(f"no share {share_id}")
        return share

    # --- recipients ------------------------------------------------------------------------

    async def resolve(self, secret: str) -> Access | None:
        """The live share a secret opens, or None (unknown, expired, revoked, used up)."""
        opened = await self._open(secret)
        return None if opened is None else opened.access

    async def _open(self, secret: str) -> _Recalled | None:
        h = self.hasher
        found = await repository.by_secret(
            self.archive.pool, h.digest("token", secret), h.digest("session", secret)
        )
        if found is None or found.share.state(now()) != "active":
            return None
        until = min(found.share.expires_at, found.session_expires_at or found.share.expires_at)
        return _Recalled(Access(found.share, found.via_session), until, time.monotonic() + _RECALL_TTL)

    async def recall(self, secret: str) -> Access | None:
        """:meth:`resolve`, from memory when the secret was opened lately: a viewer sends it
        with every request. Its expiry is checked on every use; a revocation or its last
        use is a notice that makes every process forget it (see
        :mod:`app.repository.invalidation`), and nothing is served from memory while
        those notices may be missed. The use count remembered may be behind: what takes
        a use does so in the database, atomically."""
        key = self.hasher.digest("token", secret)
        invalidations = self.archive.invalidations
        held = self._recalled.get(key) if invalidations.live else None
        if held is not None and held.fresh_until > time.monotonic():
            if held.until > now():
                return held.access
            self._recalled.pop(key, None)
            return None
        generation = invalidations.generation
        opened = await self._open(secret)
        if opened is None:
            self._recalled.pop(key, None)
            return None
        # Not remembered if a notice (or a flush) came while it was looked up.
        if invalidations.live and generation == invalidations.generation:
            if len(self._recalled) >= _RECALL_MAX:
                self._recalled.clear()
            self._recalled[key] = opened
        return opened.access

    def _invalidate(self, kind: str | None, key: str | None) -> None:
        if kind is None:
            self._recalled.clear()
        elif kind == "share" and key:
            for secret, held in list(self._recalled.items()):
                if held.access.share.id == key:
                    del self._recalled[secret]

    async def principal(self, secret: str) -> Principal:
        """The caller a share secret makes, for DICOMweb (PS3.18 by token)."""
        access = await self.recall(secret)
        if access is None:
            raise Unauthorized("the share link is not valid (unknown, expired, revoked or used up)")
        if access.needs_challenge:
            raise Unauthorized("this share asks for a challenge: open its link in a browser first")
        return self.principal_for(access.share)

    def principal_for(self, share: ShareRow) -> Principal:
        """The caller ``share`` makes, with its de-identification key when it has one."""
        principal = principal_for(share)
        key = self.deidentify_key(share)
        return principal if key is None else replace(principal, deidentify_key=key)

    def deidentify_key(self, share: ShareRow) -> bytes | None:
        """The key a de-identifying share's UIDs are remapped with: derived from the
        archive's secret and the share's id, so it is the same for every request of the
        share and on every worker, and stored nowhere."""
        return self.hasher.digest("deidentify", share.id) if share.deidentify else None

    async def pseudonyms(self, share: ShareRow, fresh: bool = False) -> Pseudonyms | None:
        """A de-identifying share's replacement UIDs, each to its original (the study,
        series and instance UIDs of the shared studies), to read requests by. Kept for
        the next requests (a viewer sends one per frame); ``fresh`` reads them anew, for
        a UID not found (an instance stored since)."""
        key = self.deidentify_key(share)
        if key is None:
            return None
        cached = None if fresh else self._pseudonyms.get(share.id)
        if cached is not None:
            self._pseudonyms.move_to_end(share.id)
            return cached
        rows = await repository.shared_uids(self.archive.pool, share.studies)
        uids = {uid for row in rows for uid in row} | set(share.studies)
        found = await asyncio.to_thread(Pseudonyms, key, uids)
        self._pseudonyms.pop(share.id, None)
        self._pseudonyms[share.id] = found
        # Bounded by the UIDs held, not the shares: one share may hold 100 large studies.
        while (
            sum(len(p.originals) for p in self._pseudonyms.values()) > _PSEUDONYMS_HELD
            and len(self._pseudonyms) > 1
        ):
            self._pseudonyms.popitem(last=False)
        return found

    async def burned_in_warning(self, share: ShareRow) -> bool:
        """Whether a de-identified share holds instances whose pixels may still show
        identity (Burned In Annotation YES or absent: PS3.15 §E.1.1 leaves pixels alone)."""
        if not share.deidentify:
            return False
        return await repository.burned_in_risk(self.archive.pool, share.studies) > 0

    async def check_lockout(self, share_id: str | None, client: str | None) -> None:
        s = self.archive.settings
        per_share, per_client = await repository.failures(
            self.archive.pool, share_id, client, s.share_failure_window
        )
        if per_share >= s.share_failures_per_share or per_client >= s.share_failures_per_client:
            raise TooManyRequests("too many failed attempts: try again in a few minutes")

    async def answer(self, access: Access, typed: str, client: str | None) -> str:
        """Check the challenge answer; open a session and return its secret."""
        share = access.share
        await self.check_lockout(share.id, client)
        assert share.challenge is not None and share.challenge_hash is not None
        answer = normalize_answer(share.challenge, typed)
        if not answer or not self.hasher.matches(f"challenge:{share.id}", answer, share.challenge_hash):
            await repository.record_failure(self.archive.pool, client, share.id)
            await self.notices.failed(share, client)
            raise Forbidden("that answer does not match")
        return await self.open_session(share)

    async def enter_code(self, typed: str, client: str | None) -> Access:
        """The share an access code opens (not yet through its challenge); failures count
        toward the client's lockout, and look the same whatever the reason."""
        await self.check_lockout(None, client)
        code = normalize_code(typed)
        share = (
            await repository.by_code(self.archive.pool, self.hasher.digest("code", code)) if code else None
        )
        if share is None or share.state(now()) != "active":
            await repository.record_failure(self.archive.pool, client, share.id if share else None)
            raise Forbidden("this code does not open any share")
        return Access(share, via_session=False)

    async def peek_code(self, typed: str) -> ShareRow | None:
        """The share an access code belongs to, for staff holding it (no lockout)."""
        code = normalize_code(typed)
        return await repository.by_code(self.archive.pool, self.hasher.digest("code", code)) if code else None

    async def open_session(self, share: ShareRow) -> str:
        """A session for a gate passed: one use of the share."""
        if not await _take_use(self.archive, share.id):
            raise Unauthorized("the share link is not valid (unknown, expired, revoked or used up)")
        await self.notices.opened(share.id)
        secret = new_token()
        hours = dt.timedelta(hours=self.archive.settings.share_session_hours)
        await repository.add_session(
            self.archive.pool,
            self.hasher.digest("session", secret),
            share.id,
            min(share.expires_at, now() + hours),
        )
        return secret

    async def take_use(self, share_id: str) -> None:
        """One download: refused when the share is used up."""
        if not await _take_use(self.archive, share_id):
            raise Unauthorized("the share has been used up")
        await self.notices.opened(share_id)

    async def history(self, share_id: str) -> list[AuditEvent]:
        await audit.visible(self.archive)
        return await audit_repository.search(self.archive.pool, AuditFilter(share_id=share_id), 500, 0)


async def take_download(archive: Archive, trail: Trail) -> None:
    """Whole instances sent to a share's caller are a download: one of the share's uses,
    refused when it is used up. Nothing for staff."""
    principal = trail.principal
    if principal is not None and principal.share_id is not None:
        if not await _take_use(archive, principal.share_id):
            raise Unauthorized("the share has been used up")


async def _take_use(archive: Archive, share_id: str) -> bool:
    """One use of the share; after its last, this process forgets it at once (the others
    when the notice the database sends reaches them)."""
    use = await repository.take_use(archive.pool, share_id)
    if use is not None and use.last:
        archive.invalidations.changed_here("share", share_id)
    return use is not None


def principal_for(share: ShareRow) -> Principal:
    """The caller a share makes: its studies only, with its permissions' rights."""
    rights = frozenset().union(*(_RIGHTS[p] for p in share.permissions))
    return Principal(
        subject=f"share:{share.id}", hospital=None, hospital_pk=None, roles=frozenset(),
        share_id=share.id, shared_studies=frozenset(share.studies), share_rights=rights,
    )  # fmt: skip


def _permissions(asked: list[str]) -> list[str]:
    unknown = sorted(set(asked) - set(PERMISSIONS))
    if unknown or not asked:
        raise BadRequest(f"permissions are some of {', '.join(PERMISSIONS)}; not {unknown or 'none'}")
    return [p for p in PERMISSIONS if p in asked or (p == "view" and asked)]


def narrower(parent: ShareRow, request: ShareRequest) -> None:
    """A child share may only narrow its parent: fewer studies, fewer permissions, an
    earlier expiry, no more uses than the parent has left."""
    if "reshare" not in parent.permissions:
        raise Forbidden("this share does not allow sharing further")
    if request.expires_at > parent.expires_at:
        raise BadRequest("a child share must expire no later than its parent")
    extra = set(request.permissions) - set(parent.permissions)
    if extra:
        raise BadRequest(f"a child share cannot add permissions: {', '.join(sorted(extra))}")
    if not set(request.studies) <= set(parent.studies):
        raise Forbidden("a child share can only hold studies of its parent share")
