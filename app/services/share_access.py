"""A share's recipient at its pages: passing the gate (link, code, challenge), the access
page, a study's page, the download and sharing further. Each step records its outcome in
the trail the HTTP layer started (SHARE-ACCESS, or SHARE-DOWNLOAD); refusals too."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from app.errors import FilmlessError, Forbidden, TooManyRequests
from app.security.principal import Right
from app.services import audit
from app.services.audit import Trail
from app.services.download import study_zip
from app.services.shares import Access, CreatedShare, ShareRequest, Shares, narrower, principal_for

UNAVAILABLE = "unknown, expired, revoked or used-up share"


async def unavailable(shares: Shares, trail: Trail) -> None:
    """The secret opens nothing (or not this): recorded as a 404."""
    await audit.commit(shares.archive, trail, 404, UNAVAILABLE)


async def refused(shares: Shares, trail: Trail, refusal: FilmlessError) -> None:
    await audit.commit(shares.archive, trail, refusal.status, refusal.message)


async def open_gate(shares: Shares, trail: Trail, access: Access) -> str:
    """The gate is passed: a session (one use); its secret."""
    session = await shares.open_session(access.share)
    trail.note(studies=access.share.studies)
    await audit.commit(shares.archive, trail, 303, "share opened")
    return session


async def answer_challenge(
    shares: Shares, trail: Trail, access: Access, answer: str, client: str | None
) -> str:
    """A session's secret for the right answer; a wrong one (or too many) is recorded and raised."""
    try:
        session = await shares.answer(access, answer, client)
    except (Forbidden, TooManyRequests) as refusal:
        await refused(shares, trail, refusal)
        raise
    trail.note(studies=access.share.studies)
    await audit.commit(shares.archive, trail, 303, "challenge passed")
    return session


async def enter_code(shares: Shares, trail: Trail, code: str, client: str | None) -> Access:
    """The share an access code opens; a refusal is recorded and raised."""
    try:
        return await shares.enter_code(code, client)
    except (Forbidden, TooManyRequests) as refusal:
        await refused(shares, trail, refusal)
        raise


async def access_page(shares: Shares, trail: Trail, access: Access) -> list[dict[str, Any]]:
    """The shared studies' summaries, for the access page."""
    share = access.share
    studies = await shares.summaries(share.studies)
    trail.note(studies=share.studies, patients=(s["patient_id"] for s in studies))
    await audit.commit(shares.archive, trail, 200, "access page")
    return studies


@dataclass(frozen=True)
class StudyView:
    summary: dict[str, Any]
    #: (Series, SOP Instance UID) of each instance.
    instances: list[tuple[str, str]]


async def study_page(shares: Shares, trail: Trail, access: Access, study: str) -> StudyView | None:
    """A shared study's summary and instances; None (recorded as a 404) if it is gone."""
    found_studies = await shares.summaries([study])
    if not found_studies:
        await unavailable(shares, trail)
        return None
    found = found_studies[0]
    uids = await shares.instance_uids(access.share, study)
    trail.note(studies=[study], patients=[found["patient_id"]], owners=[found["hospital"]], count=len(uids))
    await audit.commit(shares.archive, trail, 200, "study page")
    return StudyView(found, uids)


async def download(shares: Shares, trail: Trail, access: Access) -> AsyncIterator[bytes]:
    """A share's download (one of its uses): its instances as a ZIP with a DICOMDIR,
    de-identified when the share is. Refused, and recorded, when the share does not allow
    downloads; recorded before the first byte, which the stream yields only when read."""
    principal = shares.principal_for(access.share)
    trail.identify(principal)
    if Right.DOWNLOAD not in principal.rights:
        refusal = Forbidden("download not permitted")
        await refused(shares, trail, refusal)
        raise refusal
    await shares.take_use(access.share.id)
    return await study_zip(shares.archive, trail, access.share.studies, shares.deidentify_key(access.share))


async def reshare(shares: Shares, trail: Trail, access: Access, asked: ShareRequest) -> CreatedShare:
    """A narrower child share of ``access``'s; a refusal is recorded and raised."""
    parent = access.share
    try:
        narrower(parent, asked)
        created = await shares.create(principal_for(parent), asked, parent=parent)
    except FilmlessError as refusal:
        await refused(shares, trail, refusal)
        raise
    trail.note(studies=created.share.studies)
    await audit.commit(shares.archive, trail, 201, f"created child share {created.share.id}")
    return created
