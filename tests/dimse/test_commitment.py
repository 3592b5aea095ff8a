"""Storage Commitment Push Model (PS3.4 Annex J) with pynetdicom as the modality."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
)

from tests.dimse.conftest import AE_TITLE, MODALITY, DicomServer
from tests.dimse.test_store import store_with_pynetdicom, write
from tests.fixtures import _free_port
from tests.samples import make_sample


def request(uids: list[str]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = generate_uid()
    items = []
    for uid in uids:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CTImageStorage, uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


def test_commitment_reported_on_the_same_association(dicom_server: DicomServer, tmp_path: Path):
    stored = [make_sample("ct"), make_sample("ct")]
    assert [s.Status for s in store_with_pynetdicom(dicom_server, MODALITY, *write(tmp_path, *stored))] == [
        0,
        0,
    ]
    missing = generate_uid()
    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information))
        arrived.set()
        return 0x0000, None

    ae = AE(MODALITY)
    ae.add_requested_context(StorageCommitmentPushModel)
    assoc = ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE,
                         evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])  # fmt: skip
    assert assoc.is_established
    try:
        ask = request([s.instance for s in stored] + [missing])
        status, _ = assoc.send_n_action(
            ask, 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
        assert status.Status == 0
        assert arrived.wait(10)
    finally:
        assoc.release()
    [(event_type, info)] = reports
    # PS3.4 J.3.3.1: event type 2, some failed; the committed and the failed listed.
    assert event_type == 2 and info.TransactionUID == ask.TransactionUID
    assert sorted(i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence) == sorted(
        s.instance for s in stored
    )
    assert [(i.ReferencedSOPInstanceUID, i.FailureReason) for i in info.FailedSOPSequence] == [
        (missing, 0x0112)
    ]


def test_commitment_reported_on_a_new_association(dicom_server: DicomServer, tmp_path: Path):
    port = _free_port()
    title = "CT_COMMIT"
    body = {"ae_title": title, "host": "127.0.0.1", "port": port, "hospital": "LOCAL", "may_store": True}
    assert (
        httpx.post(dicom_server.url + "/api/aes", json=body, headers=dicom_server.headers).status_code == 201
    )
    stored = make_sample("ct")
    assert [s.Status for s in store_with_pynetdicom(dicom_server, title, *write(tmp_path, stored))] == [0]
    reports: list[tuple[int, Dataset]] = []
    arrived = threading.Event()

    def on_report(event: evt.Event) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information))
        arrived.set()
        return 0x0000, None

    # The modality's own listener, accepting the archive as the SCP of the report.
    scp = AE(title)
    scp.add_supported_context(StorageCommitmentPushModel, scp_role=True, scu_role=False)
    server = scp.start_server(
        ("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)]
    )
    try:
        ae = AE(title)
        ae.add_requested_context(StorageCommitmentPushModel)
        assoc = ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE)
        assert assoc.is_established
        ask = request([stored.instance])
        status, _ = assoc.send_n_action(
            ask, 1, StorageCommitmentPushModel, StorageCommitmentPushModelInstance
        )
        assoc.release()  # before the report: it must come on a new association
        assert status.Status == 0
        assert arrived.wait(15)
    finally:
        server.shutdown()
    [(event_type, info)] = reports
    assert event_type == 1 and info.TransactionUID == ask.TransactionUID
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [stored.instance]
    assert "FailedSOPSequence" not in info
