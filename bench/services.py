"""The archive under measurement: ``filmless serve`` in its own process (real uvicorn), on
the same throwaway PostgreSQL and SeaweedFS the test suite starts."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.dimse import CALLING_AE
from harness.servers import PostgresCluster, S3Server, start_postgres, start_seaweedfs

READY_TIMEOUT = 60.0


@dataclass(frozen=True)
class Backing:
    """What ``filmless serve`` runs on: PostgreSQL, and S3 unless objects go to files."""

    postgres: PostgresCluster
    s3: S3Server | None


@contextlib.asynccontextmanager
async def backing_services(store: str) -> AsyncIterator[Backing]:
    """PostgreSQL (durable, as in production) and, for ``store == "s3"``, SeaweedFS."""
    async with start_postgres(durable=True) as postgres:
        if store == "s3":
            with start_seaweedfs() as s3:
                yield Backing(postgres, s3)
        else:
            yield Backing(postgres, None)


#: The member hospital the benchmark's data belongs to, and the roles its token carries.
HOSPITAL = "BENCH"
ROLES = ("reader", "uploader")
TOKEN_LIFETIME = 24 * 3600


@dataclass(frozen=True)
class FilmlessServer:
    url: str
    pid: int
    #: Its worker processes: ``FILMLESS_WORKERS`` as given, or the server's own default.
    workers: int
    #: Credentials every request needs (a bearer token for :data:`HOSPITAL`).
    headers: dict[str, str]
    #: The DICOM listener's port; :data:`bench.dimse.CALLING_AE` may store there.
    dicom_port: int

    @property
    def dicomweb(self) -> str:
        return self.url + "/dicom-web"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve_filmless(
    database_url: str, s3: S3Server | None, workdir: Path, *, max_limit: int, workers: int | None = None
) -> Iterator[FilmlessServer]:
    """``filmless serve`` on ``database_url`` (migrated at start-up) and on a fresh bucket of
    ``s3`` (or on files under ``workdir``), stopped on exit; with ``workers`` worker
    processes, or None: as many as the server decides by default (``FILMLESS_WORKERS``
    unset)."""
    port, dicom_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    workdir.mkdir(parents=True, exist_ok=True)
    # The developer's own FILMLESS_* settings must not redirect the benchmark elsewhere.
    env = {key: value for key, value in os.environ.items() if not key.startswith("FILMLESS_")}
    env |= {
        "FILMLESS_DATABASE_URL": database_url,
        "FILMLESS_DATA_DIR": str(workdir / "data"),
        "FILMLESS_PORT": str(port),
        "FILMLESS_BASE_URL": url,
        "FILMLESS_SWEEP_INTERVAL": "0",
        "FILMLESS_DICOM_PORT": str(dicom_port),
        # "All studies" asks for every study in one page.
        "FILMLESS_QIDO_MAX_LIMIT": str(max_limit),
    }
    if s3 is not None:
        env |= {
            "FILMLESS_S3_ENDPOINT_URL": s3.endpoint_url,
            "FILMLESS_S3_BUCKET": "bench-" + secrets.token_hex(6),
            "FILMLESS_S3_ACCESS_KEY_ID": s3.access_key,
            "FILMLESS_S3_SECRET_ACCESS_KEY": s3.secret_key,
            "FILMLESS_S3_REGION": s3.region,
        }
    if workers is not None:
        env["FILMLESS_WORKERS"] = str(workers)
    workers = default_workers(env) if workers is None else workers
    log_path = workdir / "filmless.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(url, process, log_path, workers)
        try:
            yield FilmlessServer(url, process.pid, workers, _credentials(env), dicom_port)
        except Exception as error:
            # A 500 says little by itself; the server's log says why.
            error.add_note(f"filmless serve's log ends with:\n{_tail(log_path)}")
            raise
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def default_workers(env: dict[str, str]) -> int:
    """The worker processes ``filmless serve`` starts with the environment ``env``: asked of
    the archive's own settings (``Settings().workers``) in a process of that environment,
    so the benchmark follows however the server decides its default."""
    shown = subprocess.run(
        [sys.executable, "-c", "from app.settings import Settings; print(Settings().workers)"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if shown.returncode != 0:
        raise RuntimeError(f"cannot read Filmless's default worker count: {shown.stderr.strip()}")
    return int(shown.stdout.strip())


def _credentials(env: dict[str, str]) -> dict[str, str]:
    """Register the benchmark's hospital and its storage SCU, and get a token for it,
    through the archive's own command line (``filmless hospital add``, ``filmless ae add``,
    ``filmless token``), on the server's settings so the token is signed with the key the
    server verifies."""
    cli = [sys.executable, "-m", "app.cli"]
    added = subprocess.run(
        [*cli, "hospital", "add", HOSPITAL, "--name", "Benchmark"], env=env, capture_output=True, text=True
    )
    if added.returncode not in (0, 1):  # 1: the hospital exists already
        raise RuntimeError(f"filmless hospital add failed: {added.stderr.strip()}")
    # The SCU's own port is never called: it only stores.
    scu = [*cli, "ae", "add", CALLING_AE, "--host", "127.0.0.1", "--port", "104", "--hospital", HOSPITAL]
    registered = subprocess.run([*scu, "--allow", "store"], env=env, capture_output=True, text=True)
    if registered.returncode not in (0, 1):  # 1: the AE is known already
        raise RuntimeError(f"filmless ae add failed: {registered.stderr.strip()}")
    roles = [argument for role in ROLES for argument in ("--role", role)]
    token = subprocess.run(
        [*cli, "token", "--hospital", HOSPITAL, *roles, "--lifetime", str(TOKEN_LIFETIME)],
        env=env,
        capture_output=True,
        text=True,
    )
    if token.returncode != 0:
        raise RuntimeError(f"filmless token failed: {token.stderr.strip()}")
    return {"Authorization": f"Bearer {token.stdout.strip()}"}


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path, workers: int) -> None:
    """Until the server answers ready and every worker has started (one that is still
    starting would leave its share of the first figures to the others)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"filmless serve exited with {process.returncode}:\n{_tail(log)}")
        started = log.read_text(errors="replace").count("Application startup complete")
        with contextlib.suppress(httpx.HTTPError):
            if started >= workers and httpx.get(url + "/readyz", timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"filmless serve was not ready after {READY_TIMEOUT:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
