"""A live ``filmless serve`` with its DICOM listener, shared by the DIMSE tests, and the
real tools that talk to it: dcmtk's command-line SCUs and SCPs, and pynetdicom as an SCU.

The server runs once for the package (starting it is the slow part); each test stores its
own instances with fresh UIDs, so tests do not see each other's data except where a test
says so.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
import pytest_asyncio

from harness.servers import settings_for
from tests.fixtures import TABLES, _free_port, _wait_ready, token

AE_TITLE = "FILMLESS"
#: Known AEs the tests use: (title, hospital, services, destination).
MODALITY, NOSTORE, OTHER_MODALITY, DESTINATION, OTHER_DESTINATION = (
    "CT_A",
    "VIEWER_A",
    "CT_B",
    "STORESCP",
    "SCP_B",
)
OTHER = "OTHER"
MAX_ASSOCIATIONS = 4
TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp", "dcmdump")


def require_tools() -> None:
    """dcmtk must be there; outside CI its absence skips, in CI it fails."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"dcmtk tools missing in CI: {missing}")
        pytest.skip(f"dcmtk tools missing: {missing} (apt-get install dcmtk)")


@dataclass(frozen=True)
class DicomServer:
    url: str
    host: str
    port: int
    token: str
    data_dir: Path
    log: Path
    destination_port: int
    other_destination_port: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def env(self) -> dict[str, str]:
        return {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Sockets a DIMSE test leaves unclosed are reported by the test that left them."""
    yield
    gc.collect()


@pytest_asyncio.fixture(scope="package", loop_scope="session")
async def emptied_db(migrated_db: str) -> str:
    conn = await asyncpg.connect(migrated_db)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY")
    finally:
        await conn.close()
    return migrated_db


@pytest.fixture(scope="package")
def dicom_server(
    emptied_db: str, tmp_path_factory: pytest.TempPathFactory, signing_key: Path
) -> Iterator[DicomServer]:
    """``filmless serve`` with HTTP and DICOM on free loopback ports, its LOCAL hospital and
    another, and the known AEs of both, added through the admin API."""
    require_tools()
    root = tmp_path_factory.mktemp("dimse")
    http_port, dicom_port = _free_port(), _free_port()
    destination_port, other_destination_port = _free_port(), _free_port()
    data_dir = root / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    env |= {
        "FILMLESS_DATABASE_URL": emptied_db,
        "FILMLESS_DATA_DIR": str(data_dir),
        "FILMLESS_SWEEP_INTERVAL": "0",
        "FILMLESS_PORT": str(http_port),
        "FILMLESS_BASE_URL": f"http://127.0.0.1:{http_port}",
        "FILMLESS_AUTH_LOCAL_KEY_FILE": str(signing_key),
        "FILMLESS_DICOM_PORT": str(dicom_port),
        "FILMLESS_DICOM_AE_TITLE": AE_TITLE,
        "FILMLESS_DICOM_MAX_ASSOCIATIONS": str(MAX_ASSOCIATIONS),
        "FILMLESS_DICOM_ACSE_TIMEOUT": "5",
        "FILMLESS_DICOM_NETWORK_TIMEOUT": "10",
        "FILMLESS_WORKERS": "1",
    }
    log_path = root / "server.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{http_port}"
    try:
        _wait_ready(url, process, log_path)
        settings = settings_for(emptied_db, None, None, data_dir, auth_local_key_file=signing_key)
        admin = token(settings, "LOCAL")
        headers = {"Authorization": f"Bearer {admin}"}
        with httpx.Client(base_url=url, headers=headers) as client:
            assert (
                client.post("/api/hospitals", json={"code": OTHER, "name": "Other hospital"}).status_code
                == 201
            )
            every = {"may_store": True, "may_find": True, "may_move": True, "may_get": True}
            for body in (
                {"ae_title": MODALITY, "hospital": "LOCAL", "port": 104, **every},
                {"ae_title": NOSTORE, "hospital": "LOCAL", "port": 104, "may_find": True},
                {"ae_title": OTHER_MODALITY, "hospital": OTHER, "port": 104, **every},
                {"ae_title": DESTINATION, "hospital": "LOCAL", "port": destination_port, "destination": True},
                {"ae_title": OTHER_DESTINATION, "hospital": OTHER, "port": other_destination_port,
                 "destination": True},
            ):  # fmt: skip
                response = client.post("/api/aes", json={"host": "127.0.0.1", **body})
                assert response.status_code == 201, response.text
        yield DicomServer(url, "127.0.0.1", dicom_port, admin, data_dir, log_path, destination_port,
                          other_destination_port)  # fmt: skip
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
        log.close()


async def audit_rows(database_url: str, subject: str) -> list[asyncpg.Record]:
    """The audit events of a caller, oldest first, read from the database itself."""
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch("SELECT * FROM audit_events WHERE subject = $1 ORDER BY pk", subject))
    finally:
        await conn.close()


def dataset_bytes(part10: bytes) -> bytes:
    """The data set of a Part 10 file: what follows its File Meta group (PS3.10 §7.1)."""
    assert part10[128:132] == b"DICM" and part10[132:136] == b"\x02\x00\x00\x00"
    return part10[144 + int.from_bytes(part10[140:144], "little") :]


def run(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False)


@contextlib.contextmanager
def storescp(port: int, title: str, directory: Path) -> Iterator[subprocess.Popen[bytes]]:
    """dcmtk's storescp accepting every transfer syntax it knows, writing to ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        ["storescp", "-aet", title, "+xa", "-od", str(directory), "--bit-preserving", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(port)
        yield process
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        if process.poll() is None:
            process.kill()


def _wait_port(port: int) -> None:
    import socket
    import time

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")
