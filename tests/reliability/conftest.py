"""Fault tests: real server processes killed, their database restarted, their object store
stopped, their disk filled. ``make test-reliability`` runs them; ``make test`` does not
collect them (they take minutes, and some mount a tmpfs, which needs root).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import uvicorn

from app.http import connections
from app.main import create_app
from app.settings import Settings
from harness.servers import _WEED_PORT_FLAGS, S3Server, _s3_answers, _start_weed, _stop_weed, settings_for
from tests.fixtures import _free_port, token

if os.environ.get("FILMLESS_RELIABILITY") != "1":
    collect_ignore_glob = ["test_*.py"]

#: No request of these tests may take longer than this, whatever fails underneath.
REQUEST_TIMEOUT = 30.0


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reliability: a fault injected into real processes (make test-reliability)"
    )


#: The archive runs in other processes here, so a ResourceWarning raised in this one comes
#: from the tests' own clients: connections and associations to a server the test killed,
#: stalled or cut off on purpose, which the garbage collector may reap during a later test.
#: What the server leaks is counted from outside (its fds, spool and database sessions).
CLIENT_SIDE_WARNINGS = (
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/reliability/" in str(item.path):
            item.add_marker(pytest.mark.reliability)
            for mark in CLIENT_SIDE_WARNINGS:
                item.add_marker(mark)


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns something true, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


@dataclass
class Node:
    """``filmless serve`` in its own process, which a test may kill and start again on the
    same port, database and store."""

    env: dict[str, str]
    workdir: Path
    port: int = field(default_factory=_free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return Path(self.env["FILMLESS_DATA_DIR"])

    @property
    def log(self) -> Path:
        return self.workdir / f"server-{self.starts}.log"

    def start(self, wait: bool = True) -> None:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
        env |= {"FILMLESS_PORT": str(self.port), "FILMLESS_BASE_URL": self.url, **self.env}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "app.cli", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited:\n{self.log.read_text(errors='replace')}")
            with contextlib.suppress(httpx.HTTPError):
                return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
            return False

        wait_for(ready, timeout, "the server to become ready")

    def kill(self) -> None:
        """SIGKILL the whole process group: uvicorn and its workers die with no clean-up."""
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.kill()

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def pids(self) -> list[int]:
        """The server process and its children (the workers)."""
        assert self.process is not None
        found = [self.process.pid]
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) in found:
                        found.append(int(entry.name))
        return found


@dataclass
class InProcessNode:
    """The archive under uvicorn (with ``filmless serve``'s HTTP protocol and event loop)
    on a thread of the test's own process, so that a test can list the server's asyncio
    tasks, which no outside view of a process shows. Its files and sockets are the test
    process's: count those of the server (its data directory, its port), not all."""

    settings: Settings
    port: int = field(default_factory=_free_port)
    server: uvicorn.Server | None = None
    loop: asyncio.AbstractEventLoop | None = None
    thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.settings.data_dir

    @property
    def pid(self) -> int:
        return os.getpid()

    def token(self) -> str:
        return token(self.settings, "LOCAL")

    def start(self) -> None:
        config = uvicorn.Config(
            create_app(self.settings), host="127.0.0.1", port=self.port, http=connections.HttpProtocol,
            ws="none", log_config=None, access_log=False,
        )  # fmt: skip
        factory = config.get_loop_factory()
        self.loop = factory() if factory is not None else asyncio.new_event_loop()
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), name="server", daemon=True
        )
        self.thread.start()
        server, thread = self.server, self.thread
        wait_for(lambda: server.started or not thread.is_alive(), 60, "the server to start")
        assert server.started, "the server did not start (see the log above)"

    def tasks(self) -> list[str]:
        """The server's asyncio tasks, each named by the coroutine it runs."""
        assert self.loop is not None

        async def listing() -> list[str]:
            here = asyncio.current_task()
            return sorted(_task_name(t) for t in asyncio.all_tasks() if t is not here)

        return asyncio.run_coroutine_threadsafe(listing(), self.loop).result(10)

    def stop(self) -> None:
        if self.server is None or self.thread is None or self.loop is None:
            return
        self.server.should_exit = True
        self.thread.join(30)
        assert not self.thread.is_alive(), "the server did not stop"
        self.loop.close()
        self.server = None


