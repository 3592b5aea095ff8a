"""C-FIND, C-MOVE and C-GET against stored instances, with dcmtk and pynetdicom."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
)

from tests.dimse.conftest import (
    AE_TITLE,
    DESTINATION,
    MODALITY,
    OTHER_DESTINATION,
    OTHER_MODALITY,
    DicomServer,
    dataset_bytes,
    run,
    storescp,
)  # fmt: skip
from tests.dimse.test_store import store_with_pynetdicom, write
from tests.samples import Sample, make_sample


@pytest.fixture(scope="module")
def study(dicom_server: DicomServer, tmp_path_factory: pytest.TempPathFactory) -> list[Sample]:
    """A study of two CT instances in one series, stored by hospital LOCAL's modality."""
    study, series = generate_uid(), generate_uid()
    patient = "QR-" + generate_uid()[-8:]
    samples = [
        make_sample(
            "ct", study=study, series=series, InstanceNumber=n, PatientID=patient, PatientName="Query^Rita"
        )
        for n in (1, 2)
    ]
    paths = write(tmp_path_factory.mktemp("qr"), *samples)
    assert [s.Status for s in store_with_pynetdicom(dicom_server, MODALITY, *paths)] == [0, 0]
    return samples


def find(server: DicomServer, calling: str, model: str, identifier: Dataset) -> tuple[list[Dataset], int]:
    ae = AE(calling)
    ae.add_requested_context(model)
    assoc = ae.associate(server.host, server.port, ae_title=AE_TITLE)
    assert assoc.is_established
    matches, final = [], -1
    try:
        for status, found in assoc.send_c_find(identifier, model):
            if status.Status == 0xFF00:
                matches.append(found)
            else:
                final = int(status.Status)
    finally:
        assoc.release()
    return matches, final


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def test_find_at_every_level(dicom_server: DicomServer, study: list[Sample]):
    first = study[0]
    patient_id = first.dataset.PatientID
    patients, status = find(dicom_server, MODALITY, PatientRootQueryRetrieveInformationModelFind,
                            identifier("PATIENT", PatientID=patient_id, PatientName=""))  # fmt: skip
    assert status == 0 and [(p.PatientID, str(p.PatientName)) for p in patients] == [
        (patient_id, "Query^Rita")
    ]
    studies, status = find(dicom_server, MODALITY, StudyRootQueryRetrieveInformationModelFind,
                           identifier("STUDY", PatientName="Query^R*", PatientID=patient_id,
                                      StudyInstanceUID="", ModalitiesInStudy="",
                                      StudyDescription=""))  # fmt: skip
    assert status == 0 and [s.StudyInstanceUID for s in studies] == [first.study]
    assert studies[0].ModalitiesInStudy == "CT" and "StudyDescription" in studies[0]
    # Only the keys asked for come back (PS3.4 C.4.1.1.3.2), plus the level.
    assert "AccessionNumber" not in studies[0] and studies[0].QueryRetrieveLevel == "STUDY"
    series, status = find(
        dicom_server,
        MODALITY,
        StudyRootQueryRetrieveInformationModelFind,
        identifier("SERIES", StudyInstanceUID=first.study, SeriesInstanceUID="", Modality=""),
    )
    assert status == 0 and [(s.SeriesInstanceUID, s.Modality) for s in series] == [(first.series, "CT")]
    images, status = find(dicom_server, MODALITY, StudyRootQueryRetrieveInformationModelFind,
                          identifier("IMAGE", StudyInstanceUID=first.study, SeriesInstanceUID=first.series,
                                     SOPInstanceUID="", InstanceNumber=""))  # fmt: skip
    assert status == 0
    assert sorted((int(i.InstanceNumber), i.SOPInstanceUID) for i in images) == [
        (1, study[0].instance),
        (2, study[1].instance),
    ]


