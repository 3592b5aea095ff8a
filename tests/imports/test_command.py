"""``filmless import`` as a user runs it: its own process, opening the archive itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.fixtures import HOSPITAL, ArchiveUnderTest
from tests.imports.media import SHAPES, iso_of, write_fileset


def command_env(served: ArchiveUnderTest) -> dict[str, str]:
    """The environment of a ``filmless`` command on the archive under test."""
    settings = served.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("FILMLESS_")}
    return env | {
        "FILMLESS_DATABASE_URL": settings.database_url.get_secret_value(),
        "FILMLESS_DATA_DIR": str(settings.data_dir),
        "FILMLESS_SWEEP_INTERVAL": "0",
    }


def filmless_import(served: ArchiveUnderTest, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "import", "--hospital", HOSPITAL, *args],
        env=command_env(served),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_the_command_imports_reports_and_is_safe_to_rerun(
    served: ArchiveUnderTest, tmp_path: Path
) -> None:
    medium = write_fileset(tmp_path / "cd")
    image = iso_of(medium, tmp_path / "cd.iso")
    garbage = tmp_path / "garbage.iso"
    garbage.write_bytes(b"\0" * 40000)
    report = tmp_path / "report.json"

    first = filmless_import(served, str(image), str(garbage), "--report", str(report))

    assert first.returncode == 1, first.stderr  # one volume could not be read
    assert f"{len(SHAPES)} stored, 0 already present, 0 refused, 1 unreadable" in first.stdout
    assert f"files {len(SHAPES)}/{len(SHAPES)}" in first.stderr  # the last progress line
    assert "MiB/s" in first.stderr
    written = json.loads(report.read_text())
    assert written["counts"] == {"stored": len(SHAPES), "already present": 0, "refused": 0, "unreadable": 1}
    assert {o["sop_instance_uid"] for o in written["outcomes"] if o["status"] == "stored"} == {
        s.instance for s in medium.samples
    }
    # The instances are the archive's: the server (another process) serves them.
    response = await served.client.get(f"/dicom-web/studies/{medium.samples[0].study}/instances")
    assert len(response.json()) == len(SHAPES)

    again = filmless_import(served, str(image))
    assert again.returncode == 0, again.stderr
    assert f"0 stored, {len(SHAPES)} already present, 0 refused, 0 unreadable" in again.stdout

    async with served.archive.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT subject, hospital, outcome, detail FROM audit_events WHERE transaction = 'IMPORT' "
            "ORDER BY pk DESC LIMIT 2"
        )
    assert [e["detail"] for e in events] == [
        f"0 stored, {len(SHAPES)} already present, 0 refused, 0 unreadable",
        f"{len(SHAPES)} stored, 0 already present, 0 refused, 1 unreadable",
    ]
    assert all(e["subject"].startswith("cli:") and e["hospital"] == HOSPITAL for e in events)


async def test_an_unknown_hospital_is_refused(served: ArchiveUnderTest, tmp_path: Path) -> None:
    medium = write_fileset(tmp_path / "cd", ("ct",))
    result = filmless_import(served, str(medium.root), "--hospital", "NOWHERE")
    assert result.returncode == 2
    assert "unknown hospital" in result.stderr


async def test_ctrl_c_stops_the_import_and_leaves_nothing_half_written(
    served: ArchiveUnderTest, tmp_path: Path
) -> None:
    medium = write_fileset(tmp_path / "cd", ("ct",) * 150)
    image = iso_of(medium, tmp_path / "cd.iso")
    settings = served.settings
    returncode, rest = interrupted_import(served, image)

    assert returncode == 130, rest
    assert "interrupted" in rest
    async with served.archive.pool.acquire() as conn:
        pending = await conn.fetchval("SELECT count(*) FROM instances WHERE status = 0")
        stored = await conn.fetchval("SELECT count(*) FROM instances WHERE status = 1")
        event = await conn.fetchrow(
            "SELECT outcome, detail FROM audit_events WHERE transaction = 'IMPORT' ORDER BY pk DESC LIMIT 1"
        )
    assert pending == 0
    assert stored < 150
    assert (event["outcome"], event["detail"]) == (499, "interrupted")
    assert not [p for p in settings.spool_path.iterdir() if p.name.startswith("import-")]

    finished = filmless_import(served, str(image))
    assert finished.returncode == 0, finished.stderr
    assert f"{150 - stored} stored, {stored} already present, 0 refused, 0 unreadable" in finished.stdout


def interrupted_import(served: ArchiveUnderTest, image: Path) -> tuple[int, str]:
    """``filmless import`` sent SIGINT (Ctrl-C) once its first progress line is out: its
    exit status and the rest of its standard error."""
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "import", "--hospital", HOSPITAL, str(image)],
        env=command_env(served),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    # The first progress line is written once the medium is planned; then interrupt.
    while not process.stderr.readline().startswith("files "):
        assert process.poll() is None, process.communicate()
    process.send_signal(signal.SIGINT)
    _, rest = process.communicate(timeout=60)
    return process.returncode, rest
