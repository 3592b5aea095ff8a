"""STOW-RS (PS3.18 §10.5): what is stored, what is refused, and that a refusal leaves
nothing behind — on both object stores."""

from __future__ import annotations

import io

import asyncpg
import httpx
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.tag import Tag

from app.dicom.status import FailureReason
from tests.fixtures import ArchiveUnderTest
from tests.samples import SAMPLE_FILES, Sample, make_sample, multipart_body

ALL_SAMPLES = list(SAMPLE_FILES)


async def _post(client: httpx.AsyncClient, parts: list[bytes], path: str = "/dicom-web/studies", **kw):
    body, ctype = multipart_body(parts, **kw)
    return await client.post(path, content=body, headers={"Content-Type": ctype})


async def _counts(served: ArchiveUnderTest) -> dict[str, int]:
    conn = await asyncpg.connect(served.settings.database_url.get_secret_value())
    try:
        counts = {}
        for table in ("patients", "studies", "series", "instances"):
            counts[table] = await conn.fetchval(f"SELECT count(*) FROM {table}")
        return counts
    finally:
        await conn.close()


async def _assert_nothing_stored(served: ArchiveUnderTest) -> None:
    assert await _counts(served) == {"patients": 0, "studies": 0, "series": 0, "instances": 0}
    spool = served.settings.spool_path
    assert not any(spool.iterdir()), list(spool.iterdir())


async def test_store_every_sample_in_one_request(served: ArchiveUnderTest):
    samples = [make_sample(name) for name in ALL_SAMPLES]
    response = await _post(served.client, [s.data for s in samples])
    assert response.status_code == 200, response.text
    body = response.json()
    assert "00081198" not in body
    referenced = body["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [s.instance for s in samples]
    for item, sample in zip(referenced, samples, strict=True):
        assert item["00081150"]["Value"] == [sample.sop_class]
        url = item["00081190"]["Value"][0]
        assert url == (
            f"http://testserver/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}"
        )
    assert (await _counts(served))["instances"] == len(samples)


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/related; type="application/dicom"; boundary={b}',
        "multipart/related; type=application/dicom; boundary={b}",
        'Multipart/Related; boundary="{b}"; type="application/dicom"',
        "multipart/related; boundary={b}",
    ],
)
async def test_quoted_and_unquoted_parameters(served: ArchiveUnderTest, content_type: str):
    sample = make_sample("ct")
    body, ctype = multipart_body([sample.data])
    boundary = ctype.split("boundary=")[1]
    response = await served.client.post(
        "/dicom-web/studies", content=body, headers={"Content-Type": content_type.format(b=boundary)}
    )
    assert response.status_code == 200, response.text


async def test_store_into_a_named_study(served: ArchiveUnderTest):
    sample = make_sample("mr")
    response = await _post(served.client, [sample.data], f"/dicom-web/studies/{sample.study}")
    assert response.status_code == 200
    assert response.json()["00081190"]["Value"] == [f"http://testserver/dicom-web/studies/{sample.study}"]


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_instance_of_another_study_is_refused(served: ArchiveUnderTest):
    ours, other = make_sample("ct"), make_sample("ct")
    response = await _post(served.client, [ours.data, other.data], f"/dicom-web/studies/{ours.study}")
    assert response.status_code == 202
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081155"]["Value"] == [other.instance]
    assert failed["00081197"]["Value"] == [FailureReason.DATA_SET_MISMATCH]
    alone = await _post(served.client, [other.data], f"/dicom-web/studies/{ours.study}")
    assert alone.status_code == 409


async def test_corrupt_part_fails_alone(served: ArchiveUnderTest):
    good = make_sample("ct")
    truncated_dicom = make_sample("mr").data[:300]
    response = await _post(served.client, [b"this is not DICOM" * 10, good.data, truncated_dicom])
    assert response.status_code == 202, response.text
    body = response.json()
    assert [i["00081155"]["Value"][0] for i in body["00081199"]["Value"]] == [good.instance]
    reasons = [i["00081197"]["Value"][0] for i in body["00081198"]["Value"]]
    assert reasons == [FailureReason.CANNOT_UNDERSTAND, FailureReason.CANNOT_UNDERSTAND]
    assert (await _counts(served))["instances"] == 1
    assert not any(served.settings.spool_path.iterdir())


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_only_garbage_is_400(served: ArchiveUnderTest):
    response = await _post(served.client, [b"\x00" * 200])
    assert response.status_code == 400
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [FailureReason.CANNOT_UNDERSTAND]
    await _assert_nothing_stored(served)


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_missing_uids_are_cannot_understand(served: ArchiveUnderTest):
    sample = make_sample("ct")
    ds = sample.dataset
    del ds.SeriesInstanceUID
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = await _post(served.client, [buffer.getvalue()])
    assert response.status_code == 400
    await _assert_nothing_stored(served)


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_part_of_another_media_type_fails(served: ArchiveUnderTest):
    response = await _post(served.client, [make_sample("ct").data], part_type="application/json")
    assert response.status_code == 400
    await _assert_nothing_stored(served)


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "application/dicom+json",
        'multipart/related; type="application/dicom+json"; boundary=x',
        'multipart/related; type="application/dicom+xml"; boundary=x',
        "multipart/form-data; boundary=x",
    ],
)
async def test_wrong_content_type_is_415(served: ArchiveUnderTest, content_type: str):
    response = await served.client.post(
        "/dicom-web/studies", content=b"{}", headers={"Content-Type": content_type}
    )
    assert response.status_code == 415
    assert response.json()["message"]
    await _assert_nothing_stored(served)


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_missing_content_type_is_415(served: ArchiveUnderTest):
    response = await served.client.post("/dicom-web/studies", content=b"x")
    assert response.status_code == 415


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_missing_boundary_is_400(served: ArchiveUnderTest):
    response = await served.client.post(
        "/dicom-web/studies",
        content=b"x",
        headers={"Content-Type": 'multipart/related; type="application/dicom"'},
    )
    assert response.status_code == 400
    assert "boundary" in response.json()["message"]


