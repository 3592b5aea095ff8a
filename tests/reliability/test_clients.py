"""Slow and abandoned clients: a STOW body that trickles and stops, one cut off midway, and
a reader that stops reading a large retrieve. Each is ended within a bounded time, and
leaves no spool file, open descriptor or busy database connection behind (counted before
and after: the spool's listing, /proc/<pid>/fd, pg_stat_activity)."""

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

from tests.reliability.conftest import REQUEST_TIMEOUT, Node, node_env, node_token, wait_for
from tests.reliability.helpers import retrieved
from tests.samples import make_sample, multipart_body

STALL = 2.0


def _fds(node: Node) -> int:
    """The server's open files other than sockets. Its sockets to PostgreSQL and the
    object store belong to pools that may grow under load and keep what they opened;
    connections from clients are counted by :func:`_client_connections`."""
    assert node.process is not None
    fd_dir = Path(f"/proc/{node.process.pid}/fd")
    count = 0
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            count += not os.readlink(fd).startswith("socket:")
    return count


def _client_connections(node: Node) -> int:
    """The server's TCP connections on its HTTP port (from /proc): those of clients."""
    assert node.process is not None
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == node.port and fields[3] != "0A":  # not LISTEN
                inodes.add(fields[9])
    count = 0
    for fd in Path(f"/proc/{node.process.pid}/fd").iterdir():
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


def _post_head(node: Node, token: str, ctype: str, length: int) -> bytes:
    return (
        f"POST /dicom-web/studies HTTP/1.1\r\nHost: 127.0.0.1:{node.port}\r\n"
        f"Authorization: Bearer {token}\r\nContent-Type: {ctype}\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


@pytest.fixture
def node(make_node, clean_db, tmp_path, signing_key) -> Node:
    node = make_node(
        node_env(clean_db, tmp_path / "data", signing_key, FILMLESS_CLIENT_STALL_TIMEOUT=str(STALL))
    )
    node.start()
    # Stored and retrieved once: what the server opens lazily (pool connections, a thread's
    # resources) is open before the counting starts.
    warm = make_sample("ct")
    body, ctype = multipart_body([warm.data])
    with httpx.Client(base_url=node.url, headers={"Authorization": f"Bearer {node_token(node)}"}) as client:
        assert (
            client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
        assert retrieved(client, warm) == warm.data
    return node


def _settled(node: Node, clean_db: str, fds: int) -> bool:
    assert node.process is not None
    fd_dir = Path(f"/proc/{node.process.pid}/fd")
    print(
        f"spool {_spooled(node.data_dir / 'spool')}, fds {_fds(node)} (from {fds}), "
        f"client connections {_client_connections(node)}, "
        f"busy connections {_busy_connections(clean_db)}: "
        f"{sorted(os.readlink(fd_dir / f) for f in os.listdir(fd_dir))}"
    )
    return (
        not _spooled(node.data_dir / "spool")
        and _fds(node) <= fds
        and _client_connections(node) == 0
        and _busy_connections(clean_db) == 0
    )


def test_a_trickling_then_stalled_body_is_408_and_leaves_nothing(node: Node, clean_db):
    token = node_token(node)
    body, ctype = multipart_body(
        [make_sample("ct", Rows=512, Columns=512, PixelData=bytes(512 * 512 * 2)).data]
    )
    with httpx.Client(base_url=node.url, timeout=REQUEST_TIMEOUT) as warm:
        assert warm.get("/readyz").status_code == 200
    fds = _fds(node)
    with socket.create_connection(("127.0.0.1", node.port), timeout=REQUEST_TIMEOUT) as client:
        client.sendall(_post_head(node, token, ctype, len(body)))
        half = len(body) // 2
        for start in range(0, half, half // 5):
            client.sendall(body[start : min(start + half // 5, half)])
            time.sleep(0.3)  # a slow client: each piece well within the stall timeout
        wait_for(lambda: _spooled(node.data_dir / "spool"), 10, "the part to be spooled")
        stalled = time.monotonic()
        answer = client.recv(65536)
        waited = time.monotonic() - stalled
    print(f"\nstalled body answered after {waited:.1f} s: {answer.splitlines()[0]!r}")
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert waited < STALL + 5
    wait_for(lambda: _settled(node, clean_db, fds), 10, "the spool, fds and connections to settle")


def test_a_body_cut_off_midway_leaves_nothing(node: Node, clean_db):
    token = node_token(node)
    body, ctype = multipart_body(
        [make_sample("ct", Rows=512, Columns=512, PixelData=bytes(512 * 512 * 2)).data]
    )
    fds = _fds(node)
    for _ in range(5):
        with socket.create_connection(("127.0.0.1", node.port), timeout=REQUEST_TIMEOUT) as client:
            client.sendall(_post_head(node, token, ctype, len(body)) + body[: len(body) // 2])
            wait_for(lambda: _spooled(node.data_dir / "spool"), 10, "the part to be spooled")
    wait_for(lambda: _settled(node, clean_db, fds), 10, "the spool, fds and connections to settle")
    with httpx.Client(base_url=node.url, timeout=REQUEST_TIMEOUT) as client:
        assert client.get("/readyz").status_code == 200


def test_a_reader_that_stops_reading_is_cut_off(node: Node, clean_db):
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    # About 32 MiB: more than the socket buffers on both sides hold.
    big = make_sample("ct", Rows=4096, Columns=4096, PixelData=bytes(4096 * 4096 * 2))
    body, ctype = multipart_body([big.data])
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        assert (
            client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
    fds = _fds(node)
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
        # The reader stops reading but keeps its socket open: the server must let go of
        # what the response holds, the stored object first.
        wait_for(lambda: not _object_files(node), STALL + 10, "the server to close the stored object")
        waited = time.monotonic() - stopped
        print(f"\nstalled reader cut off after {waited:.1f} s")
        with contextlib.suppress(AssertionError):
            wait_for(lambda: not _client_connections(node), 5, "the server to close the stalled connection")
        if _client_connections(node):
            # uvicorn ends a response that failed by closing its transport, and asyncio closes
            # a transport only once its write buffer drains, which a reader that stopped
            # reading never lets happen: the socket stays until the client goes.
            pytest.xfail("the stalled connection stays open until the client closes it")
    wait_for(lambda: _settled(node, clean_db, fds), 10, "the fds and connections to settle")


def _object_files(node: Node) -> list[str]:
    """The server's open files under its data directory (the filesystem store's objects)."""
    assert node.process is not None
    root = str(node.data_dir)
    found = []
    for fd in Path(f"/proc/{node.process.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith(root) and not target.endswith(".log"):
                found.append(target)
    return found
