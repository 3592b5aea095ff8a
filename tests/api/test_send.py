"""Sending a study out: C-STORE to a real dcmtk ``storescp``, STOW-RS to a second Filmless
archive, each as a job reporting every instance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from app.repository import aes
from app.repository.aes import NewApplicationEntity
from tests.api.peers import needs_storescp, peer_archive, storescp
from tests.fixtures import HOSPITAL, OTHER_HOSPITAL, ArchiveUnderTest, token
from tests.samples import Sample, make_sample, multipart_body

SHAPES = ("ct", "jpeg2000", "rle", "multiframe")
#: pynetdicom 3.0.4 shuts down, but does not close, the socket of a connection refused or
#: dropped before the association (AssociationSocket.connect and the abort path); the
#: garbage collector closes it, with a ResourceWarning that this suite makes an error.
PYNETDICOM_LEAKS_FAILED_SOCKETS = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning"
)
FAST_RETRY = {"send_retry_delay": 0.05, "send_timeout": 10.0}


async def stored_study(served: ArchiveUnderTest) -> list[Sample]:
    study = generate_uid()
    samples = [make_sample(shape, study=study, PatientID="SEND-1") for shape in SHAPES]
    body, content_type = multipart_body(s.data for s in samples)
    response = await served.client.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": content_type}
    )
    assert response.status_code == 200, response.text
    return samples


def from_pixel_data(data: bytes | Path) -> bytes:
    """The bytes of a Part 10 file from its Pixel Data element to the end."""
    raw = data.read_bytes() if isinstance(data, Path) else data
    import io

    buffer = io.BytesIO(raw)
    pydicom.dcmread(buffer, stop_before_pixels=True)
    return raw[buffer.tell() :]


async def send(served: ArchiveUnderTest, study: str, body: dict[str, str]) -> dict[str, object]:
    response = await served.client.post(f"/api/studies/{study}/send", json=body)
    assert response.status_code == 202, response.text
    await served.app.state.running.jobs.wait()
    job = await served.client.get(response.headers["location"])
    assert job.status_code == 200
    result: dict[str, object] = job.json()
    return result


async def add_destination(served: ArchiveUnderTest, title: str, port: int, **flags: object) -> None:
    added = await aes.add(
        served.archive.pool,
        NewApplicationEntity(title, "127.0.0.1", port, str(flags.pop("hospital", HOSPITAL)), **flags),  # type: ignore[arg-type]
    )
    assert added is not None


@needs_storescp
@pytest.mark.parametrize("served", [FAST_RETRY], indirect=True)
async def test_a_study_goes_to_a_known_ae_by_c_store(served: ArchiveUnderTest, tmp_path: Path) -> None:
    samples = await stored_study(served)
    (tmp_path / "received").mkdir()
    with storescp(tmp_path / "received") as peer:
        await add_destination(served, "STORESCP", peer.port, destination=True)
        job = await send(served, samples[0].study, {"destination": "STORESCP"})
        received = peer.received()
        associations = peer.associations

    assert job["state"] == "done", job
    assert job["kind"] == "send" and job["parameters"] == {
        "study": samples[0].study,
        "destination": "AE STORESCP",
    }
    assert job["counts"] == {"sent": len(SHAPES), "failed": 0}
    outcomes = job["outcomes"]
    assert isinstance(outcomes, list)
    assert sorted(o["sop_instance_uid"] for o in outcomes) == sorted(s.instance for s in samples)
    assert {(o["status"], o["dimse_status"], o["attempts"]) for o in outcomes} == {("sent", "0x0000", 1)}
    assert associations == 1  # one association for the whole study
    # What storescp wrote: each instance in its stored transfer syntax, its pixel data
    # byte for byte as the archive received it.
    by_uid = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in received}
    assert sorted(by_uid) == sorted(s.instance for s in samples)
    for sample in samples:
        copy = by_uid[sample.instance]
        assert pydicom.dcmread(copy).file_meta.TransferSyntaxUID == sample.dataset.file_meta.TransferSyntaxUID
        assert from_pixel_data(copy) == from_pixel_data(sample.data)

    async with served.archive.pool.acquire() as conn:
        request, event = await conn.fetch(
            "SELECT outcome, detail, instances, study_uids FROM audit_events WHERE transaction = 'SEND' "
            "AND $1 = ANY(study_uids) ORDER BY pk",
            samples[0].study,
        )
    # The request (accepted), then the send itself when it ended.
    assert request["outcome"] == 202 and request["detail"] == f"job {job['id']}"
    assert event["outcome"] == 200 and event["instances"] == len(SHAPES)
    assert event["detail"].endswith(f"to AE STORESCP: {len(SHAPES)} of {len(SHAPES)} sent")


@needs_storescp
@PYNETDICOM_LEAKS_FAILED_SOCKETS
@pytest.mark.parametrize("served", [FAST_RETRY], indirect=True)
async def test_a_peer_briefly_down_is_retried(served: ArchiveUnderTest, tmp_path: Path) -> None:
    samples = await stored_study(served)
    (tmp_path / "received").mkdir()
    with storescp(tmp_path / "received") as peer:
        peer.drop = 1  # the first connection is closed at once, as by a restarting peer
        await add_destination(served, "STORESCP", peer.port, destination=True)
        job = await send(served, samples[0].study, {"destination": "STORESCP"})
        received = len(peer.received())

    assert job["state"] == "done", job
    assert job["counts"] == {"sent": len(SHAPES), "failed": 0}
    assert {o["attempts"] for o in job["outcomes"]} == {2}  # type: ignore[union-attr]
    assert received == len(SHAPES)


@PYNETDICOM_LEAKS_FAILED_SOCKETS
@pytest.mark.parametrize("served", [{**FAST_RETRY, "send_attempts": 2}], indirect=True)
async def test_an_unreachable_peer_fails_after_the_attempts(served: ArchiveUnderTest) -> None:
    samples = await stored_study(served)
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await add_destination(served, "NOBODY", port, destination=True)
    job = await send(served, samples[0].study, {"destination": "NOBODY"})
    assert job["state"] == "done"
    assert job["counts"] == {"sent": 0, "failed": len(SHAPES)}
    for outcome in job["outcomes"]:  # type: ignore[union-attr]
        assert outcome["status"] == "failed" and outcome["attempts"] == 2
        assert "NOBODY" in outcome["reason"]


async def test_what_may_not_be_sent(served: ArchiveUnderTest) -> None:
    samples = await stored_study(served)
    study = samples[0].study
    await add_destination(served, "MODALITY", 104)  # known, but not a destination
    await add_destination(served, "THEIRS", 104, destination=True, hospital=OTHER_HOSPITAL)
    client = served.client
    assert (
        await client.post(f"/api/studies/{study}/send", json={"destination": "MODALITY"})
    ).status_code == 400
    assert (
        await client.post(f"/api/studies/{study}/send", json={"destination": "THEIRS"})
    ).status_code == 404
    assert (
        await client.post(f"/api/studies/{study}/send", json={"destination": "UNKNOWN"})
    ).status_code == 404
    unlisted = {"dicomweb": "http://127.0.0.1:9/dicom-web"}
    assert (await client.post(f"/api/studies/{study}/send", json=unlisted)).status_code == 400
    assert (await client.post(f"/api/studies/{study}/send", json={})).status_code == 400
    async with served.as_user(roles=["uploader"]) as uploader:
        refused = await uploader.post(f"/api/studies/{study}/send", json={"destination": "THEIRS"})
    assert refused.status_code == 403  # sending needs the download right
    async with served.as_user(OTHER_HOSPITAL) as other:
        await add_destination(served, "OTHERDEST", 104, destination=True, hospital=OTHER_HOSPITAL)
        unseen = await other.post(f"/api/studies/{study}/send", json={"destination": "OTHERDEST"})
    assert unseen.status_code == 404  # another hospital's study is not in their reach


@pytest.mark.parametrize("served", [FAST_RETRY], indirect=True)
async def test_a_study_goes_to_another_archive_by_stow_rs(
    served: ArchiveUnderTest, tmp_path: Path, migrated_db: str, signing_key: Path
) -> None:
    samples = await stored_study(served)
    async with peer_archive(migrated_db, tmp_path / "peer", signing_key) as peer:
        served.archive.settings.send_dicomweb_urls = [peer.dicomweb]
        peer_token = token(peer.settings, "LOCAL", ["uploader", "reader"])
        job = await send(served, samples[0].study, {"dicomweb": peer.dicomweb, "token": peer_token})

        async with httpx.AsyncClient(headers={"Authorization": f"Bearer {peer_token}"}) as client:
            found = await client.get(f"{peer.dicomweb}/studies/{samples[0].study}/instances")
            assert found.status_code == 200
            copies = {}
            for sample in samples:
                response = await client.get(
                    f"{peer.dicomweb}/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}",
                    headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
                )
                payload = response.content.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
                copies[sample.instance] = hashlib.sha256(payload).hexdigest()

    assert job["state"] == "done", job
    assert job["counts"] == {"sent": len(SHAPES), "failed": 0}
    assert len(found.json()) == len(SHAPES)
    # Byte for byte the instances the archive holds.
    assert copies == {s.instance: hashlib.sha256(s.data).hexdigest() for s in samples}
    assert "token" not in str(job["parameters"])
