"""``filmless import``: the film library's CDs, ZIP files and folders into the archive.

It opens the archive itself (database and object store, from the same settings as the
server), so it works whether a server runs or not, and stores through the same pipeline.
Progress goes to standard error: one line rewritten in place on a terminal, a line every
few seconds otherwise (a log file). The summary goes to standard output, and with
``--report`` the whole outcome, member by member, to a JSON file.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import sys
import time
from pathlib import Path
from typing import TextIO

from app import __version__
from app.dicom.reconciliation import Coercion
from app.repository import hospitals
from app.security.principal import Principal, Role
from app.services import audit
from app.services.audit import Trail, Transaction
from app.services.imports import ImportReport, MemberOutcome, Status, Tally, import_paths
from app.settings import Settings

_MIB = 1 << 20


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "import",
        help="import CDs (ISO 9660 images), ZIP files and folders of DICOM files",
        description="Store every instance of the given folders (recursively), DICOMDIR file-sets, ZIP "
        "files and ISO 9660 images. Safe to re-run: what is stored already is reported, not stored again.",
    )
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    parser.add_argument(
        "--hospital", default="LOCAL", help="member hospital the instances go to (default LOCAL)"
    )
    parser.add_argument("--report", type=Path, metavar="FILE", help="write every member's outcome as JSON")
    reconcile = parser.add_argument_group(
        "import reconciliation (IHE IRWF.b)",
        "Coerce a foreign CD's patient to the local one; the original values are kept in the stored copy "
        "(Other Patient IDs Sequence, Original Attributes Sequence).",
    )
    reconcile.add_argument("--issuer", help="Issuer of Patient ID for instances that have none")
    reconcile.add_argument("--patient-id", help="the local Patient ID")
    reconcile.add_argument("--patient-name", help="the local Patient's Name (DICOM PN, e.g. Family^Given)")
    reconcile.add_argument("--birth-date", help="the local Patient's Birth Date (YYYYMMDD)")


def run(settings: Settings, args: argparse.Namespace) -> int:
    coercion = Coercion(args.issuer, args.patient_id, args.patient_name, args.birth_date)
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        print(f"no such file or folder: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    try:
        report = asyncio.run(_import(settings, args.paths, args.hospital, coercion))
    except KeyboardInterrupt:
        # asyncio.run cancelled the import: the instances in flight were undone and the
        # temporary files removed before this point.
        print("\ninterrupted: instances stored so far stay stored; run again to go on", file=sys.stderr)
        return 130
    if report is None:
        return 2
    print(summary(report))
    if args.report is not None:
        args.report.write_text(json.dumps(report.as_json(), indent=2) + "\n", encoding="utf-8")
    clean = report.count(Status.REFUSED) == 0 and report.count(Status.UNREADABLE) == 0
    return 0 if clean else 1


async def _import(
    settings: Settings, paths: list[Path], hospital: str, coercion: Coercion
) -> ImportReport | None:
    from app.main import open_archive

    async with contextlib.AsyncExitStack() as stack:
        archive = await open_archive(settings, stack)
        member = await hospitals.by_code(archive.pool, hospital)
        if member is None:
            print(f"unknown hospital {hospital!r} (see filmless hospital list)", file=sys.stderr)
            return None
        trail = Trail(
            Transaction.IMPORT,
            method="CLI",
            path="filmless import",
            user_agent=f"filmless/{__version__}",
        )
        user = f"cli:{getpass.getuser()}"
        trail.identify(Principal(user, member.code, member.pk, frozenset({Role.UPLOADER})))
        progress = Progress(sys.stderr)
        status, detail = 500, "failed"
        try:
            report = await import_paths(archive, trail, paths, coercion or None, progress.update)
            status, detail = 200, _counts(report)
        except asyncio.CancelledError:
            status, detail = 499, "interrupted"
            raise
        finally:
            progress.finish()
            await asyncio.shield(audit.commit(archive, trail, status, detail))
    return report


def _counts(report: ImportReport) -> str:
    return ", ".join(f"{report.count(s)} {s.value}" for s in Status)


def summary(report: ImportReport) -> str:
    """What the import did, and every member that did not make it in, with the reason."""
    lines = [_counts(report)]
    for outcome in report.outcomes:
        if outcome.status in (Status.REFUSED, Status.UNREADABLE):
            lines.append(f"  {outcome.status.value}: {_where(outcome)}: {outcome.reason}")
    return "\n".join(lines)


def _where(outcome: MemberOutcome) -> str:
    return f"{outcome.volume}:{outcome.member}" if outcome.member else outcome.volume


class Progress:
    """Files, MiB, rate and time left, on one line (a terminal) or periodic lines."""

    INTERVAL = 5.0

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.began = time.monotonic()
        self.last = 0.0
        self.line = ""

    def update(self, tally: Tally, outcomes: list[MemberOutcome]) -> None:
        now = time.monotonic()
        done = tally.files_done == tally.files_total
        if not self.tty and now - self.last < self.INTERVAL and not done:
            return
        self.last = now
        self.line = render(tally, now - self.began)
        if self.tty:
            self.stream.write("\r\x1b[K" + self.line)
        else:
            self.stream.write(self.line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty and self.line:
            self.stream.write("\n")
            self.stream.flush()


def render(tally: Tally, elapsed: float) -> str:
    """One progress line.

    >>> t = Tally(files_total=10, bytes_total=20 << 20, files_done=5, bytes_done=10 << 20)
    >>> render(t, 4.0)
    'files 5/10, 10.0/20.0 MiB, 2.5 MiB/s, ETA 4 s (stored 0, present 0, refused 0, unreadable 0)'
    """
    rate = tally.bytes_done / elapsed if elapsed > 0 else 0.0
    left = tally.bytes_total - tally.bytes_done
    eta = f"{left / rate:.0f} s" if rate > 0 else "?"
    counts = tally.counts
    return (
        f"files {tally.files_done}/{tally.files_total}, "
        f"{tally.bytes_done / _MIB:.1f}/{tally.bytes_total / _MIB:.1f} MiB, {rate / _MIB:.1f} MiB/s, "
        f"ETA {eta} (stored {counts[Status.STORED]}, present {counts[Status.PRESENT]}, "
        f"refused {counts[Status.REFUSED]}, unreadable {counts[Status.UNREADABLE]})"
    )
