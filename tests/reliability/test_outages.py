"""The object store and the database go away under load and come back: while they are
gone, 503 with a reason (and readiness says which); nothing half-written; once they are
back, the same server process recovers with no 5xx. And a disk that fills up: 507 or 503
with a reason, nothing half-written."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from harness.servers import s3_client_for
from tests.reliability.conftest import (
    REQUEST_TIMEOUT,
    Node,
    RestartableS3,
    SystemPostgres,
    node_env,
    node_token,
    wait_for,
)
from tests.reliability.helpers import index_rows, leftovers, retrieved, stored_files
from tests.samples import Sample, make_sample, multipart_body


@dataclass
class Outcome:
    began: float
    ended: float
    status: int | None  # None: the request failed at the transport (e.g. timed out)
    reason: str
    sample: Sample | None = None


@dataclass
class Load:
    """STOW-RS and QIDO-RS requests from a few threads until stopped; every outcome kept."""

    node: Node
    headers: dict[str, str]
    threads: int = 3
    outcomes: list[Outcome] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for index in range(self.threads):
            worker = threading.Thread(target=self._run, args=(index,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=REQUEST_TIMEOUT + 5)
            assert not worker.is_alive(), "a request hung past its timeout"

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.node.url, headers=self.headers, timeout=REQUEST_TIMEOUT) as client:
            turn = 0
            while not self._stop.is_set():
                turn += 1
                began = time.monotonic()
                sample: Sample | None = None
                try:
                    if turn % 3 == 0:
                        response = client.get("/dicom-web/studies", params={"PatientID": "LOAD*", "limit": 5})
                    else:
                        sample = make_sample("ct", PatientID=f"LOAD{index}-{turn}")
                        body, ctype = multipart_body([sample.data])
                        response = client.post(
                            "/dicom-web/studies", content=body, headers={"Content-Type": ctype}
                        )
                    outcome = Outcome(
                        began, time.monotonic(), response.status_code, response.text[:300], sample
                    )
                except httpx.HTTPError as exc:
                    outcome = Outcome(began, time.monotonic(), None, repr(exc), sample)
                self.outcomes.append(outcome)

    def since(self, moment: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.began >= moment]

    def between(self, start: float, end: float) -> list[Outcome]:
        return [o for o in self.outcomes if o.began >= start and o.ended <= end]


def _readiness(node: Node) -> tuple[int, dict[str, str]]:
    response = httpx.get(node.url + "/readyz", timeout=REQUEST_TIMEOUT)
    return response.status_code, response.json()


def _check_outage(outcomes: list[Outcome], dependency: str) -> None:
    """During an outage a request succeeds or is refused with 503 and a reason."""
    statuses = [o.status for o in outcomes]
    assert None not in statuses, [o.reason for o in outcomes if o.status is None][:3]
    assert set(statuses) <= {200, 503}, [
        (o.status, o.reason) for o in outcomes if o.status not in (200, 503)
    ][:3]
    refused = [o for o in outcomes if o.status == 503]
    assert refused, f"no request was refused while the {dependency} was down"
    for outcome in refused:
        assert dependency in outcome.reason, outcome.reason


def _check_recovered(outcomes: list[Outcome]) -> None:
    assert len(outcomes) >= 10, len(outcomes)
    bad = [(o.status, o.reason) for o in outcomes if o.status != 200]
    assert not bad, bad[:3]


def _bucket_keys(s3: RestartableS3, bucket: str) -> set[str]:
    async def read() -> set[str]:
        async with s3_client_for(s3.server) as client:
            keys: set[str] = set()
            async for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
                keys |= {item["Key"] for item in page.get("Contents", [])}
            uploads = await client.list_multipart_uploads(Bucket=bucket)
            assert not uploads.get("Uploads"), "an unfinished multipart upload was left"
            return keys

    return asyncio.run(read())


def test_object_store_outage_is_503_then_recovers_without_restart(
    make_node, restartable_s3: RestartableS3, clean_db, tmp_path, signing_key
):
    node = make_node(node_env(clean_db, tmp_path / "data", signing_key, restartable_s3.server))
    node.start()
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    with Load(node, headers) as load:
        wait_for(lambda: len(load.outcomes) >= 10, 30, "load before the outage")
        restartable_s3.stop()
        down = time.monotonic()
        wait_for(lambda: _readiness(node)[0] == 503, 30, "readiness to report the outage")
        _, checks = _readiness(node)
        print(f"\nreadiness while the object store is down: {checks}")
        assert checks["object_store"] != "ok" and checks["database"] == "ok"
        wait_for(lambda: len(load.since(down)) >= 10, 60, "requests during the outage")
        up_from = time.monotonic()
        restartable_s3.start()
        wait_for(lambda: _readiness(node)[0] == 200, 60, "readiness after the object store is back")
        back = time.monotonic()
        wait_for(lambda: len(load.since(back)) >= 20, 60, "requests after the outage")
    during = load.between(down, up_from)
    _check_outage(during, "object store")
    _check_recovered(load.since(back))
    print(f"object store outage: {len(during)} requests during ({sum(o.status == 503 for o in during)} 503), "
          f"{len(load.since(back))} after, all 200")  # fmt: skip

    # Nothing half-written: each row has its object, each object its row, none pending.
    rows, pending = index_rows(clean_db)
    assert pending == 0
    assert set(rows) == _bucket_keys(restartable_s3, node.env["FILMLESS_S3_BUCKET"])
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        for outcome in load.outcomes:
            if outcome.sample is not None and outcome.status == 200:
                assert retrieved(client, outcome.sample) == outcome.sample.data


def test_database_restart_is_503_then_the_pool_recovers(
    make_node, system_postgres: SystemPostgres, tmp_path, signing_key
):
    # The sweep every second, taking writes pending for 5 s as abandoned: far longer than
    # any write of this test takes.
    sweep = {"FILMLESS_SWEEP_INTERVAL": "1", "FILMLESS_PENDING_TIMEOUT": "5"}
    node = make_node(node_env(system_postgres.url, tmp_path / "data", signing_key, **sweep))
    node.start()
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    with Load(node, headers) as load:
        wait_for(lambda: len(load.outcomes) >= 10, 30, "load before the restart")
        # An operator's restart first: pg_ctl restart -m fast, with the load running.
        restarted = time.monotonic()
        system_postgres.restart()
        wait_for(lambda: _readiness(node)[0] == 200, 30, "readiness after pg_ctl restart")
        after_restart = time.monotonic()
        wait_for(lambda: len(load.since(after_restart)) >= 10, 60, "requests after the restart")
        # Then a longer outage, to see what clients get while it is down.
        stopping = time.monotonic()
        system_postgres.stop()
        down = time.monotonic()
        wait_for(lambda: _readiness(node)[0] == 503, 30, "readiness to report the database down")
        _, checks = _readiness(node)
        print(f"\nreadiness while the database is down: {checks}")
        assert checks["database"] != "ok"
        wait_for(lambda: len(load.since(down)) >= 10, 60, "requests while the database is down")
        up_from = time.monotonic()
        system_postgres.start()
        wait_for(lambda: _readiness(node)[0] == 200, 60, "readiness after the database is back")
        back = time.monotonic()
        wait_for(lambda: len(load.since(back)) >= 20, 60, "requests after the outage")
    around_restart = load.between(restarted, after_restart)
    assert {o.status for o in around_restart} <= {200, 503}, [(o.status, o.reason) for o in around_restart]
    _check_recovered(load.between(after_restart, stopping))
    during = load.between(down, up_from)
    _check_outage(during, "database")
    _check_recovered(load.since(back))
    longest = max(o.ended - o.began for o in load.outcomes)
    print(f"database outage: {len(during)} requests during ({sum(o.status == 503 for o in during)} 503), "
          f"{len(load.since(back))} after, all 200; longest request {longest:.2f} s")  # fmt: skip
    assert longest < REQUEST_TIMEOUT

    # A write the outage cut off may leave its pending row (the database was not there to
    # remove it): the sweep removes it, and its object, once it is stale.
    root = node.data_dir / "objects"

    def consistent() -> bool:
        rows, pending = index_rows(system_postgres.url)
        return pending == 0 and set(rows) == stored_files(root)

    wait_for(consistent, 30, "the sweep to leave the index and the store agreeing")


def _big_sample() -> Sample:
    """About 5 MiB: more than the small disk holds."""
    return make_sample("ct", Rows=1600, Columns=1600, PixelData=bytes(1600 * 1600 * 2))


@pytest.mark.parametrize("full", ["spool", "store"])
def test_a_full_disk_is_507_or_503_and_leaves_nothing(
    make_node, small_disk: Path, clean_db, tmp_path, signing_key, full
):
    if full == "spool":
        data_dir, spool = tmp_path / "data", small_disk
        env = node_env(clean_db, data_dir, signing_key, FILMLESS_SPOOL_DIR=str(spool))
    else:
        data_dir, spool = small_disk / "data", tmp_path / "spool"
        env = node_env(clean_db, data_dir, signing_key, FILMLESS_SPOOL_DIR=str(spool))
    node = make_node(env)
    node.start()
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        big = _big_sample()
        body, ctype = multipart_body([big.data])
        response = client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
        print(f"\n{full} full: {response.status_code} {response.text[:200]}")
        assert response.status_code in (503, 507), response.text
        assert "space" in response.text, response.text
        # Nothing half-written: no row, no object, no temporary, no spool file.
        rows, pending = index_rows(clean_db)
        assert rows == {} and pending == 0
        root = data_dir / "objects"
        assert stored_files(root) == set() and leftovers(root, spool) == []
        # The space was given back: a small instance is stored.
        small = make_sample("ct")
        body, ctype = multipart_body([small.data])
        assert (
            client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
        assert retrieved(client, small) == small.data