async def test_truncated_multipart_stores_nothing(served: ArchiveUnderTest):
    body, ctype = multipart_body([make_sample("ct").data, make_sample("mr").data])
    response = await served.client.post(
        "/dicom-web/studies", content=body[: len(body) - 2000], headers={"Content-Type": ctype}
    )
    assert response.status_code == 400
    await _assert_nothing_stored(served)
    assert (await served.client.get("/healthz")).status_code == 200


@pytest.mark.parametrize("served", [{"max_part_size": 20_000}], indirect=True)
async def test_oversized_part_is_413_and_stores_nothing(served: ArchiveUnderTest):
    small, large = make_sample("mr"), make_sample("ct")  # 10 kB and 39 kB
    response = await _post(served.client, [small.data, large.data])
    assert response.status_code == 413
    await _assert_nothing_stored(served)
    assert (await _post(served.client, [small.data])).status_code == 200


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
@pytest.mark.parametrize("served", [{"max_request_size": 50_000}], indirect=True)
async def test_oversized_body_is_413(served: ArchiveUnderTest):
    response = await _post(served.client, [make_sample("ct").data, make_sample("ct").data])
    assert response.status_code == 413
    await _assert_nothing_stored(served)


async def test_storing_the_same_instance_again_is_idempotent(served: ArchiveUnderTest):
    sample = make_sample("ct")
    first = await _post(served.client, [sample.data])
    again = await _post(served.client, [sample.data])
    assert first.status_code == again.status_code == 200
    assert again.json()["00081199"]["Value"][0]["00081155"]["Value"] == [sample.instance]
    assert (await _counts(served))["instances"] == 1
    studies = (await served.client.get("/dicom-web/studies")).json()
    assert studies[0]["00201208"]["Value"] == [1]


