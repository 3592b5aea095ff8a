"""C-STORE: real storescu and pynetdicom store; DICOMweb returns what was sent."""

from __future__ import annotations

import asyncio
import io
import socket
import tempfile
import threading
import time
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, Verification  # type: ignore[attr-defined]

from tests.dimse.conftest import (
    AE_TITLE,
    MODALITY,
    NOSTORE,
    DicomServer,
    audit_rows,
    dataset_bytes,
    run,
    storescp,
)
from tests.fixtures import _free_port
from tests.samples import Sample, make_sample, split_multipart


def retrieve(server: DicomServer, sample: Sample) -> bytes | None:
    response = httpx.get(
        f"{server.url}/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}",
        headers={
            **server.headers,
            "Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*',
        },
        timeout=30,
    )
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    [(_, body)] = split_multipart(response.content, response.headers["content-type"])
    return body


def write(tmp_path: Path, *samples: Sample) -> list[Path]:
    paths = []
    for sample in samples:
        path = tmp_path / f"{sample.instance}.dcm"
        path.write_bytes(sample.data)
        paths.append(path)
    return paths


def store_with_pynetdicom(server: DicomServer, calling: str, *items: Path | Dataset) -> list[Dataset]:
    ae = AE(calling)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.3.1", ["1.2.840.10008.1.2.4.50"])
    assoc = ae.associate(server.host, server.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        return [assoc.send_c_store(item) for item in items]
    finally:
        assoc.release()


def test_storescu_stores_a_ct_series_and_a_jpeg_instance_as_sent(dicom_server: DicomServer, tmp_path: Path):
    study, series = generate_uid(), generate_uid()
    ct = [make_sample("ct", study=study, series=series, InstanceNumber=n) for n in (1, 2, 3)]
    jpeg = make_sample("jpeg")
    files = [str(p) for p in write(tmp_path, *ct, jpeg)]
    # -R -xy: propose the files' SOP classes, with JPEG Baseline for 8-bit images.
    send = ("storescu", "-v", "-R", "-xy", "-aet", MODALITY, "-aec", AE_TITLE)
    # What storescu puts on the wire (it re-encodes: it drops trailing padding), as
    # dcmtk's own storescp records it bit for bit: the oracle for "stored as sent".
    oracle_port = _free_port()
    with storescp(oracle_port, AE_TITLE, tmp_path / "oracle"):
        done = run(*send, "127.0.0.1", str(oracle_port), *files)
        assert done.returncode == 0, done.stderr
    sent = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: p.read_bytes()
            for p in (tmp_path / "oracle").iterdir()}  # fmt: skip
    done = run(*send, dicom_server.host, str(dicom_server.port), *files)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("Received Store Response (Success)") == 4
    for sample in (*ct, jpeg):
        stored = retrieve(dicom_server, sample)
        assert stored is not None
        assert dataset_bytes(stored) == dataset_bytes(sent[sample.instance])
        # The File Meta names the sender (PS3.10 §7.1) and the transfer syntax as sent.
        meta = pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta
        assert meta.SourceApplicationEntityTitle == MODALITY
        assert meta.TransferSyntaxUID == sample.dataset.file_meta.TransferSyntaxUID
    assert pydicom.dcmread(io.BytesIO(retrieve(dicom_server, jpeg) or b"")).file_meta.TransferSyntaxUID == (
        "1.2.840.10008.1.2.4.50"
    )


def test_pynetdicom_stores_files_byte_for_byte(dicom_server: DicomServer, tmp_path: Path):
    # pynetdicom sends a file's data set as it is on disk: what is stored is the file's.
    samples = [make_sample("ct"), make_sample("jpeg")]
    statuses = store_with_pynetdicom(dicom_server, MODALITY, *write(tmp_path, *samples))
    assert [s.Status for s in statuses] == [0, 0]
    for sample in samples:
        assert dataset_bytes(retrieve(dicom_server, sample) or b"") == dataset_bytes(sample.data)


def test_a_duplicate_is_a_success_and_a_different_object_a_conflict(
    dicom_server: DicomServer, tmp_path: Path
):
    sample = make_sample("ct")
    [path] = write(tmp_path, sample)
    first, again = store_with_pynetdicom(dicom_server, MODALITY, path, path)
    assert (first.Status, again.Status) == (0x0000, 0x0000)
    changed = sample.dataset
    changed.PatientName = "Other^Object"
    [conflict] = store_with_pynetdicom(dicom_server, MODALITY, changed)
    assert conflict.Status == 0xA911 and "SOP Instance UID" in conflict.ErrorComment
    assert dataset_bytes(retrieve(dicom_server, sample) or b"") == dataset_bytes(sample.data)


def test_an_ae_without_the_store_permission_is_refused(dicom_server: DicomServer, tmp_path: Path):
    sample = make_sample("ct")
    [refused] = store_with_pynetdicom(dicom_server, NOSTORE, *write(tmp_path, sample))
    assert refused.Status == 0x0124
    assert retrieve(dicom_server, sample) is None


