"""The benchmark's physical ceiling: Debian's nginx, started and stopped by the benchmark as
an unprivileged process, serving the stored bytes as the retrieval figures ask for them."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bench.ceiling import (
    BOUNDARY,
    NGINX_BINARY,
    RETRIEVALS,
    STUDY_FILES,
    measure_ceiling,
    serve_static,
    write_site,
)
from bench.corpus import Series, Study
from bench.measure import Plan
from bench.services import free_port
from bench.stow import multipart
from bench.workload import Catalog

pytestmark = pytest.mark.skipif(not NGINX_BINARY.exists(), reason="Debian's nginx is not installed")

SERIES = (
    Series("1.2.3.1", "CT", 1, ("1.2.3.1.1", "1.2.3.1.2")),
    Series("1.2.3.2", "CT", 2, ("1.2.3.2.1",)),
)
STUDY = Study("1.2.3", "BENCH-000001", "Doe^Jane", "A1", "20240101", SERIES)
CATALOG = Catalog([STUDY], all_limit=1)
PLAN = Plan(warmup=1, repetitions=3, budget_seconds=60)


def instance(sop_uid: str) -> bytes:
    # Distinct contents and sizes per instance, so a wrong file cannot pass for another.
    return sop_uid.encode() * (1000 + len(sop_uid))


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


@pytest.fixture
def prefix() -> Iterator[Path]:
    # Not under tmp_path: nginx runs as nobody when tests run as root, and pytest's
    # temporary directories are closed to other users.
    directory = Path(tempfile.mkdtemp(prefix="filmless-test-nginx-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_nginx_serves_the_stored_bytes_as_files_and_as_one_multipart_body(prefix: Path) -> None:
    write_site(prefix / "site", CATALOG, PLAN, 1, instance)
    with serve_static(prefix, free_port()) as nginx:
        if os.geteuid() == 0:
            assert _uid(nginx.pid) != 0, "nginx must not run as root"
        with httpx.Client() as client:
            study = client.get(f"{nginx.url}/studies/{STUDY.uid}.multipart")
            sops = [sop for series in SERIES for sop in series.instances]
            assert study.content == multipart([instance(sop) for sop in sops], BOUNDARY)
            assert study.headers["content-type"] == (
                f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
            )
            one = client.get(f"{nginx.url}/instances/{sops[0]}.dcm")
            assert one.content == instance(sops[0])
            assert one.headers["content-type"] == "application/dicom"
            assert one.headers["connection"] == "keep-alive"
        pid = nginx.pid
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_the_ceiling_times_every_retrieval_with_the_stored_sizes() -> None:
    results = measure_ceiling(CATALOG, PLAN, 1, instance)
    sops = [sop for series in SERIES for sop in series.instances]
    study_bytes = len(multipart([instance(sop) for sop in sops], BOUNDARY))
    assert results["wado.study"].detail["sizes"] == [study_bytes] * PLAN.repetitions
    for key in ("http.ping", *RETRIEVALS, STUDY_FILES):
        measurement = results[key]
        assert measurement.unavailable is None, key
        assert len(measurement.samples) == PLAN.repetitions and min(measurement.samples) > 0, key


def test_without_nginx_every_ceiling_figure_is_not_available(tmp_path: Path) -> None:
    results = measure_ceiling(CATALOG, PLAN, 1, instance, binary=tmp_path / "no-nginx")
    assert {key: m.unavailable for key, m in results.items()} == {
        key: "n/a (no nginx)" for key in ("http.ping", *RETRIEVALS, STUDY_FILES)
    }