async def test_a_different_instance_under_a_stored_uid_is_refused(served: ArchiveUnderTest):
    sample = make_sample("ct")
    assert (await _post(served.client, [sample.data])).status_code == 200
    ds = sample.dataset
    ds.PatientName = "Someone^Else"
    import io

    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    response = await _post(served.client, [buffer.getvalue()])
    assert response.status_code == 409
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [FailureReason.DUPLICATE_SOP_INSTANCE]
    retrieved = await served.client.get(
        f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert sample.data in retrieved.content  # the first one is kept, unchanged


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_series_under_another_study_is_refused(served: ArchiveUnderTest):
    first = make_sample("ct")
    clash = make_sample("ct", series=first.series)  # same series UID, new study
    response = await _post(served.client, [first.data, clash.data])
    assert response.status_code == 202
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [FailureReason.DATA_SET_MISMATCH]
    # Nothing of the refused instance's study remains in the index.
    assert (await _counts(served))["studies"] == 1


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_study_of_another_patient_is_refused(served: ArchiveUnderTest):
    first = make_sample("ct", PatientID="A")
    clash = make_sample("ct", study=first.study, PatientID="B")
    response = await _post(served.client, [first.data, clash.data])
    assert response.status_code == 202
    assert response.json()["00081198"]["Value"][0]["00081197"]["Value"] == [FailureReason.DATA_SET_MISMATCH]
    assert (await _counts(served))["patients"] == 1


async def test_a_single_application_dicom_body(served: ArchiveUnderTest):
    sample = make_sample("jpeg")
    response = await served.client.post(
        f"/dicom-web/studies/{sample.study}",
        content=sample.data,
        headers={"Content-Type": "application/dicom"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["00081199"]["Value"][0]["00081155"]["Value"] == [sample.instance]
    retrieved = await served.client.get(
        f"/dicom-web/studies/{sample.study}/series/{sample.series}/instances/{sample.instance}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert sample.data in retrieved.content
    garbage = await served.client.post(
        "/dicom-web/studies", content=b"nonsense" * 100, headers={"Content-Type": "application/dicom"}
    )
    assert garbage.status_code == 400


def _corrupt_sample() -> Sample:
    """A CT with what modalities send and PostgreSQL cannot hold: NUL characters inside
    text values, and private DS values that are not numbers."""
    sample = make_sample("ct", StudyDescription="Chest\x00CT", PatientID="ID\x00X")
    ds = sample.dataset
    for element, raw in ((0x00091001, b"1.5e9999x "), (0x00091002, b"abc\\1.0 ")):
        ds._dict[Tag(element)] = RawDataElement(Tag(element), "DS", len(raw), raw, 0, False, True)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return Sample(buffer.getvalue(), sample.study, sample.series, sample.instance, sample.sop_class)


async def test_corrupt_values_do_not_fail_the_request(served: ArchiveUnderTest):
    corrupt, good = _corrupt_sample(), make_sample("mr")
    response = await _post(served.client, [corrupt.data, good.data])
    assert response.status_code == 200, response.text
    assert len(response.json()["00081199"]["Value"]) == 2
    # Stored byte for byte; the index and the metadata hold the values without NUL, and
    # the DS values that are not numbers only by their VR.
    url = f"/dicom-web/studies/{corrupt.study}/series/{corrupt.series}/instances/{corrupt.instance}"
    retrieved = await served.client.get(url, headers={"Accept": "multipart/related; type=application/dicom"})
    assert retrieved.status_code == 200
    assert corrupt.data in retrieved.content
    metadata = (await served.client.get(url + "/metadata")).json()[0]
    assert metadata["00081030"]["Value"] == ["ChestCT"]
    assert metadata["00091001"] == {"vr": "DS"}
    found = await served.client.get("/dicom-web/studies", params={"PatientID": "IDX"})
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [corrupt.study]


async def test_the_same_instance_twice_in_one_request_is_stored_once(served: ArchiveUnderTest):
    sample = make_sample("ct")
    response = await _post(served.client, [sample.data, sample.data])
    assert response.status_code == 200, response.text
    referenced = response.json()["00081199"]["Value"]
    assert [item["00081155"]["Value"] for item in referenced] == [[sample.instance]] * 2
    assert (await _counts(served))["instances"] == 1
    (study,) = (await served.client.get("/dicom-web/studies")).json()
    assert study["00201208"]["Value"] == [1]


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_a_refused_instance_leaves_no_trace_beside_stored_ones(served: ArchiveUnderTest):
    """Instances are written in batches; one refused in a batch (another instance is stored
    under its UID) leaves neither its new patient nor its new study behind, while the
    batch's others are stored."""
    stored = make_sample("ct", PatientID="KEPT")
    assert (await _post(served.client, [stored.data])).status_code == 200
    clash = stored.dataset
    other = make_sample("ct")
    clash.PatientID, clash.StudyInstanceUID, clash.SeriesInstanceUID = "NEVER", other.study, other.series
    buffer = io.BytesIO()
    clash.save_as(buffer, enforce_file_format=True)
    fresh = make_sample("ct", PatientID="FRESH")
    response = await _post(served.client, [buffer.getvalue(), fresh.data])
    assert response.status_code == 202
    (failed,) = response.json()["00081198"]["Value"]
    assert failed["00081197"]["Value"] == [FailureReason.DUPLICATE_SOP_INSTANCE]
    assert await _counts(served) == {"patients": 2, "studies": 2, "series": 2, "instances": 2}
    ids = sorted(s["00100020"]["Value"][0] for s in (await served.client.get("/dicom-web/studies")).json())
    assert ids == ["FRESH", "KEPT"]


@pytest.mark.parametrize("backend", ["filesystem"], indirect=True)
async def test_a_request_larger_than_a_batch(served: ArchiveUnderTest):
    """More instances than one batch holds, over three series of one study: every one
    stored, counted once, in the order sent."""
    first = make_sample("ct")
    series = [first.series, make_sample("ct").series, make_sample("ct").series]
    samples = [first] + [make_sample("ct", study=first.study, series=series[i % 3]) for i in range(1, 150)]
    response = await _post(served.client, [s.data for s in samples])
    assert response.status_code == 200, response.text
    referenced = response.json()["00081199"]["Value"]
    assert [item["00081155"]["Value"][0] for item in referenced] == [s.instance for s in samples]
    (study,) = (await served.client.get("/dicom-web/studies")).json()
    assert study["00201208"]["Value"] == [150] and study["00201206"]["Value"] == [3]
    listed = (await served.client.get(f"/dicom-web/studies/{first.study}/series")).json()
    assert sorted(s["00201209"]["Value"][0] for s in listed) == [50, 50, 50]
