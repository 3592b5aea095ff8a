"""FastAPI dependencies: the archive's state, and the caller of each kind of access —
authenticated, authorized, and with the request's audit trail started."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from app.errors import Forbidden
from app.http import trails
from app.http.auth import authenticate, requires
from app.http.share_gateway import PREFIX_KEY
from app.http.state import running
from app.security.principal import Principal, Right
from app.services.archive import Archive
from app.services.audit import Trail, Transaction
from app.services.jobs import Jobs
from app.services.shares import Shares


def public_base(request: Request) -> str:
    """The archive's public base URL (``FILMLESS_BASE_URL``, else from the request)."""
    return (get_archive(request).settings.base_url or _request_base(request)).rstrip("/")


def _request_base(request: Request) -> str:
    """The base URL the client reached. A ``Host`` header without a port (some clients
    send one) means port 80 or 443; when the server listens elsewhere and no proxy stands
    in front (a proxy's ``Host`` is the public one), the port the connection came to is
    the one to point back at."""
    base = str(request.base_url)
    settings = get_archive(request).settings
    host = request.headers.get("host", "")
    server = request.scope.get("server")
    has_port = ":" in host.rsplit("]", 1)[-1]
    if host and not has_port and server and server[1] and not settings.trusted_proxies:
        port = int(server[1])
        if port != {"http": 80, "https": 443}.get(request.url.scheme):
            base = f"{request.url.scheme}://{host}:{port}{request.scope.get('root_path', '')}/"
    return base


def get_shares(request: Request) -> Shares:
    return running(request).shares


def get_jobs(request: Request) -> Jobs:
    return running(request).jobs


def get_archive(request: Request) -> Archive:
    return running(request).archive


def dicomweb_root(request: Request) -> str:
    """The absolute URL of the DICOMweb root, for RetrieveURL and BulkDataURI values."""
    archive = get_archive(request)
    base = archive.settings.base_url or _request_base(request)
    # Under a share's root (app.http.share_gateway), URLs point back under that root.
    return base.rstrip("/") + str(request.scope.get(PREFIX_KEY, "")) + "/dicom-web"


@dataclass(frozen=True)
class Caller:
    principal: Principal
    trail: Trail


def caller(right: Right, transaction: Transaction) -> Callable[..., Awaitable[Caller]]:
    """The caller of a ``transaction`` that needs ``right``. The audit trail starts first,
    so that refused attempts (401, 403) are recorded too."""

    async def start_trail(request: Request) -> Trail:
        return trails.start(request, transaction)

    authorized = requires(right)

    # Defaults rather than Annotated: the dependencies are local to this factory, which
    # string annotations (PEP 563) cannot name.
    async def dependency(
        trail: Trail = Depends(start_trail), principal: Principal = Depends(authorized)
    ) -> Caller:
        return Caller(principal, trail)

    return dependency


def member_caller(transaction: Transaction) -> Callable[..., Awaitable[Caller]]:
    """Any member hospital's staff (any role; not a share link), for what concerns only
    their own hospital's work, such as the jobs they run."""

    async def start_trail(request: Request) -> Trail:
        return trails.start(request, transaction)

    async def dependency(
        trail: Trail = Depends(start_trail), principal: Principal = Depends(authenticate)
    ) -> Caller:
        if principal.share_id is not None or principal.hospital_pk is None:
            raise Forbidden("only a member hospital's staff may do this")
        return Caller(principal, trail)

    return dependency


ArchiveDep = Annotated[Archive, Depends(get_archive)]
JobsDep = Annotated[Jobs, Depends(get_jobs)]
RootDep = Annotated[str, Depends(dicomweb_root)]
BaseDep = Annotated[str, Depends(public_base)]
SharesDep = Annotated[Shares, Depends(get_shares)]
Searcher = Annotated[Caller, Depends(caller(Right.READ, Transaction.QIDO))]
Retriever = Annotated[Caller, Depends(caller(Right.READ, Transaction.WADO))]
Downloader = Annotated[Caller, Depends(caller(Right.DOWNLOAD, Transaction.WADO))]
Sharer = Annotated[Caller, Depends(caller(Right.SHARE, Transaction.SHARE))]
MetadataReader = Annotated[Caller, Depends(caller(Right.READ, Transaction.METADATA))]
UriRetriever = Annotated[Caller, Depends(caller(Right.READ, Transaction.WADO_URI))]
Uploader = Annotated[Caller, Depends(caller(Right.STORE, Transaction.STOW))]
Importer = Annotated[Caller, Depends(caller(Right.STORE, Transaction.IMPORT))]
Sender = Annotated[Caller, Depends(caller(Right.DOWNLOAD, Transaction.SEND))]
JobReader = Annotated[Caller, Depends(member_caller(Transaction.JOB))]
Deleter = Annotated[Caller, Depends(caller(Right.DELETE, Transaction.DELETE))]
Auditor = Annotated[Caller, Depends(caller(Right.AUDIT, Transaction.AUDIT_QUERY))]
Administrator = Annotated[Caller, Depends(caller(Right.ADMINISTER, Transaction.ADMIN))]
