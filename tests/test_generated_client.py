"""A client generated from the checked-in OpenAPI document works against a live archive:
it stores an instance, finds it, reads its metadata, shares its study, searches through the
share's DICOMweb root, reads and revokes the share, imports a ZIP as a job and follows it,
and lists the audit trail — every result parsed into its type."""

from __future__ import annotations

import datetime as dt
import importlib
import io
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from tests.fixtures import LiveServer
from tests.samples import make_sample

ROOT = Path(__file__).resolve().parents[1]
DOCUMENT = ROOT / "openapi" / "openapi.json"
CONFIG = ROOT / "openapi" / "client-config.yaml"
PACKAGE = "filmless_generated_client"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package, generated as an integrator would (offline: the generator only
    reads the document and its configuration)."""
    where = tmp_path_factory.mktemp("client")
    generator = Path(sys.executable).parent / "openapi-python-client"
    done = subprocess.run(
        [str(generator), "generate", "--path", str(DOCUMENT), "--config", str(CONFIG),
         "--meta", "none", "--output-path", str(where / PACKAGE)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    # Every operation became a method; the generator leaves out only what it cannot send:
    # multipart/related STOW-RS bodies (it cannot make up their boundary).
    warned = {line.split()[2] + " " + line.split()[3] for line in done.stdout.splitlines()
              if line.startswith("WARNING parsing")}  # fmt: skip
    assert warned <= {"POST /dicom-web/studies", "POST /dicom-web/studies/{study}"}, done.stdout
    assert "will not be generated" not in done.stdout, done.stdout
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [n for n in sys.modules if n == PACKAGE or n.startswith(PACKAGE + ".")]:
            del sys.modules[name]


def _api(name: str) -> Any:
    return importlib.import_module(f"{PACKAGE}.api.{name}")


def _models() -> Any:
    return importlib.import_module(f"{PACKAGE}.models")


def _value(obj: Any, tag: str) -> Any:
    """The first value of an attribute of a generated ``DicomObject``."""
    return obj[tag].value[0]


def test_generated_client_drives_the_archive(generated: ModuleType, live_server: LiveServer):
    staff = generated.AuthenticatedClient(base_url=live_server.url, token=live_server.token, timeout=30)
    anonymous = generated.Client(base_url=live_server.url, timeout=30)
    with staff as client, anonymous:
        _drive(client, anonymous, live_server)


def _drive(client: Any, anonymous: Any, live_server: LiveServer) -> None:
    types = importlib.import_module(f"{PACKAGE}.types")
    models = _models()
    sample = make_sample("ct", PatientID="GENERATED-1")

    # STOW-RS, one instance as application/dicom.
    stow = _api("stow_rs.store_instances")
    stored = stow.sync_detailed(client=client, body=types.File(payload=sample.data))
    assert stored.status_code == 200, stored.content
    assert isinstance(stored.parsed, models.DicomObject)
    referenced = stored.parsed["00081199"].value  # ReferencedSOPSequence
    assert [r["00081155"]["Value"] for r in referenced] == [[sample.instance]]

    # STOW-RS multipart/related: its boundary cannot pass through a generated method (see
    # the README), so through the generated client's own httpx client, token included.
    other = make_sample("ct", study=sample.study, PatientID="GENERATED-1")
    boundary = "filmless-generated-client"
    multipart = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + other.data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    sent = client.get_httpx_client().post(
        "/dicom-web/studies", content=multipart, headers={"Content-Type": content_type}
    )
    assert sent.status_code == 200, sent.text
    assert models.DicomObject.from_dict(sent.json())["00081199"].value[0]["00081155"]["Value"] == [
        other.instance
    ]

    # QIDO-RS: the study, found by PatientID, as typed DICOM JSON objects.
    found = _api("qido_rs.search_studies").sync(client=client, patient_id="GENERATED-1")
    assert isinstance(found, list) and len(found) == 1
    assert isinstance(found[0], models.DicomObject)
    assert isinstance(found[0]["0020000D"], models.DicomAttribute)
    assert found[0]["0020000D"].vr == "UI"
    assert _value(found[0], "0020000D") == sample.study

    # WADO-RS metadata of the instance.
    metadata = _api("wado_rs.instance_metadata").sync(
        client=client, study=sample.study, series=sample.series, instance=sample.instance
    )
    assert isinstance(metadata, list) and len(metadata) == 1
    assert _value(metadata[0], "00080018") == sample.instance
    assert _value(metadata[0], "00100020") == "GENERATED-1"
    assert metadata[0]["7FE00010"].bulk_data_uri  # pixel data by reference (PS3.18 §F.2.6)

    # WADO-RS retrieve: the instance's bytes, as stored.
    retrieved = _api("wado_rs.retrieve_instance").sync_detailed(
        client=client, study=sample.study, series=sample.series, instance=sample.instance
    )
    assert retrieved.status_code == 200
    assert sample.data[-4096:] in retrieved.content

    # A share of the study, then a search through the share's own DICOMweb root.
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=1)
    share = _api("shares.create_share").sync(
        client=client, body=models.ShareIn(studies=[sample.study], expires_at=expires)
    )
    assert isinstance(share, models.ShareCreated), share
    assert share.studies == [sample.study]
    shared = _api("share_root.search_studies_shared").sync(client=anonymous, secret=share.token)
    assert isinstance(shared, list) and [_value(o, "0020000D") for o in shared] == [sample.study]

    # The share's detail, its access history typed, then its revocation.
    detail = _api("shares.get_share").sync(client=client, share_id=share.id)
    assert isinstance(detail, models.ShareDetail), detail
    assert detail.id == share.id and detail.state == "active"
    assert detail.history and all(isinstance(e, models.ShareAccess) for e in detail.history)
    assert any(e.transaction == "QIDO-RS" and e.outcome == 200 for e in detail.history)
    revoked = _api("shares.revoke_share").sync(client=client, share_id=share.id)
    assert isinstance(revoked, models.Revoked) and revoked.revoked == [share.id]

    # An import of a ZIP file as a job, followed to its end as a typed JobOut.
    second = make_sample("ct", PatientID="GENERATED-2")
    packed = io.BytesIO()
    with zipfile.ZipFile(packed, "w") as archive:
        archive.writestr("IMAGES/IM0001", second.data)
    queued = _api("import_.create_import").sync(client=client, body=types.File(payload=packed.getvalue()))
    assert isinstance(queued, models.JobQueued), queued
    job = _finished(client, queued.id)
    assert job.kind == models.JobOutKind.IMPORT and job.state == models.JobOutState.DONE, job
    assert isinstance(job.progress, models.JobProgress) and job.progress.items_done == 1
    assert isinstance(job.created_at, dt.datetime) and isinstance(job.finished_at, dt.datetime)
    [outcome] = job.outcomes
    assert isinstance(outcome, models.JobOutcome)
    assert (outcome.status, outcome.sop_instance_uid) == ("stored", second.instance)

    # The audit trail: typed entries, newest first, the accesses above among them.
    entries = _api("administration.query_audit").sync(client=client, study=sample.study)
    assert isinstance(entries, list) and entries
    assert all(isinstance(e, models.AuditEntry) for e in entries)
    transactions = {e.transaction for e in entries}
    assert {"STOW-RS", "QIDO-RS"} <= transactions, transactions
    assert entries[0].at >= entries[-1].at

    # A refusal is an ErrorBody, as the document says.
    missing = _api("wado_rs.study_metadata").sync(client=client, study="1.2.3.999")
    assert isinstance(missing, models.ErrorBody)
    assert missing.status == 404


def _finished(client: Any, job_id: str, within: float = 30.0) -> Any:
    """The job once it has ended, polled through the generated client."""
    read_job, models = _api("jobs.read_job"), _models()
    deadline = time.monotonic() + within
    while True:
        job = read_job.sync(client=client, job_id=job_id)
        assert isinstance(job, models.JobOut), job
        if job.state in (models.JobOutState.DONE, models.JobOutState.FAILED) or time.monotonic() > deadline:
            return job
        time.sleep(0.1)
