"""A server seen from outside through ``/proc`` (Linux): the memory of its process tree (a
server with worker processes is the parent and its children), and which process listens
on a loopback port."""

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


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server's worker processes), parents first."""
    found, pending = [], [pid]
    while pending:
        current = pending.pop(0)
        found.append(current)
        children: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    children += [int(child) for child in (task / "children").read_text().split()]
        pending += [child for child in children if child not in found and child not in pending]
    return found


def tree_memory(pid: int, field: str) -> int:
    """:func:`memory` summed over the process tree of ``pid``. For ``VmHWM`` that is the
    sum of each process's own peak, an upper bound of the tree's peak: the processes may
    have peaked at different moments. A child that exits meanwhile is left out."""
    total = memory(pid, field)
    for child in tree(pid)[1:]:
        with contextlib.suppress(Unavailable):
            total += memory(child, field)
    return total


def reset_tree_peak(pid: int) -> None:
    """:func:`reset_peak` for every process of the tree of ``pid``."""
    reset_peak(pid)
    for child in tree(pid)[1:]:
        if Path(f"/proc/{child}").exists():
            reset_peak(child)


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
