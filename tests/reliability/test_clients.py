"""Slow and abandoned clients: a STOW body that trickles and stops, one cut off midway, and
a reader that stops reading a large retrieve. Each is ended within a bounded time, and
leaves no spool file, open descriptor, asyncio task or busy database connection behind
(counted before and after: the spool's listing, /proc/<pid>/fd, the event loop's tasks,
pg_stat_activity). The server is uvicorn on a thread of this process, as ``filmless serve``
runs it, so that its tasks can be listed."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.reliability.conftest import REQUEST_TIMEOUT, InProcessNode, wait_for
from tests.reliability.helpers import retrieved
from tests.samples import make_sample, multipart_body

STALL = 2.0


def _fds(node: InProcessNode) -> int:
    """The open files other than sockets of the process the server runs in (the test's
    own, which opens none between the counts). Its sockets to PostgreSQL and the object
    store belong to pools that may grow under load and keep what they opened; connections
    from clients are counted by :func:`_client_connections`."""
    fd_dir = Path(f"/proc/{node.pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            count += not os.readlink(fd).startswith("socket:")
    return count


def _client_connections(node: InProcessNode) -> int:
    """The server's TCP connections on its HTTP port (from /proc): those of clients."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == node.port and fields[3] != "0A":  # not LISTEN
                inodes.add(fields[9])
    count = 0
    for fd in Path(f"/proc/{node.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            count += os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes
    return count


def _busy_connections(database_url: str) -> int:
    async def read() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state <> 'idle'"
                )
            )
        finally:
            await conn.close()

    return asyncio.run(read())


def _spooled(spool: Path) -> list[Path]:
    return [p for p in spool.rglob("*") if p.is_file()]


