"""kill -9 during ingest: STOW-RS requests and C-STORE associations in flight when the
server is SIGKILLed. After a restart, every acknowledged instance is retrievable byte for
byte; after the sweep the index and the store agree exactly; and a sweep killed midway
leaves nothing its next run cannot finish."""

from __future__ import annotations

import gc
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from tests.dimse.conftest import dataset_bytes
from tests.fixtures import _free_port
from tests.reliability.conftest import REQUEST_TIMEOUT, node_env, node_token, wait_for
from tests.reliability.helpers import index_rows, leftovers, retrieved, stored_files
from tests.samples import Sample, make_sample, multipart_body

STOW_REQUESTS = 100
CLIENTS = 12
ASSOCIATIONS = 4
AE_TITLE = "FILMLESS"


def _stow_all(url: str, headers: dict[str, str], samples: list[Sample], acked: dict[str, Sample]) -> None:
    def one(sample: Sample) -> None:
        body, ctype = multipart_body([sample.data])
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
                response = client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype})
        except httpx.HTTPError:
            return  # cut off by the kill: not acknowledged
        if response.status_code == 200:
            acked[sample.instance] = sample

    with ThreadPoolExecutor(CLIENTS) as pool:
        list(pool.map(one, samples))


def _c_store_all(port: int, samples: list[Sample], tmp: Path, acked: dict[str, Sample]) -> None:
    ae = AE("CT_A")
    ae.add_requested_context(CTImageStorage)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    for sample in samples:
        path = tmp / f"{sample.instance}.dcm"
        path.write_bytes(sample.data)
        try:
            assoc = ae.associate("127.0.0.1", port, ae_title=AE_TITLE)
        except Exception:
            return
        if not assoc.is_established:
            return
        try:
            # Sent as the file: pynetdicom then sends its data set byte for byte.
            status = assoc.send_c_store(path)
            if status and status.Status == 0:
                acked[sample.instance] = sample
        finally:
            if assoc.is_established:
                assoc.release()


# pynetdicom leaves the sockets of associations the kill cut off for the collector to close.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_kill_during_ingest_loses_nothing_acknowledged_and_leaves_nothing(
    make_node, clean_db, tmp_path, signing_key
):
    dicom_port = _free_port()
    node = make_node(
        node_env(
            clean_db, tmp_path / "data", signing_key,
            FILMLESS_DICOM_PORT=str(dicom_port), FILMLESS_DICOM_AE_TITLE=AE_TITLE, FILMLESS_WORKERS="2",
        )
    )  # fmt: skip
    node.start()
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        body = {"ae_title": "CT_A", "hospital": "LOCAL", "host": "127.0.0.1", "port": 104, "may_store": True}
        assert client.post("/api/aes", json=body).status_code == 201

    stow_samples = [make_sample("ct", PatientID=f"KILL{i}") for i in range(STOW_REQUESTS)]
    dimse_samples = [
        [make_sample("ct", PatientID=f"KILLD{a}-{i}") for i in range(10)] for a in range(ASSOCIATIONS)
    ]
    acked: dict[str, Sample] = {}
    by_dimse = {sample.instance for chunk in dimse_samples for sample in chunk}
    senders = [threading.Thread(target=_stow_all, args=(node.url, headers, stow_samples, acked))]
    senders += [
        threading.Thread(target=_c_store_all, args=(dicom_port, chunk, tmp_path, acked))
        for chunk in dimse_samples
    ]
    for sender in senders:
        sender.start()
    # Kill while requests are in flight: some acknowledged, most not yet.
    wait_for(lambda: len(acked) >= 20, 60, "the first acknowledgements", interval=0.01)
    node.kill()
    for sender in senders:
        sender.join(timeout=60)
        assert not sender.is_alive()
    gc.collect()
    killed_with = len(acked)
    print(f"\nkilled with {killed_with} of {STOW_REQUESTS + 10 * ASSOCIATIONS} instances acknowledged")
    assert 0 < killed_with < STOW_REQUESTS + 10 * ASSOCIATIONS

    root, spool = node.data_dir / "objects", node.data_dir / "spool"
    left = leftovers(root, spool)
    print(f"left behind by the kill: {len(left)} temporary files, {index_rows(clean_db)[1]} pending rows")

    # Restart with the sweep on and time already passed for what the kill left: pending rows
    # count as abandoned at once, leftover files once their age is past (set back here).
    past = time.time() - 7200
    for path in left:
        os.utime(path, (past, past))
    node.env |= {
        "FILMLESS_SWEEP_INTERVAL": "1",
        "FILMLESS_PENDING_TIMEOUT": "0",
        "FILMLESS_LEFTOVER_AGE": "3600",
    }
    node.start()

    # The sweep's own crash-safety: killed as soon as it may have begun, then run again.
    node.kill()
    node.start()

    def consistent() -> bool:
        rows, pending = index_rows(clean_db)
        return pending == 0 and not leftovers(root, spool) and set(rows) == stored_files(root)

    wait_for(consistent, 30, "the sweep to leave the index and the store agreeing")
    rows, _ = index_rows(clean_db)
    print(f"after the sweep: {len(rows)} instances, each with its object, no object without its row")
    assert len(rows) >= killed_with

    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        for sample in acked.values():
            got = retrieved(client, sample)
            if sample.instance in by_dimse:
                # C-STORE carries the data set; the archive writes its own File Meta (PS3.10 §7.1).
                assert dataset_bytes(got) == dataset_bytes(sample.data), sample.instance
            else:
                assert got == sample.data, sample.instance