def _task_name(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    return str(getattr(coro, "__qualname__", None) or task.get_name())


@pytest.fixture
def in_process_node(clean_db: str, tmp_path: Path, signing_key: Path) -> Iterator:  # type: ignore[type-arg]
    made: list[InProcessNode] = []

    def make(**overrides: object) -> InProcessNode:
        settings = settings_for(
            clean_db, None, None, tmp_path / "data", sweep_interval=0, auth_local_key_file=signing_key,
            dicom_port=0, **overrides,
        )  # fmt: skip
        node = InProcessNode(settings)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


def node_env(
    database_url: str, data_dir: Path, key: Path, s3: S3Server | None = None, **extra: str
) -> dict[str, str]:
    env = {
        "FILMLESS_DATABASE_URL": database_url,
        "FILMLESS_DATA_DIR": str(data_dir),
        "FILMLESS_SWEEP_INTERVAL": "0",
        "FILMLESS_AUTH_LOCAL_KEY_FILE": str(key),
        "FILMLESS_DICOM_PORT": "0",
        "FILMLESS_WORKERS": "1",
    }
    if s3 is not None:
        env |= {
            "FILMLESS_S3_ENDPOINT_URL": s3.endpoint_url,
            "FILMLESS_S3_BUCKET": "rel-" + os.urandom(6).hex(),
            "FILMLESS_S3_ACCESS_KEY_ID": s3.access_key,
            "FILMLESS_S3_SECRET_ACCESS_KEY": s3.secret_key,
            "FILMLESS_S3_REGION": s3.region,
        }
    return env | extra


def node_token(node: Node) -> str:
    settings = settings_for(
        node.env["FILMLESS_DATABASE_URL"],
        None,
        None,
        node.data_dir,
        auth_local_key_file=Path(node.env["FILMLESS_AUTH_LOCAL_KEY_FILE"]),
    )
    return token(settings, "LOCAL")


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator:  # type: ignore[type-arg]
    made: list[Node] = []

    def make(env: dict[str, str]) -> Node:
        node = Node(env, tmp_path)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop()


# --- A PostgreSQL this test may restart ---------------------------------------------------

PG_BIN = Path("/usr/lib/postgresql/15/bin")


@dataclass
class SystemPostgres:
    """Debian's PostgreSQL 15 as the unprivileged ``postgres`` user, in a throwaway data
    directory, with ``pg_ctl`` to stop, start and restart it as an operator would."""

    directory: Path

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.directory}"

    def _pg_ctl(self, *args: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(self.directory / "data"),
             "-l", str(self.directory / "log"), "-w", "-t", "30", *args],
            check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-k {self.directory} -c listen_addresses='' -c fsync=off -c synchronous_commit=off"
        self._pg_ctl("-o", options, "start")

    def stop(self) -> None:
        self._pg_ctl("-m", "fast", "stop")

    def restart(self) -> None:
        self._pg_ctl("-m", "fast", "restart")


@pytest.fixture
def system_postgres() -> Iterator[SystemPostgres]:
    if not (PG_BIN / "initdb").exists():
        pytest.fail("the database restart test needs Debian's postgresql (apt-get install postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="filmless-rel-pg-", dir="/tmp"))
    directory.chmod(0o755)
    shutil.chown(directory, "postgres", "postgres")
    subprocess.run(
        ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-A", "trust", "-U", "postgres",
         "-D", str(directory / "data")],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    cluster = SystemPostgres(directory)
    cluster.start()
    try:
        yield cluster
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(
                ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(directory / "data"),
                 "-m", "immediate", "stop"],
                check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        shutil.rmtree(directory, ignore_errors=True)


# --- A SeaweedFS this test may stop and start again ---------------------------------------


@dataclass
class RestartableS3:
    """A private SeaweedFS, killed and started again on the same ports and data."""

    workdir: Path
    access_key: str
    secret_key: str
    ports: list[int] = field(default_factory=list)
    process: subprocess.Popen[bytes] | None = None

    @property
    def server(self) -> S3Server:
        return S3Server(f"http://127.0.0.1:{self.s3_port}", self.access_key, self.secret_key)

    @property
    def s3_port(self) -> int:
        return self.ports[_WEED_PORT_FLAGS.index("s3.port")]

    def start(self) -> None:
        self.process, _, self.ports = _start_weed(
            self.workdir, self.access_key, self.secret_key, self.ports or None
        )
        process = self.process
        wait_for(
            lambda: (process.poll() is None and _s3_answers(self.s3_port)) or _exited(process),
            60,
            "SeaweedFS to answer",
        )

    def stop(self) -> None:
        if self.process is not None:
            _stop_weed(self.process, self.ports)
            self.process = None


def _exited(process: subprocess.Popen[bytes]) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"SeaweedFS exited with {process.returncode}")
    return False


@pytest.fixture
def restartable_s3() -> Iterator[RestartableS3]:
    workdir = Path(tempfile.mkdtemp(prefix="filmless-rel-s3-"))
    s3 = RestartableS3(workdir, os.urandom(10).hex(), os.urandom(20).hex())
    try:
        s3.start()
        yield s3
    finally:
        s3.stop()
        shutil.rmtree(workdir, ignore_errors=True)


# --- A small disk -------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs: a filesystem that really runs out of space (ENOSPC)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if result.returncode != 0:
        pytest.fail(f"cannot mount a small tmpfs (needs root): {result.stderr.decode(errors='replace')}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