def _post_head(node: InProcessNode, token: str, ctype: str, length: int) -> bytes:
    return (
        f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture
def node(in_process_node) -> InProcessNode:
    node: InProcessNode = in_process_node(client_stall_timeout=STALL)
    node.start()
    # Stored and retrieved once: what the server opens lazily (pool connections, a thread's
    # resources) is open before the counting starts.
    warm = make_sample("ct")
    body, ctype = multipart_body([warm.data])
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {node.token()}"}) as client:
        assert (
            client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
        assert retrieved(client, warm) == warm.data
    return node


def _settled(node: InProcessNode, clean_db: str, fds: int, tasks: list[str]) -> bool:
    now = node.tasks()
    print(
        f"spool {_spooled(node.data_dir / 'spool')}, fds {_fds(node)} (from {fds}), "
        f"client connections {_client_connections(node)}, "
        f"busy connections {_busy_connections(clean_db)}, tasks {len(now)} (from {len(tasks)}), "
        f"new tasks {_more_tasks(now, tasks)}"
    )
    return (
        not _spooled(node.data_dir / "spool")
        and _fds(node) <= fds
        and _client_connections(node) == 0
        and _busy_connections(clean_db) == 0
        and _more_tasks(now, tasks) == []
    )


def _more_tasks(now: list[str], before: list[str]) -> list[str]:
    """The tasks running now that were not running before (by coroutine, with repeats)."""
    left = list(before)
    extra = []
    for name in now:
        if name in left:
            left.remove(name)
        else:
            extra.append(name)
    return extra


def test_a_trickling_then_stalled_body_is_408_and_leaves_nothing(node: InProcessNode, clean_db):
    token = node.token()
    body, ctype = multipart_body(
        [make_sample("ct", Rows=512, Columns=512, PixelData=bytes(512 * 512 * 2)).data]
    )
    with httpx.Client(base_url=node.url, timeout=REQUEST_TIMEOUT) as warm:
        assert warm.get("/readyz").status_code == 200
    fds, tasks = _fds(node), node.tasks()
    with socket.create_connection(("127.0.0.1", node.port), timeout=REQUEST_TIMEOUT) as client:
        client.sendall(_post_head(node, token, ctype, len(body)))
        half = len(body) // 2
        for start in range(0, half, half // 5):
            client.sendall(body[start : min(start + half // 5, half)])
            time.sleep(0.3)  # a slow client: each piece well within the stall timeout
        wait_for(lambda: _spooled(node.data_dir / "spool"), 10, "the part to be spooled")
        stalled = time.monotonic()
        assert _more_tasks(node.tasks(), tasks), "the request's task is among those counted"
        answer = client.recv(65536)
        waited = time.monotonic() - stalled
    print(f"\nstalled body answered after {waited:.1f} s: {answer.splitlines()[0]!r}")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited < STALL + 5
    wait_for(lambda: _settled(node, clean_db, fds, tasks), 10, "the spool, fds and connections to settle")


def test_a_body_cut_off_midway_leaves_nothing(node: InProcessNode, clean_db):
    token = node.token()
    body, ctype = multipart_body(
        [make_sample("ct", Rows=512, Columns=512, PixelData=bytes(512 * 512 * 2)).data]
    )
    fds, tasks = _fds(node), node.tasks()
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", node.port), timeout=REQUEST_TIMEOUT) as client:
            client.sendall(_post_head(node, token, ctype, len(body)) + body[: len(body) // 2])
            wait_for(lambda: _spooled(node.data_dir / "spool"), 10, "the part to be spooled")
    wait_for(lambda: _settled(node, clean_db, fds, tasks), 10, "the spool, fds and connections to settle")
    with httpx.Client(base_url=node.url, timeout=REQUEST_TIMEOUT) as client:
        assert client.get("/readyz").status_code == 200


def test_a_reader_that_stops_reading_is_cut_off(node: InProcessNode, clean_db):
    headers = {"Authorization": f"Bearer {node.token()}"}
    # About 32 MiB: more than the socket buffers on both sides hold.
    big = make_sample("ct", Rows=4096, Columns=4096, PixelData=bytes(4096 * 4096 * 2))
    body, ctype = multipart_body([big.data])
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        assert (
            client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
    fds, tasks = _fds(node), node.tasks()
    url = f"/dicom-web/studies/{big.study}/series/{big.series}/instances/{big.instance}"
    with socket.create_connection(("127.0.0.1", node.port), timeout=REQUEST_TIMEOUT) as reader:
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        reader.sendall(
            f"GET {url} HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
            f"Authorization: {headers['Authorization']}\r\n"
            f'Accept: multipart/related; type="application/dicom"; transfer-syntax=*\r\n\r\n'.encode()
        )
        assert reader.recv(4096).startswith(b"HTTP/1.1 200")
        stopped = time.monotonic()
        during = _more_tasks(node.tasks(), tasks)
        print(f"\ntasks while the response is stalled: {during}")
        assert during, "the request's task is among those counted"
        # The reader stops reading but keeps its socket open: the server must let go of
        # what the response holds, the stored object first.
        wait_for(lambda: not _object_files(node), STALL + 10, "the server to close the stored object")
        waited = time.monotonic() - stopped
        print(f"stalled reader cut off after {waited:.1f} s")
        # The connection is aborted, with the reader still there and not reading.
        wait_for(lambda: not _client_connections(node), 5, "the server to abort the stalled connection")
        print(f"stalled connection aborted after {time.monotonic() - stopped:.1f} s")
        reader.settimeout(5)
        with pytest.raises(ConnectionResetError):  # what was left unsent is dropped: a reset
            while reader.recv(1 << 20):
                pass
        wait_for(lambda: _settled(node, clean_db, fds, tasks), 10, "the fds and connections to settle")


def _object_files(node: InProcessNode) -> list[str]:
    """The server's open files under its data directory (the filesystem store's objects)."""
    root = str(node.data_dir)
    found = []
    for fd in Path(f"/proc/{node.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(root) and not target.endswith(".log"):
                found.append(target)
    return found
