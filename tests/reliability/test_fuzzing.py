"""Bad input through a live server: the seeded fuzzer's mutations of DICOM files
(:mod:`tests.mutations`: byte flips, truncations, wrong lengths, spliced garbage, deep
sequences, huge values) sent to ``filmless serve`` as DIMSE C-STORE requests, by
pynetdicom's SCU to the DICOM listener, and as STOW-RS requests to uvicorn over its socket.

Zero crashes: every C-STORE is answered with a status PS3.4 Table B.2-1 documents, every
STOW-RS request with a success or a documented 4xx; the server stays up; nothing is left in
its spool or temporary directory; the index and the store agree. ``FILMLESS_FUZZ_SEED`` and
``FILMLESS_FUZZ_COUNT`` replay or widen a run; the seed and the counts are printed.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import httpx
import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from app.dicom.status import FailureReason
from tests.fixtures import _free_port
from tests.mutations import dataset_offset, mutate, stow_request
from tests.reliability.conftest import REQUEST_TIMEOUT, Node, node_env, node_token, wait_for
from tests.reliability.helpers import index_rows, stored_files
from tests.samples import make_sample, multipart_body, sample_path

SEED = int(os.environ.get("FILMLESS_FUZZ_SEED", "20261202"))
#: Requests per protocol: each mutation kind several times over, in well under a minute.
COUNT = int(os.environ.get("FILMLESS_FUZZ_COUNT", "120"))
AE_TITLE = "FILMLESS"
CALLING = "FUZZ_SCU"
SAMPLES = ["ct", "mr", "jpeg", "rle"]
#: (0008,1197) Failure Reason values a STOW-RS response may carry (PS3.18 §10.5.3).
REASONS = {int(r) for r in FailureReason}


def documented_c_store_status(status: int) -> bool:
    """What a C-STORE may answer here (PS3.4 Table B.2-1): success, a warning (B000
    coercion, B006 elements discarded, B007 data set does not match the SOP class), or the
    errors "Data Set does not match SOP Class" (A9xx) and "Cannot understand" (Cxxx).

    Not "Refused: Out of Resources" (A7xx): nothing runs short here, so one would be a
    fault passed off as a refusal, as a 5xx would be over HTTP. Nor 0xC211, which is
    pynetdicom's answer when the archive's handler raised: a crash, whatever its range.

    >>> [documented_c_store_status(s) for s in (0x0000, 0xA900, 0xC000, 0xA700, 0xC211)]
    [True, True, True, False, False]
    """
    if status == 0xC211:
        return False
    return status in (0x0000, 0xB000, 0xB006, 0xB007) or status >> 8 == 0xA9 or status >> 12 == 0xC


@pytest.fixture
def fuzzed(make_node, clean_db, tmp_path, signing_key) -> tuple[Node, int, Path]:
    """A server with its DICOM listener, a known calling AE that may store, and its own
    temporary directory (where pynetdicom receives each data set), to check it is left empty."""
    dicom_port = _free_port()
    temporary = tmp_path / "server-tmp"
    temporary.mkdir()
    node = make_node(
        node_env(
            clean_db, tmp_path / "data", signing_key, FILMLESS_DICOM_PORT=str(dicom_port),
            FILMLESS_DICOM_AE_TITLE=AE_TITLE, FILMLESS_DICOM_NETWORK_TIMEOUT="10", TMPDIR=str(temporary),
        )
    )  # fmt: skip
    node.start()
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        body = {"ae_title": CALLING, "hospital": "LOCAL", "host": "127.0.0.1", "port": 104, "may_store": True}
        assert client.post("/api/aes", json=body).status_code == 201
    return node, dicom_port, temporary


def _scu() -> AE:
    ae = AE(CALLING)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = REQUEST_TIMEOUT
    ae.add_requested_context(Verification)
    seen = set()
    for name in SAMPLES:
        ds = dcmread(sample_path(name), stop_before_pixels=True)
        key = (str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
        if key not in seen:
            seen.add(key)
            ae.add_requested_context(*key)
    return ae


def test_c_store_fuzz_is_answered_with_documented_statuses(fuzzed, clean_db, tmp_path, monkeypatch):
    node, dicom_port, temporary = fuzzed
    # The SCU sends each file's data set as its bytes are, mutations included (by default
    # pynetdicom would parse it and encode it again).
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)
    rng = random.Random(f"{SEED}-c-store")  # noqa: S311 (reproducible, not secret)
    ae = _scu()
    statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    associations = 0
    assoc = None
    sent = tmp_path / "sent.dcm"
    try:
        for n in range(COUNT):
            name = rng.choice(SAMPLES)
            sample = make_sample(name)
            kind, data = "none", sample.data
            if rng.random() < 0.8:
                # The data set only: the File Meta is not sent in a C-STORE (PS3.7 §9.3.1.1).
                kind, data = mutate(sample.data, rng, start=dataset_offset(sample.data))
            sent.write_bytes(data)
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", dicom_port, ae_title=AE_TITLE)
                associations += 1
                assert assoc.is_established, f"seed {SEED} #{n}: the association was not accepted"
            answer = assoc.send_c_store(sent)
            where = f"seed {SEED} #{n} ({name}, {kind})"
            assert "Status" in answer, f"{where}: no C-STORE response (association aborted?)"
            status = int(answer.Status)
            assert documented_c_store_status(status), f"{where}: status 0x{status:04X} {answer}"
            if status >> 12 in (0xA, 0xC):
                assert answer.get("ErrorComment"), f"{where}: a failure without an Error Comment"
            statuses[f"0x{status:04X}"] += 1
            kinds[kind] += 1
    finally:
        if assoc is not None and assoc.is_established:
            assoc.release()
    print(
        f"\nC-STORE fuzz: seed {SEED}, {COUNT} instances over {associations} association(s); "
        f"mutations {dict(sorted(kinds.items()))}; statuses {dict(sorted(statuses.items()))}"
    )
    # Not vacuous: the run reached both successes and refusals.
    assert statuses["0x0000"] and sum(statuses.values()) > statuses["0x0000"], statuses
    _server_is_whole(node, clean_db, temporary, ae, dicom_port)


def test_stow_fuzz_over_a_socket_gets_no_5xx(fuzzed, clean_db):
    node, dicom_port, temporary = fuzzed
    rng = random.Random(f"{SEED}-stow-live")  # noqa: S311 (reproducible, not secret)
    headers = {"Authorization": f"Bearer {node_token(node)}"}
    stored = make_sample("ct")
    statuses: Counter[int] = Counter()
    reasons: Counter[str] = Counter()
    with httpx.Client(base_url=node.url, headers=headers, timeout=REQUEST_TIMEOUT) as client:
        body, ctype = multipart_body([stored.data])
        assert (
            client.post("/dicom-web/studies", content=body, headers={"Content-Type": ctype}).status_code
            == 200
        )
        for n in range(COUNT):
            path, body, ctype = stow_request(rng, [stored.study])
            where = f"seed {SEED} #{n}: POST {path}"
            try:
                response = client.post(path, content=body, headers={"Content-Type": ctype})
            except httpx.HTTPError as exc:  # a response that broke off
                pytest.fail(f"{where}: {exc!r}")
            statuses[response.status_code] += 1
            assert response.status_code < 500, f"{where} -> {response.status_code} {response.text[:300]}"
            if response.headers.get("content-type", "").startswith("application/dicom+json"):
                failed = response.json().get("00081198", {}).get("Value", [])
                for item in failed:
                    reason = item.get("00081197", {}).get("Value", [None])[0]
                    assert reason in REASONS, f"{where}: undocumented failure reason {reason}"
                    reasons[f"0x{reason:04X}"] += 1
            elif response.status_code >= 400:
                assert response.json().get("message"), f"{where}: a refusal without a reason"
    print(
        f"\nlive STOW-RS fuzz: seed {SEED}, {COUNT} requests; statuses {dict(sorted(statuses.items()))}; "
        f"failure reasons {dict(sorted(reasons.items()))}"
    )
    assert any(400 <= s < 500 for s in statuses) and statuses[200], statuses
    _server_is_whole(node, clean_db, temporary, _scu(), dicom_port)


def _server_is_whole(node: Node, clean_db: str, temporary: Path, ae: AE, dicom_port: int) -> None:
    """Up and answering both protocols, with nothing left behind and the index and the
    store agreeing; no traceback in its log."""
    assert node.process is not None and node.process.poll() is None, "the server died"
    with httpx.Client(base_url=node.url, timeout=REQUEST_TIMEOUT) as client:
        assert client.get("/readyz").status_code == 200
    assoc = ae.associate("127.0.0.1", dicom_port, ae_title=AE_TITLE)
    assert assoc.is_established
    assert assoc.send_c_echo().Status == 0
    assoc.release()
    root, spool = node.data_dir / "objects", node.data_dir / "spool"

    def whole() -> bool:
        rows, pending = index_rows(clean_db)
        left = [p for p in spool.rglob("*") if p.is_file()] + [p for p in temporary.rglob("*") if p.is_file()]
        return pending == 0 and not left and set(rows) == stored_files(root)

    wait_for(whole, 10, "no spool or temporary file left, and the index and the store agreeing")
    log = node.log.read_text(errors="replace")
    assert "Traceback" not in log and "Exception in" not in log, log[-3000:]