def test_an_unreadable_data_set_cannot_be_understood(dicom_server: DicomServer, tmp_path: Path):
    # A valid File Meta group, then a data set cut short.
    uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    buffer.write(b"\0" * 128 + b"DICM")
    pydicom.filewriter.write_file_meta_info(buffer, meta, enforce_standard=True)
    # Its SOP Class and Instance UIDs (the sender needs them), then an element longer
    # than what follows: the data set cannot be parsed.
    for tag, value in ((b"\x08\x00\x16\x00", CTImageStorage.encode()), (b"\x08\x00\x18\x00", uid.encode())):
        value += b"\0" * (len(value) % 2)
        buffer.write(tag + b"UI" + len(value).to_bytes(2, "little") + value)
    buffer.write(b"\x10\x00\x10\x00PN\xf0\xff" + b"Doe^Trunc")
    path = tmp_path / "garbage.dcm"
    path.write_bytes(buffer.getvalue())
    [status] = store_with_pynetdicom(dicom_server, MODALITY, path)
    assert status.Status & 0xF000 == 0xC000, hex(status.Status)
    # And the listener serves the next association.
    [ok] = store_with_pynetdicom(dicom_server, MODALITY, *write(tmp_path, make_sample("ct")))
    assert ok.Status == 0


def received_since(began: float) -> list[Path]:
    """pynetdicom's temporary files of received data sets, made since ``began``."""
    return [p for p in Path(tempfile.gettempdir()).glob("tmp*.dcm") if p.stat().st_mtime >= began]


# The sending side (this test) aborts under its own sender thread: its reactor complains.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
async def test_an_association_aborted_mid_transfer_stores_nothing(
    dicom_server: DicomServer, tmp_path: Path, emptied_db: str
):
    # A 64 MiB instance, aborted while its data set is on the wire.
    ds = make_sample("ct").dataset
    ds.Rows = ds.Columns = 4096
    ds.PixelData = np.random.default_rng(1).integers(0, 4000, (4096, 4096), dtype=np.uint16).tobytes() * 2
    ds.NumberOfFrames = 2
    path = tmp_path / "big.dcm"
    ds.save_as(path, enforce_file_format=True)
    ae = AE(MODALITY)
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    ae.maximum_pdu_size = 16384
    ae.dimse_timeout = ae.network_timeout = 2
    assoc = ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE)
    assert assoc.is_established
    # Once 4 MiB of its 64 are on the wire, the sender writes an A-ABORT (PS3.8 §9.3.8)
    # and drops the connection: the archive has a partial data set, then the abort.
    sock = assoc.dul.socket
    assert sock is not None and sock.socket is not None
    send, raw, sent = sock.send, sock.socket, [0]

    def send_then_abort(data: bytes) -> None:
        if sent[0] > 4 << 20:
            raw.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00")
            raw.shutdown(socket.SHUT_RDWR)
            raise OSError("aborted by the test")
        send(data)
        sent[0] += len(data)

    sock.send = send_then_abort  # type: ignore[method-assign]
    began = time.time() - 1
    result: list[Dataset] = []
    sender = threading.Thread(target=lambda: result.append(assoc.send_c_store(path)), daemon=True)
    sender.start()
    sender.join(20)
    raw.close()
    assert sent[0] > 4 << 20 and sent[0] < path.stat().st_size
    assert not result or "Status" not in result[0]  # no response: the association was gone
    await asyncio.sleep(1)
    conn = await asyncpg.connect(emptied_db)
    try:
        rows = await conn.fetchval(
            "SELECT count(*) FROM instances WHERE sop_instance_uid = $1", ds.SOPInstanceUID
        )
    finally:
        await conn.close()
    assert rows == 0
    assert not list((dicom_server.data_dir / "spool").glob("cstore-*"))
    # Nor is the partial data set left where pynetdicom received it (the system temp dir).
    assert not received_since(began)
    # The listener is up for the next association.
    ae = AE(MODALITY)
    ae.add_requested_context(Verification)
    assoc = ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE)
    assert assoc.is_established and assoc.send_c_echo().Status == 0
    assoc.release()


async def test_concurrent_associations_store_every_instance_once(
    dicom_server: DicomServer, tmp_path: Path, emptied_db: str
):
    """C-STOREs arriving together over several associations are stored together: each is
    answered with its own status, and the trail names every instance exactly once."""
    before = {r["pk"] for r in await audit_rows(emptied_db, f"ae:{MODALITY}")}
    study = make_sample("ct")
    sets = [[make_sample("ct", study=study.study, series=study.series) for _ in range(8)] for _ in range(4)]
    paths = [write(tmp_path, *samples) for samples in sets]
    statuses = await asyncio.gather(
        *(asyncio.to_thread(store_with_pynetdicom, dicom_server, MODALITY, *p) for p in paths)
    )
    assert [s.Status for per in statuses for s in per] == [0] * 32
    sent = {s.instance for samples in sets for s in samples}
    events = [r for r in await audit_rows(emptied_db, f"ae:{MODALITY}") if r["pk"] not in before]
    stored = [e for e in events if e["transaction"] == "C-STORE" and e["outcome"] == 200]
    named = [uid for e in stored for uid in e["instance_uids"]]
    assert sorted(named) == sorted(sent) and sum(e["instances"] for e in stored) == 32
    async with httpx.AsyncClient(base_url=dicom_server.url, headers=dicom_server.headers) as client:
        response = await client.get("/dicom-web/studies", params={"StudyInstanceUID": study.study})
    assert response.json()[0]["00201208"]["Value"] == [32]
