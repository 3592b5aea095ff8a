"""Import Reconciliation (IHE IRWF.b): a foreign CD coerced to the local patient, the
foreign values kept in the stored copy (PS3.3 C.7.1.1, C.12.1)."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import pydicom

from app.dicom.reconciliation import Coercion, reconcile
from app.services.imports import Status, import_paths
from tests.fixtures import ArchiveUnderTest
from tests.imports.media import SHAPES, write_fileset, zip_of
from tests.imports.test_import import trail_of

LOCAL = Coercion(
    issuer="FOREIGN-HOSP", patient_id="LOCAL-42", patient_name="Local^Patient", birth_date="19700101"
)


async def retrieve(served: ArchiveUnderTest, study: str, series: str, instance: str) -> pydicom.Dataset:
    response = await served.client.get(
        f"/dicom-web/studies/{study}/series/{series}/instances/{instance}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'},
    )
    assert response.status_code == 200
    payload = response.content.split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n--", 1)[0]
    return pydicom.dcmread(io.BytesIO(payload))


async def test_a_foreign_cd_becomes_the_local_patients_and_keeps_its_originals(
    served: ArchiveUnderTest, tmp_path: Path
) -> None:
    medium = write_fileset(tmp_path / "cd", PatientName="Foreign^Name", PatientBirthDate="19691231")
    source = zip_of(medium, tmp_path / "cd.zip")
    trail = await trail_of(served)

    report = await import_paths(served.archive, trail, [source], LOCAL)

    assert report.count(Status.STORED) == len(SHAPES)
    for sample in medium.samples:
        stored = await retrieve(served, sample.study, sample.series, sample.instance)
        original = sample.dataset
        assert stored.SOPInstanceUID == original.SOPInstanceUID
        assert (stored.PatientID, stored.IssuerOfPatientID) == ("LOCAL-42", "FOREIGN-HOSP")
        assert (str(stored.PatientName), stored.PatientBirthDate) == ("Local^Patient", "19700101")
        # The foreign ID is appended; IDs the instance listed already stay (CT_small has two).
        *kept, other = stored.OtherPatientIDsSequence
        assert [i.PatientID for i in kept] == [
            i.PatientID for i in original.get("OtherPatientIDsSequence", [])
        ]
        assert (other.PatientID, other.IssuerOfPatientID, other.TypeOfPatientID) == (
            "FOREIGN-1",
            "FOREIGN-HOSP",
            "TEXT",
        )
        (change,) = stored.OriginalAttributesSequence
        assert change.ReasonForTheAttributeModification == "COERCE"
        assert change.ModifyingSystem == "FILMLESS"
        (previous,) = change.ModifiedAttributesSequence
        assert previous.PatientID == "FOREIGN-1"
        assert str(previous.PatientName) == "Foreign^Name"
        assert previous.PatientBirthDate == "19691231"
        assert previous.IssuerOfPatientID == ""  # it had none
        assert len(previous.OtherPatientIDsSequence) == len(kept)
        # Everything else as it was: the pixel data, byte for byte, and the other UIDs.
        assert stored.PixelData == original.PixelData
        assert (stored.StudyInstanceUID, stored.SeriesInstanceUID) == (sample.study, sample.series)
        assert stored.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID

    # A query by the local patient finds the study.
    found = await served.client.get("/dicom-web/studies", params={"PatientID": "LOCAL-42"})
    assert [s["0020000D"]["Value"][0] for s in found.json()] == [medium.samples[0].study]

    # Every coercion is on the trail, naming what changed and never a value.
    async with served.archive.pool.acquire() as conn:
        events = await conn.fetch(
            "SELECT instance_uids, patient_ids, detail FROM audit_events WHERE transaction = 'COERCE' "
            "AND instance_uids && $1::text[]",
            [s.instance for s in medium.samples],
        )
    assert len(events) == len(SHAPES)
    for event in events:
        assert event["detail"] == (
            "coerced IssuerOfPatientID, PatientID, OtherPatientIDsSequence, PatientName, PatientBirthDate"
        )
        assert set(event["patient_ids"]) == {"LOCAL-42", "FOREIGN-1"}

    again = await import_paths(served.archive, trail, [source], LOCAL)
    assert again.count(Status.PRESENT) == len(SHAPES)


def test_an_instance_already_local_is_left_alone() -> None:
    dataset = pydicom.Dataset()
    dataset.PatientID, dataset.IssuerOfPatientID = "LOCAL-42", "HOSP"
    changed = reconcile(dataset, Coercion(issuer="OTHER", patient_id="LOCAL-42"), dt.datetime.now(dt.UTC))
    assert changed == []
    assert "OriginalAttributesSequence" not in dataset
    assert "OtherPatientIDsSequence" not in dataset
    assert dataset.IssuerOfPatientID == "HOSP"  # an issuer it has is never replaced
