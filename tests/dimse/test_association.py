"""Associations: C-ECHO, unknown AEs, the association limit, AE management."""

from __future__ import annotations

import os
import sys

import httpx
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from tests.dimse.conftest import AE_TITLE, MAX_ASSOCIATIONS, MODALITY, DicomServer, audit_rows, run


def test_echo_from_a_known_ae(dicom_server: DicomServer):
    done = run("echoscu", "-aet", MODALITY, "-aec", AE_TITLE, dicom_server.host, str(dicom_server.port))
    assert done.returncode == 0, done.stderr


async def test_unknown_calling_ae_is_rejected_and_audited(dicom_server: DicomServer, emptied_db: str):
    done = run("echoscu", "-aet", "STRANGER", "-aec", AE_TITLE, dicom_server.host, str(dicom_server.port))
    assert done.returncode != 0
    assert "Calling AE Title Not Recognized" in done.stderr, done.stderr
    # The refusal is in the audit trail (of no hospital: the caller is nobody's).
    events = await audit_rows(emptied_db, "ae:STRANGER")
    assert [(e["transaction"], e["outcome"], e["detail"]) for e in events] == [
        ("DIMSE-ASSOCIATION", 403, "calling AE title not recognised")
    ]
    # The listener is still there for the next association.
    assert (
        run(
            "echoscu", "-aet", MODALITY, "-aec", AE_TITLE, dicom_server.host, str(dicom_server.port)
        ).returncode
        == 0
    )


def test_associations_beyond_the_limit_are_rejected(dicom_server: DicomServer):
    ae = AE(MODALITY)
    ae.add_requested_context(Verification)
    held = [
        ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE) for _ in range(MAX_ASSOCIATIONS)
    ]
    try:
        assert all(a.is_established for a in held)
        extra = ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE)
        assert extra.is_rejected
        rj = extra.acceptor.primitive
        # PS3.8 §9.3.4: rejected-transient, by the service-provider (presentation), local limit exceeded.
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
    finally:
        for a in held:
            a.release()
    again = ae.associate(dicom_server.host, dicom_server.port, ae_title=AE_TITLE)
    assert again.is_established
    assert again.send_c_echo().Status == 0
    again.release()


def test_ae_cli_add_list_remove(dicom_server: DicomServer, emptied_db: str):
    env = {
        **dicom_server.env(),
        "FILMLESS_DATABASE_URL": emptied_db,
        "FILMLESS_DATA_DIR": str(dicom_server.data_dir),
    }

    def cli(*args: str) -> tuple[int, str]:
        import subprocess

        done = subprocess.run([sys.executable, "-m", "app.cli", "ae", *args], capture_output=True, text=True,
                              env=env, check=False)  # fmt: skip
        return done.returncode, done.stdout + done.stderr

    title = "US_" + os.urandom(3).hex().upper()
    assert cli("add", title, "--host", "127.0.0.1", "--port", "104", "--hospital", "LOCAL") == (
        0,
        f"added {title} (LOCAL)\n",
    )
    assert cli("add", title, "--host", "127.0.0.1", "--port", "104", "--hospital", "LOCAL")[0] == 1
    code, listing = cli("list")
    assert code == 0 and f"{title}\t127.0.0.1:104\tLOCAL\techo" in listing
    # Known now: it may echo, and only that.
    assert (
        run("echoscu", "-aet", title, "-aec", AE_TITLE, dicom_server.host, str(dicom_server.port)).returncode
        == 0
    )
    assert cli("remove", title)[0] == 0
    assert cli("remove", title)[0] == 1
    done = run("echoscu", "-aet", title, "-aec", AE_TITLE, dicom_server.host, str(dicom_server.port))
    assert done.returncode != 0 and "Calling AE Title Not Recognized" in done.stderr


def test_aes_api_needs_the_admin_right(dicom_server: DicomServer):
    listed = httpx.get(dicom_server.url + "/api/aes", headers=dicom_server.headers)
    assert listed.status_code == 200 and MODALITY in [a["ae_title"] for a in listed.json()]
    assert httpx.get(dicom_server.url + "/api/aes").status_code == 401