def test_findscu_finds_the_study(dicom_server: DicomServer, study: list[Sample], tmp_path: Path):
    done = run("findscu", "-S", "-aet", MODALITY, "-aec", AE_TITLE, "-X", "-od", str(tmp_path),
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study}",
               "-k", "PatientName", dicom_server.host, str(dicom_server.port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    [response] = [pydicom.dcmread(p) for p in tmp_path.glob("rsp*.dcm")]
    assert response.StudyInstanceUID == study[0].study and str(response.PatientName) == "Query^Rita"


def test_an_invalid_identifier_does_not_match_the_sop_class(dicom_server: DicomServer, study: list[Sample]):
    _, status = find(dicom_server, MODALITY, StudyRootQueryRetrieveInformationModelFind,
                     identifier("PATIENT", PatientID=study[0].dataset.PatientID))  # fmt: skip
    assert status == 0xA900


def test_another_hospitals_modality_sees_nothing(
    dicom_server: DicomServer, study: list[Sample], tmp_path: Path
):
    matches, status = find(dicom_server, OTHER_MODALITY, StudyRootQueryRetrieveInformationModelFind,
                           identifier("STUDY", StudyInstanceUID=study[0].study))  # fmt: skip
    assert (matches, status) == ([], 0)
    # Nor may it move the study, even to its own hospital's destination.
    with storescp(dicom_server.other_destination_port, OTHER_DESTINATION, tmp_path / "other"):
        done = run("movescu", "-v", "-S", "-aet", OTHER_MODALITY, "-aec", AE_TITLE, "-aem", OTHER_DESTINATION,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study}",
                   dicom_server.host, str(dicom_server.port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert not list((tmp_path / "other").iterdir())
    # And no C-MOVE of its own hospital's data to another hospital's destination either.
    done = run("movescu", "-v", "-S", "-aet", MODALITY, "-aec", AE_TITLE, "-aem", OTHER_DESTINATION,
               "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study}",
               dicom_server.host, str(dicom_server.port))  # fmt: skip
    assert "Received Final Move Response (Refused: MoveDestinationUnknown)" in done.stderr, done.stderr


def test_move_to_storescp_sends_the_stored_bytes(
    dicom_server: DicomServer, study: list[Sample], tmp_path: Path
):
    received = tmp_path / "received"
    with storescp(dicom_server.destination_port, DESTINATION, received):
        done = run("movescu", "-v", "-S", "-aet", MODALITY, "-aec", AE_TITLE, "-aem", DESTINATION,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study[0].study}",
                   dicom_server.host, str(dicom_server.port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    # PS3.4 C.4.2.3: a pending response per sub-operation, then success (no failures).
    assert done.stderr.count("(Pending)") == 2 and "Received Final Move Response (Success)" in done.stderr
    got = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in received.iterdir()}
    assert sorted(got) == sorted(s.instance for s in study)
    for sample in study:
        assert dataset_bytes(got[sample.instance]) == dataset_bytes(sample.data)


def test_getscu_gets_a_series(dicom_server: DicomServer, study: list[Sample], tmp_path: Path):
    done = run("getscu", "-v", "-S", "-aet", MODALITY, "-aec", AE_TITLE, "-od", str(tmp_path),
               "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={study[0].study}",
               "-k", f"SeriesInstanceUID={study[0].series}",
               dicom_server.host, str(dicom_server.port))  # fmt: skip
    assert done.returncode == 0, done.stderr
    got = {pydicom.dcmread(p).SOPInstanceUID: p.read_bytes() for p in tmp_path.iterdir()}
    assert sorted(got) == sorted(s.instance for s in study)
    for sample in study:
        assert (
            pydicom.dcmread(__import__("io").BytesIO(got[sample.instance])).PixelData
            == sample.dataset.PixelData
        )


def test_get_of_an_unknown_study_completes_with_nothing(dicom_server: DicomServer):
    ae = AE(MODALITY)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    assoc = ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE)
    assert assoc.is_established
    try:
        unknown = identifier("STUDY", StudyInstanceUID=generate_uid())
        statuses = [
            int(s.Status) for s, _ in assoc.send_c_get(unknown, StudyRootQueryRetrieveInformationModelGet)
        ]
    finally:
        assoc.release()
    assert statuses == [0]
