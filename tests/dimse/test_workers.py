"""Several workers: one of them listens for DICOM, and another takes over when it dies."""

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


def _listener_pid(server_pid: int) -> int | None:
    """The worker process holding the listening DICOM socket (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == DICOM_PORT and fields[3] == "0A":  # LISTEN
            inodes.add(fields[9])
    children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    for child in map(int, children):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{child}/fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd).removeprefix("socket:[").removesuffix("]") in inodes:
                        return child
    return None


def _echo() -> bool:
    # An unknown AE, accepted in development mode into LOCAL (and logged loudly).
    return run("echoscu", "-aet", "DEVBOX", "-aec", AE_TITLE, "127.0.0.1", str(DICOM_PORT)).returncode == 0


def test_one_worker_listens_and_another_takes_over(live_server: LiveServer):
    assert live_server.log is not None
    deadline = time.monotonic() + 20
    while not _echo() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _echo(), live_server.log.read_text(errors="replace")
    text = live_server.log.read_text(errors="replace")
    assert text.count("DICOM listener: AE title") == 1, text
    assert "this worker stands by" in text
    assert "DEVELOPMENT ONLY" in text
    # The listening worker dies; the one standing by binds the port within seconds.
    first = _listener_pid(live_server.pid)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        now = _listener_pid(live_server.pid)
        if now is not None and now != first and _echo():
            break
        time.sleep(0.5)
    else:
        pytest.fail("no worker took the DICOM port over:\n" + live_server.log.read_text(errors="replace"))
