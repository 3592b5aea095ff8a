"""The application factory: settings in, a FastAPI app out. Nothing happens at import."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import asyncpg
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app import __version__
from app.dicom.leniency import read_leniently
from app.dimse.listener import listen
from app.errors import FilmlessError, StorageUnavailable
from app.http.console import SignInFirst, to_sign_in
from app.http.errors import install_error_handlers
from app.http.middleware import CatchUnexpected, RequestLog, StallTimeout
from app.http.share_gateway import ShareGateway
from app.http.state import STATE_KEY, Running
from app.repository import hospitals
from app.repository.database import create_pool
from app.repository.embedded import open_embedded_postgres
from app.repository.invalidation import Invalidations
from app.repository.migrations import migrate
from app.routers import (
    admin,
    console,
    console_admin,
    console_jobs,
    console_mail,
    console_portal,
    console_regional,
    console_requests,
    console_studies,
    delete,
    health,
    imports,
    jobs,
    metrics,
    openapi,
    pages,
    portal,
    portal_requests,
    portal_shares,
    qido,
    rendered,
    send,
    share_pages,
    shares_api,
    stow,
    wado,
    wado_uri,
)
from app.security.authenticator import Authenticator
from app.security.keys import JwksKeys, LocalIssuer, key_source
from app.security.share_secrets import Hasher
from app.services.archive import Archive
from app.services.audit_writer import AuditSink, AuditWriter
from app.services.budget import MemoryBudget
from app.services.jobs import Jobs
from app.services.lru import LruBytes
from app.services.shares import Shares
from app.services.signin import SignIn
from app.services.sweep import sweep_forever
from app.settings import Settings
from app.storage.factory import open_store

log = logging.getLogger(__name__)

DESCRIPTION = """Filmless is a DICOMweb (PS3.18) imaging archive: STOW-RS, QIDO-RS and WADO-RS
under `/dicom-web`, over PostgreSQL and object storage."""


def create_app_from_environment() -> FastAPI:
    """The factory each of several worker processes calls (``uvicorn --factory``): the
    settings come from the same environment the parent read them from."""
    read_leniently()
    return create_app(Settings())


def create_app(settings: Settings) -> FastAPI:
    """The application. The process is expected to read DICOM leniently already
    (:func:`app.dicom.leniency.read_leniently`, called at process start)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Running]]:
        async with contextlib.AsyncExitStack() as stack:
            archive = await open_archive(settings, stack)
            authenticator = await open_authenticator(archive, stack)
            shares = Shares(archive, Hasher.from_file(settings.share_key_path))
            stack.push_async_callback(shares.notices.drain)
            background = Jobs(archive)
            signin = SignIn(archive, authenticator)
            stack.push_async_callback(signin.close)
            state = Running(
                archive=archive, authenticator=authenticator, shares=shares, jobs=background, signin=signin
            )
            # Also on the app, for what runs outside a request (tests, the CLI's tools).
            app.state.running = state
            await background.open()
            # The DICOM listener (PS3.8): its handlers run on this event loop, so it starts
            # here and stops before the pool closes.
            await listen(archive, stack)
            sweeper = None
            if settings.sweep_interval > 0:
                sweeper = asyncio.create_task(sweep_forever(archive))
            try:
                yield {STATE_KEY: state}
            finally:
                # Running jobs are cancelled (and undo what they had in flight) while the
                # database and the object store are still open.
                await background.close()
                if sweeper is not None:
                    sweeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await sweeper

    app = FastAPI(
        title="Filmless",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    install_error_handlers(app)
    openapi.install(app)
    app.add_middleware(CatchUnexpected)
    app.add_middleware(StallTimeout, timeout=settings.client_stall_timeout)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
            # Viewers send Accept (with multipart/related parameters) and a bearer token.
            allow_headers=["Accept", "Authorization", "Content-Type", "If-None-Match", "Range"],
            # What viewers read from responses (PS3.18 §8.10 for Warning).
            expose_headers=[
                "Content-Type",
                "Content-Length",
                "Content-Range",
                "ETag",
                "Warning",
                "Location",
                "X-Request-ID",
            ],
            max_age=settings.cors_max_age,
        )
    for module in (
        health,
        metrics,
        stow,
        qido,
        wado,
        rendered,
        wado_uri,
        delete,
        admin,
        shares_api,
        share_pages,
        pages,
        imports,
        jobs,
        send,
        console,
        console_studies,
        console_mail,
        console_portal,
        console_regional,
        console_requests,
        console_admin,
        console_jobs,
        portal,
        portal_requests,
        portal_shares,
    ):
        app.include_router(module.router)
    app.add_exception_handler(SignInFirst, to_sign_in)
    # Share paths are rewritten before routing sees them; the request log is outermost, so
    # that its id is on every line the request causes and its status is the one sent.
    app.add_middleware(ShareGateway)
    app.add_middleware(RequestLog)
    return app


