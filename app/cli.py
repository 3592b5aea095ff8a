"""The ``filmless`` command: ``serve``, ``migrate`` and ``openapi``."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

from app.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="filmless", description="The Filmless DICOMweb archive.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the archive over HTTP")
    serve.add_argument("--host", help="address to bind (default: FILMLESS_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to bind (default: FILMLESS_PORT or 8000)")
    commands.add_parser("migrate", help="apply pending database migrations and exit")
    openapi = commands.add_parser("openapi", help="write the OpenAPI document")
    openapi.add_argument("--output", type=Path, help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "migrate":
        return asyncio.run(_migrate(settings))
    return _openapi(args.output)


def _serve(settings: Settings, host: str | None, port: int | None) -> int:
    import uvicorn

    from app.main import create_app

    uvicorn.run(
        create_app(settings),
        host=host or settings.host,
        port=port or settings.port,
        # Access logs carry full URLs, and URLs may carry patient identifiers (QIDO
        # parameters); the archive logs its own events without them.
        access_log=False,
        proxy_headers=True,
    )
    return 0


async def _migrate(settings: Settings) -> int:
    from app.embedded import start_embedded_postgres
    from app.repository.database import create_pool
    from app.repository.migrations import migrate

    if settings.database_url is not None:
        dsn = settings.database_url.get_secret_value()
    else:
        dsn = await start_embedded_postgres(settings.data_dir)
    pool = await create_pool(dsn, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            applied = await migrate(conn)
    finally:
        await pool.close()
    print("applied: " + ", ".join(applied) if applied else "the database is up to date")
    return 0


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
