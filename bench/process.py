"""A server process seen from outside through ``/proc`` (Linux): its memory, and which
process listens on a loopback port."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from bench.measure import Unavailable

MIB = 1 << 20


def memory(pid: int, field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of ``pid``, in bytes."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError as error:
        raise Unavailable(f"no /proc/{pid}") from error
    for line in status.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise Unavailable(f"no {field}")


def reset_peak(pid: int) -> None:
    """Reset ``VmHWM`` to the current RSS (``clear_refs`` value 5, Linux ≥ 4.0)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError as error:
        # Writing another user's clear_refs takes privileges the benchmark may lack.
        raise Unavailable(f"cannot reset the peak RSS of pid {pid}: {error.strerror}") from error


def pid_listening_on(port: int) -> int | None:
    """The process listening on TCP ``port``, when it runs on this machine and is visible
    to us (None otherwise): the socket's inode from ``/proc/net/tcp*``, then the process
    holding a descriptor on it."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in targets:
                        return int(entry.name)
    return None


_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's "st" column


def _listening_inodes(port: int) -> set[str]:
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == _LISTEN:
                    inodes.add(fields[9])
    return inodes