async def open_archive(settings: Settings, stack: contextlib.AsyncExitStack) -> Archive:
    """Connect to (or start) the database, migrate it, open the object store."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _clean_spool(settings)
    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
    else:
        dsn, release = await open_embedded_postgres(settings.data_dir)
        # Pushed before the pool, so it runs after the pool is closed.
        stack.push_async_callback(asyncio.to_thread, release)
    pool = await create_pool(dsn, min_size=settings.database_pool_min, max_size=settings.database_pool_max)
    stack.push_async_callback(pool.close)
    # Pushed after the pool, so every queued read event is written before it closes (and
    # after what may still record events: jobs, the DICOM listener, notices).
    audit = AuditWriter(pool, AuditSink(settings), settings.audit_queue)
    audit.start()
    stack.push_async_callback(audit.close)
    if settings.auto_migrate:
        async with pool.acquire() as conn:
            await migrate(conn)
    # Listening before serving: a change committed on another node after this point reaches
    # this process's caches (see app.repository.invalidation).
    invalidations = Invalidations(dsn)
    try:
        await invalidations.start()
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise StorageUnavailable(f"cannot listen on the database: {type(exc).__name__}") from exc
    stack.push_async_callback(invalidations.close)
    store = await open_store(settings, stack)
    renderer = ThreadPoolExecutor(max_workers=settings.render_workers, thread_name_prefix="render")
    stack.callback(renderer.shutdown, wait=False, cancel_futures=True)
    thumbnails = LruBytes(settings.thumbnail_cache_bytes)
    budget = MemoryBudget(settings.render_memory, settings.render_wait)
    archive = Archive(
        settings=settings,
        pool=pool,
        store=store,
        renderer=renderer,
        thumbnails=thumbnails,
        render_budget=budget,
        invalidations=invalidations,
        audit=audit,
    )
    # Pushed after the store and the pool, so it runs before they close.
    stack.push_async_callback(archive.followups.close)
    return archive


async def open_authenticator(archive: Archive, stack: contextlib.AsyncExitStack) -> Authenticator:
    settings = archive.settings
    keys = key_source(settings)
    if isinstance(keys, JwksKeys):
        stack.push_async_callback(keys.close)
    if isinstance(keys, LocalIssuer):
        # Development and the embedded default: the archive is its own token issuer.
        await hospitals.add_first(archive.pool, "LOCAL", "Local hospital")
        log.info(
            "tokens are signed locally (%s); get one with: filmless token --hospital LOCAL "
            "--role reader --role uploader --role admin",
            keys.path,
        )
    return Authenticator(settings, keys, archive.pool, archive.invalidations)


def _clean_spool(settings: Settings) -> None:
    # Spooled request parts of a process that died; a live request's files are younger.
    spool = settings.spool_path
    spool.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - settings.pending_timeout
    for path in spool.iterdir():
        with contextlib.suppress(OSError):
            if path.is_file() and path.stat().st_mtime < cutoff:
                path.unlink()


__all__ = ["FilmlessError", "create_app"]
