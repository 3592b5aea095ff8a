"""Real peers to send studies to: dcmtk's ``storescp`` (Debian's dcmtk), and a second
Filmless archive with its own database, served by uvicorn on loopback.

``storescp`` 3.6.7 cannot be told which address to listen on, so it is run in inetd mode
(``--inetd``): the test listens on 127.0.0.1 itself and hands each accepted connection to
a fresh ``storescp`` process as its standard input and output.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
import uvicorn

from app.main import create_app
from harness.servers import settings_for

STORESCP = shutil.which("storescp")
needs_storescp = pytest.mark.skipif(STORESCP is None, reason="dcmtk's storescp is not installed")


@dataclass
class StoreScp:
    ae_title: str
    port: int
    directory: Path
    #: Connections to drop before the first is served (a peer that is briefly down).
    drop: int = 0
    associations: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def received(self) -> list[Path]:
        return sorted(p for p in self.directory.iterdir() if p.is_file())


@contextlib.contextmanager
def storescp(directory: Path, ae_title: str = "STORESCP") -> Iterator[StoreScp]:
    assert STORESCP is not None
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0.2)
    peer = StoreScp(ae_title, listener.getsockname()[1], directory)

    def serve() -> None:
        while not peer._stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            with connection:
                if peer.drop > 0:
                    peer.drop -= 1
                    continue
                peer.associations += 1
                # Every transfer syntax it knows accepted, each data set written exactly as
                # received (+B: bit-preserving), one association per process.
                subprocess.run(
                    [STORESCP, "--inetd", "+xa", "+B", "-aet", ae_title, "-od", str(directory)],
                    stdin=connection.fileno(),
                    stdout=connection.fileno(),
                    stderr=subprocess.DEVNULL,
                    timeout=60,
                    check=False,
                )

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield peer
    finally:
        peer._stop.set()
        thread.join(timeout=10)
        listener.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class PeerArchive:
    url: str
    settings: object

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"


@contextlib.asynccontextmanager
async def peer_archive(postgres_url: str, data_dir: Path, signing_key: Path) -> AsyncIterator[PeerArchive]:
    """Another Filmless archive on a database of its own, served by uvicorn on loopback in
    this event loop. It signs tokens with the same local key as the archive under test."""
    name = "peer_" + data_dir.name.replace("-", "_").lower()[-40:]
    parts = urlsplit(postgres_url)
    peer_url = urlunsplit(parts._replace(path="/" + name))
    admin = await asyncpg.connect(postgres_url)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    await admin.execute(f'CREATE DATABASE "{name}"')
    port = _free_port()
    settings = settings_for(
        peer_url, None, None, data_dir, sweep_interval=0, auth_local_key_file=signing_key, database_pool_min=1
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        yield PeerArchive(f"http://127.0.0.1:{port}", settings)
    finally:
        server.should_exit = True
        await task
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
