"""Several workers: every one listens for DICOM on the shared port, and the others go on
serving when one dies."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from tests.dimse.conftest import AE_TITLE, require_tools, run
from tests.fixtures import LiveServer, _free_port

DICOM_PORT = _free_port()


@pytest.fixture
def live_server_env() -> dict[str, str]:
    require_tools()
    return {"FILMLESS_WORKERS": "2", "FILMLESS_DICOM_PORT": str(DICOM_PORT),
            "FILMLESS_DICOM_ACCEPT_UNKNOWN_HOSPITAL": "LOCAL"}  # fmt: skip


def _listener_pids(server_pid: int) -> set[int]:
    """The worker processes holding a listening DICOM socket (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == DICOM_PORT and fields[3] == "0A":  # LISTEN
            inodes.add(fields[9])
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    found = set()
    for child in map(int, children):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{child}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                        found.add(child)
    return found


def _echo() -> bool:
    # An unknown AE, accepted in development mode into LOCAL (and logged loudly).
    return run("echoscu", "-aet", "DEVBOX", "-aec", AE_TITLE, "127.0.0.1", str(DICOM_PORT)).returncode == 0


def test_every_worker_listens_and_the_others_serve_when_one_dies(live_server: LiveServer):
    assert live_server.log is not None
    deadline = time.monotonic() + 20
    while len(_listener_pids(live_server.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    listening = _listener_pids(live_server.pid)
    text = live_server.log.read_text(errors="replace")
    assert len(listening) == 2, text
    assert text.count("DICOM listener: AE title") == 2, text
    assert "this worker stands by" not in text
    assert "DEVELOPMENT ONLY" in text
    # The kernel spreads associations over both: every one of a burst is answered.
    assert all(_echo() for _ in range(6)), live_server.log.read_text(errors="replace")
    # One worker dies; the other answers at once, and the restarted worker listens again.
    first = min(listening)
    os.kill(first, signal.SIGKILL)
    assert all(_echo() for _ in range(6)), live_server.log.read_text(errors="replace")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = _listener_pids(live_server.pid)
        if len(now) == 2 and first not in now and _echo():
            break
        time.sleep(0.5)
    else:
        pytest.fail("the restarted worker did not listen:\n" + live_server.log.read_text(errors="replace"))
