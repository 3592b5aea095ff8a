"""A real DICOMweb client against a live server: dicomweb-client stores, searches and
retrieves exactly as a viewer or PACS integration would."""

from __future__ import annotations

import io

import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from tests.fixtures import LiveServer
from tests.samples import make_sample


@pytest.mark.parametrize("live_server", ["filesystem", "s3"], indirect=True)
def test_dicomweb_client_round_trip(live_server: LiveServer):
    client = DICOMwebClient(url=live_server.dicomweb, headers=live_server.headers)
    ct = make_sample("ct", PatientID="INTEROP-1", PatientName="Interop^Test", AccessionNumber="IA1")
    ct2 = make_sample(
        "ct", study=ct.study, series=ct.series, PatientID="INTEROP-1", PatientName="Interop^Test"
    )
    jpeg = make_sample("jpeg", PatientID="INTEROP-1", PatientName="Interop^Test")
    datasets = [pydicom.dcmread(io.BytesIO(s.data)) for s in (ct, ct2, jpeg)]

    response = client.store_instances(datasets)
    assert len(response.ReferencedSOPSequence) == 3
    assert "FailedSOPSequence" not in response

    studies = client.search_for_studies(search_filters={"PatientID": "INTEROP-1"})
    assert {s["0020000D"]["Value"][0] for s in studies} == {ct.study, jpeg.study}
    by_name = client.search_for_studies(search_filters={"PatientName": "Interop*"}, fields=["PatientSex"])
    assert len(by_name) == 2 and all("00100040" in s for s in by_name)
    series = client.search_for_series(ct.study)
    assert [s["0020000E"]["Value"][0] for s in series] == [ct.series]
    instances = client.search_for_instances(ct.study, ct.series)
    assert {i["00080018"]["Value"][0] for i in instances} == {ct.instance, ct2.instance}

    metadata = client.retrieve_series_metadata(ct.study, ct.series)
    assert {m["00080018"]["Value"][0] for m in metadata} == {ct.instance, ct2.instance}

    retrieved = client.retrieve_instance(ct.study, ct.series, ct.instance)
    assert retrieved.SOPInstanceUID == ct.instance
    assert retrieved.PixelData == datasets[0].PixelData

    study = client.retrieve_study(ct.study)
    assert {d.SOPInstanceUID for d in study} == {ct.instance, ct2.instance}

    compressed = client.retrieve_instance(
        jpeg.study, jpeg.series, jpeg.instance, media_types=(("application/dicom", "*"),)
    )
    assert compressed.file_meta.TransferSyntaxUID == datasets[2].file_meta.TransferSyntaxUID
    assert compressed.PixelData == datasets[2].PixelData

    bulk = client.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"])
    assert bulk[0] == datasets[0].PixelData


def test_dicomweb_client_pulls_a_shared_study_by_token(live_server: LiveServer):
    import datetime as dt

    import httpx

    staff = DICOMwebClient(url=live_server.dicomweb, headers=live_server.headers)
    shared = make_sample("ct", PatientID="SHARED-1")
    second = make_sample("ct", study=shared.study, series=shared.series, PatientID="SHARED-1")
    private = make_sample("mr", PatientID="PRIVATE-1")
    staff.store_instances([pydicom.dcmread(io.BytesIO(s.data)) for s in (shared, second, private)])
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    created = httpx.post(
        live_server.url + "/api/shares",
        json={"studies": [shared.study], "expires_at": expires, "permissions": ["view", "download"]},
        headers=live_server.headers,
    ).json()

    outside = DICOMwebClient(url=created["dicomweb_root"])  # another hospital's PACS: no account here
    assert [s["0020000D"]["Value"][0] for s in outside.search_for_studies()] == [shared.study]
    retrieved = outside.retrieve_study(shared.study)
    assert {d.SOPInstanceUID for d in retrieved} == {shared.instance, second.instance}
    assert retrieved[0].PixelData == pydicom.dcmread(io.BytesIO(shared.data)).PixelData
    metadata = outside.retrieve_series_metadata(shared.study, shared.series)
    assert metadata[0]["7FE00010"]["BulkDataURI"].startswith(created["dicomweb_root"])
    assert outside.retrieve_bulkdata(metadata[0]["7FE00010"]["BulkDataURI"])[0]

    # The same token as a bearer token on the archive's own root.
    bearer = DICOMwebClient(url=live_server.dicomweb, headers={"Authorization": f"Bearer {created['token']}"})
    assert len(bearer.search_for_studies()) == 1
    with pytest.raises(requests.HTTPError, match="404"):
        outside.retrieve_study(private.study)
