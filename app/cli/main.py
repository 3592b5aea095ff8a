"""The ``filmless`` command: serve, migrate, token, hospital, ae, import and openapi."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from app.cli import import_command
from app.dicom.leniency import read_leniently
from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    read_leniently()
    parser = argparse.ArgumentParser(prog="filmless", description="The Filmless DICOMweb archive.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the archive over HTTP and DICOM")
    serve.add_argument("--host", help="address to bind (default: FILMLESS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: FILMLESS_PORT or 8000)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    token = commands.add_parser("token", help="print a token signed with the local key (development)")
    token.add_argument("--hospital", required=True, help="member hospital code, e.g. LOCAL")
    token.add_argument("--role", action="append", default=[], help="one role; repeat for more")
    token.add_argument("--subject", default="dev", help="the user the token names (default: dev)")
    token.add_argument("--lifetime", type=int, default=8 * 3600, help="seconds (default: 8 hours)")
    hospital = commands.add_parser("hospital", help="manage member hospitals")
    hospital_commands = hospital.add_subparsers(dest="action", required=True)
    add = hospital_commands.add_parser("add", help="add a member hospital")
    add.add_argument("code", help="the code tokens name it by (letters, digits, . _ -)")
    add.add_argument("--name", required=True, help="its name")
    hospital_commands.add_parser("list", help="list member hospitals")
    remove = hospital_commands.add_parser("remove", help="remove a member hospital (its tokens are refused)")
    remove.add_argument("code", help="its code")
    import_command.add_parser(commands)
    ae = commands.add_parser("ae", help="manage known DICOM application entities (modalities, PACS)")
    ae_commands = ae.add_subparsers(dest="action", required=True)
    ae_add = ae_commands.add_parser("add", help="add a known AE")
    ae_add.add_argument("title", help="its AE title (the Calling AE Title it sends)")
    ae_add.add_argument("--host", required=True, help="where it listens (C-MOVE destination, reports)")
    ae_add.add_argument("--port", type=int, required=True, help="its DICOM port")
    ae_add.add_argument("--hospital", required=True, help="code of the member hospital it belongs to")
    ae_add.add_argument(
        "--allow",
        action="append",
        choices=["echo", "store", "find", "move", "get"],
        default=[],
        help="a service it may use; repeat for more (default: echo)",
    )
    ae_add.add_argument("--destination", action="store_true", help="the archive may send to it (C-MOVE)")
    ae_add.add_argument("--description", default="", help="free text")
    ae_commands.add_parser("list", help="list known AEs")
    ae_remove = ae_commands.add_parser("remove", help="remove a known AE")
    ae_remove.add_argument("title")
    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings)
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    if args.command == "token":
        return _token(settings, args.hospital, args.role, args.subject, args.lifetime)
    if args.command == "hospital":
        return asyncio.run(_hospital(settings, args))
    if args.command == "import":
        return import_command.run(settings, args)
    if args.command == "ae":
        return asyncio.run(_ae(settings, args))
    return _openapi(args.output)


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from app.http import connections
    from app.main import create_app

    if settings.workers > 1:
        # Each worker writes its metric samples here; a scrape of any sums them all.
        _metrics_dir(settings)
    # Several workers are separate processes that each build the app from the import
    # string; the factory then reads the same settings from the same environment.
    app: Any = create_app(settings) if settings.workers == 1 else "app.main:create_app_from_environment"
    uvicorn.run(
        app,
        factory=settings.workers > 1,
        workers=settings.workers,
        host=host or settings.host,
        port=port or settings.port,
        # Access logs carry full URLs, and URLs may carry patient identifiers (QIDO
        # parameters); the archive logs its own events without them.
        access_log=False,
        # Forwarded headers only from the configured proxies: uvicorn's default trusts
        # 127.0.0.1, which would let any local client choose the address it is audited
        # and locked out by.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
        log_config=_log_config(settings),
        # uvicorn's HTTP protocol, which lets a request abort its own connection (a
        # response nobody reads; see app.http.connections).
        http=connections.HttpProtocol,
    )
    return 0


def _metrics_dir(settings: Settings) -> None:
    import os
    import shutil

    directory = settings.data_dir / "metrics"
    shutil.rmtree(directory, ignore_errors=True)  # a previous run's samples
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)


def _log_config(settings: Settings) -> dict[str, Any]:
    """The whole process's logging: the archive's, uvicorn's and the embedded PostgreSQL's
    lines in one form (JSON by default) at ``FILMLESS_LOG_LEVEL``. Worker processes are
    spawned afresh and configure logging from this alone."""
    formatter = {
        "json": "app.observability.logs.JsonFormatter",
        "text": "app.observability.logs.TextFormatter",
    }[settings.log_format]
    quiet = "DEBUG" if settings.log_level == "DEBUG" else "WARNING"
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"archive": {"()": formatter}},
        "handlers": {
            "archive": {
                "class": "logging.StreamHandler",
                "formatter": "archive",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["archive"], "level": settings.log_level},
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            # The archive writes its own access line (app.http.middleware.RequestLog), without queries.
            "uvicorn.access": {"handlers": [], "propagate": False},
            # The embedded server's start-up chatter, and pydicom's remarks on each odd
            # value a modality sends, are for debugging.
            "pgserver": {"level": quiet},
            "pydicom": {"level": quiet},
            # Python warnings (a library's remark on its environment) go through logging
            # too, so that every line stays JSON; they matter only when debugging.
            "py.warnings": {"level": "DEBUG" if settings.log_level == "DEBUG" else "ERROR"},
        },
    }


def configure_logging(settings: Settings) -> None:
    import logging.config

    logging.config.dictConfig(_log_config(settings))
    logging.captureWarnings(True)


async def _database(settings: Settings) -> Any:
    from app.repository.database import create_pool
    from app.repository.embedded import start_embedded_postgres
    from app.repository.migrations import migrate

    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
    else:
        dsn = await start_embedded_postgres(settings.data_dir)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    async with pool.acquire() as conn:
        applied = await migrate(conn)
    return pool, applied


async def _migrate(settings: Settings) -> int:
    pool, applied = await _database(settings)
    await pool.close()
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    return 0


def _token(settings: Settings, hospital: str, roles: list[str], subject: str, lifetime: int) -> int:
    from app.security.authenticator import issue_local_token

    if settings.auth_keys != "local":
        print("tokens come from the identity provider (FILMLESS_AUTH_KEYS is not 'local')", file=sys.stderr)
        return 2
    from app.security.keys import NoLocalKey

    try:
        print(issue_local_token(settings, subject, hospital, roles or ["reader"], lifetime))
    except NoLocalKey as missing:
        print(
            f"no token signing key at {missing}: the server creates it when it first starts, "
            "so these are not the running server's settings. Run this command with the "
            "server's FILMLESS_DATA_DIR (or FILMLESS_AUTH_LOCAL_KEY_FILE), e.g. "
            "FILMLESS_DATA_DIR=/path/to/data filmless token ...",
            file=sys.stderr,
        )
        return 2
    return 0


async def _hospital(settings: Settings, args: argparse.Namespace) -> int:
    from app.errors import BadRequest
    from app.repository import hospitals

    pool, _ = await _database(settings)
    try:
        if args.action == "add":
            try:
                added = await hospitals.add(pool, args.code, args.name)
            except BadRequest as refused:
                print(f"invalid {refused.message}", file=sys.stderr)
                return 2
            print(f"added {args.code}" if added else f"{args.code} exists already")
            return 0 if added else 1
        if args.action == "remove":
            # Every running server forgets it at once (the removal notifies them).
            removed = await hospitals.remove(pool, args.code)
            print(f"removed {args.code}" if removed else f"no member hospital {args.code}")
            return 0 if removed else 1
        for h in await hospitals.every(pool):
            print(f"{h.code}\t{h.name}")
        return 0
    finally:
        await pool.close()


async def _ae(settings: Settings, args: argparse.Namespace) -> int:
    from app.errors import BadRequest
    from app.repository import aes

    pool, _ = await _database(settings)
    try:
        if args.action == "add":
            allowed = set(args.allow or ["echo"])
            new = aes.NewApplicationEntity(
                args.title, args.host, args.port, args.hospital,
                may_echo="echo" in allowed, may_store="store" in allowed, may_find="find" in allowed,
                may_move="move" in allowed, may_get="get" in allowed, destination=args.destination,
                description=args.description,
            )  # fmt: skip
            try:
                added = await aes.add(pool, new)
            except BadRequest as exc:
                print(exc.message, file=sys.stderr)
                return 2
            if added is None:
                known = await aes.by_title(pool, args.title)
                print(f"{args.title} exists already" if known else f"no member hospital {args.hospital}",
                      file=sys.stderr)  # fmt: skip
                return 1
            print(f"added {added.ae_title} ({added.hospital})")
            return 0
        if args.action == "remove":
            removed = await aes.remove(pool, args.title)
            print(
                f"removed {args.title}" if removed else f"no AE {args.title}",
                file=sys.stdout if removed else sys.stderr,
            )
            return 0 if removed else 1
        for ae in await aes.every(pool):
            services = [s for s in ("echo", "store", "find", "move", "get") if getattr(ae, f"may_{s}")]
            flags = ",".join(services + (["destination"] if ae.destination else [])) or "-"
            print(f"{ae.ae_title}\t{ae.host}:{ae.port}\t{ae.hospital}\t{flags}\t{ae.description}")
        return 0
    finally:
        await pool.close()


def openapi_document() -> dict[str, Any]:
    from app.main import create_app

    return create_app(Settings()).openapi()


def render_openapi() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _openapi(output: Path | None) -> int:
    text = render_openapi()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
